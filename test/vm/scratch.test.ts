import { mkdtemp, writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'vitest';
import { prepareKernel } from './kernelCache.js';
import { buildInitramfs, runVm } from './vm.js';

test('scratch', async () => {
  const k = await prepareKernel();
  const dir = await mkdtemp('/tmp/cipha-qemu-scratch-');
  await buildInitramfs(k, '/bin/busybox', join(dir, 'initrd.cpio'));
  await writeFile(join(dir, 'run.sh'), await readFile('/tmp/q-scratch/run.sh', 'utf8'));
  const r = await runVm({ kernel: k, initrd: join(dir, 'initrd.cpio'), resultsDir: dir, timeoutMs: 60_000 });
  console.log(r.exitCode, r.signal, r.timedOut, r.wallMs, r.console.slice(-1500));
  console.log(await readFile(join(dir, 'guest.log'), 'utf8').catch(() => 'nolog'));
}, 300_000);
