import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeCpio, type CpioEntry } from './cpio.js';
import type { PreparedKernel } from './kernelCache.js';

// One throw-away VM: busybox initramfs, host root shared read-only, a writable results share, no network.
// qemu is always killed at the deadline; the caller reads what the guest left in the results directory.

const HERE = dirname(fileURLToPath(import.meta.url));

export async function buildInitramfs(kernel: PreparedKernel, busybox: string, out: string): Promise<number> {
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'proc', 'sys', 'host', 'modules'].map((path): CpioEntry => ({ kind: 'dir', path })),
    { kind: 'file', path: 'bin/busybox', data: await readFile(busybox), mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'init', data: await readFile(join(HERE, 'init.sh')), mode: 0o755 },
    { kind: 'file', path: 'modules/order', data: Buffer.from(kernel.modules.map((m) => m.name).join('\n') + '\n') },
  ];
  for (const m of kernel.modules) {
    entries.push({ kind: 'file', path: `modules/${m.name}.ko`, data: await readFile(m.path) });
  }
  const cpio = encodeCpio(entries);
  await writeFile(out, cpio);
  return cpio.length;
}

export interface VmOptions {
  kernel: PreparedKernel;
  initrd: string;
  /** Writable share mounted at /run/results in the guest. */
  resultsDir: string;
  timeoutMs: number;
  qemu?: string;
  /** 'tcg' unless told otherwise: nested KVM on the CI machines cannot run a stock kernel (DESIGN §11). */
  accel?: 'tcg' | 'kvm';
  /** qemu -cpu; default CLUSTERIP_HA_QEMU_CPU or 'max' under TCG. */
  cpu?: string;
  /**
   * The checkout, shared again read-only and mounted at the same path in the guest: the guest puts a tmpfs on
   * /tmp, which would hide a checkout that lives there (CI clones may).
   */
  repoDir?: string;
}

export interface VmRun {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** qemu start to exit. */
  wallMs: number;
  console: string;
  /** When each `cipha-vm: ...` line of the guest's init reached the host, in ms after qemu started. */
  marks: { text: string; atMs: number }[];
  argv: string[];
}

export function qemuArgs(o: VmOptions): string[] {
  const accel = o.accel ?? (process.env.CLUSTERIP_HA_QEMU_ACCEL === 'kvm' ? 'kvm' : 'tcg');
  return [
    '-machine',
    `pc,accel=${accel}`,
    '-cpu',
    o.cpu ?? process.env.CLUSTERIP_HA_QEMU_CPU ?? (accel === 'kvm' ? 'host' : 'max'),
    '-smp',
    '2',
    '-m',
    '1024',
    '-kernel',
    o.kernel.vmlinux,
    '-initrd',
    o.initrd,
    '-append',
    `console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init cipha.timeout=${Math.ceil(o.timeoutMs / 1000) + 5}` +
      (o.repoDir ? ` cipha.repo=${o.repoDir}` : ''),
    '-nographic',
    '-no-reboot',
    '-nic',
    'none',
    '-virtfs',
    'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-virtfs',
    `local,path=${o.resultsDir},mount_tag=results,security_model=none,multidevs=remap`,
    ...(o.repoDir
      ? ['-virtfs', `local,path=${o.repoDir},mount_tag=repo,security_model=none,readonly=on,multidevs=remap`]
      : []),
  ];
}

export function runVm(o: VmOptions): Promise<VmRun> {
  const argv = qemuArgs(o);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(o.qemu ?? 'qemu-system-x86_64', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let consoleText = '';
    const marks: VmRun['marks'] = [];
    let scanned = 0;
    const keep = (b: Buffer) => {
      // Bounded: a looping guest must not fill the test's memory.
      if (consoleText.length >= 1_000_000) return;
      consoleText += b.toString('utf8');
      const atMs = performance.now() - started;
      const end = consoleText.lastIndexOf('\n');
      if (end < scanned) return;
      for (const m of consoleText.slice(scanned, end).matchAll(/cipha-vm: (.*)/g))
        marks.push({ text: m[1]!.trim(), atMs });
      scanned = end + 1;
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, o.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (exitCode, signal) => {
      clearTimeout(timer);
      resolve({
        exitCode,
        signal,
        timedOut,
        wallMs: performance.now() - started,
        console: consoleText,
        marks,
        argv,
      });
    });
  });
}
