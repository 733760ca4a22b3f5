import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { indexModules, resolveModuleFiles } from './modules.js';

// Debian 12's 6.1 kernel is the newest stock kernel with ipt_CLUSTERIP (removed in 6.3). The test fetches it
// with apt (CI has the Debian mirror), keeps the uncompressed vmlinux plus the few modules the VM needs in a
// cache outside the repo, and reuses that cache when apt has nothing newer.

export const DEFAULT_CACHE_DIR = '/var/cache/clusterip-ha-test';

export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.CLUSTERIP_HA_TEST_CACHE || DEFAULT_CACHE_DIR;
}

export interface PreparedKernel {
  /** e.g. linux-image-6.1.0-56-amd64-unsigned */
  pkg: string;
  /** e.g. 6.1.0-56-amd64 */
  release: string;
  /** Uncompressed ELF with a PVH note: qemu boots it directly, skipping the in-guest xz (~4 s under TCG). */
  vmlinux: string;
  /** .ko files in insmod order. */
  modules: { name: string; path: string }[];
  /** How the kernel was obtained in this run. */
  source: 'cache' | 'apt-get download';
}

const PKG_RE = /^linux-image-6\.1\.0-(\d+)-amd64-unsigned$/;

/** The newest `linux-image-6.1.0-<n>-amd64-unsigned` apt knows (not -cloud-: it lacks 9p). */
export function newestKernelPackage(names: readonly string[]): string | undefined {
  let best: { n: number; name: string } | undefined;
  for (const name of names) {
    const m = PKG_RE.exec(name.trim());
    if (!m) continue;
    const n = Number(m[1]);
    if (!best || n > best.n) best = { n, name: name.trim() };
  }
  return best?.name;
}

async function aptPackageNames(): Promise<string[]> {
  const search = () =>
    execa('apt-cache', ['search', '--names-only', '^linux-image-6\\.1\\.0-[0-9]+-amd64-unsigned$'], {
      timeout: 60_000,
    });
  let out = (await search()).stdout;
  if (out.trim() === '') {
    // A fresh CI image has no package lists yet.
    await execa('apt-get', ['update', '-q'], { timeout: 300_000 });
    out = (await search()).stdout;
  }
  return out.split('\n').map((l) => l.split(' - ')[0] ?? '');
}

function readyDir(root: string, pkg: string): string {
  return join(root, pkg);
}

async function loadReady(dir: string, pkg: string, source: PreparedKernel['source']): Promise<PreparedKernel> {
  const meta = JSON.parse(await readFile(join(dir, 'kernel.json'), 'utf8')) as {
    release: string;
    modules: string[];
  };
  return {
    pkg,
    release: meta.release,
    vmlinux: join(dir, 'vmlinux'),
    modules: meta.modules.map((name) => ({ name, path: join(dir, 'modules', `${name}.ko`) })),
    source,
  };
}

/** bzImage -> vmlinux: find the xz stream after the real-mode setup and decompress just that stream. */
async function extractVmlinux(bzImage: string, out: string): Promise<void> {
  const img = await readFile(bzImage);
  const at = img.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
  if (at < 0) throw new Error(`${bzImage}: no xz stream (expected CONFIG_KERNEL_XZ)`);
  const res = await execa('xz', ['-dc', '--single-stream'], {
    input: img.subarray(at),
    encoding: 'buffer',
    timeout: 120_000,
    stripFinalNewline: false,
  });
  // execa 9 returns a Uint8Array for encoding 'buffer'.
  const elf = Buffer.from(res.stdout.buffer, res.stdout.byteOffset, res.stdout.byteLength);
  if (elf.subarray(0, 4).toString('latin1') !== '\x7fELF')
    throw new Error(`${bzImage}: decompressed payload is not ELF`);
  await writeFile(out, elf);
}

async function listKo(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith('.ko')) out.push(join(e.parentPath, e.name));
  }
  return out;
}

async function buildFromDeb(root: string, pkg: string): Promise<void> {
  const work = await mkdtemp(join(root, `.build-${pkg}-`));
  try {
    await execa('apt-get', ['download', pkg], { cwd: work, timeout: 600_000 });
    const deb = (await readdir(work)).find((f) => f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb`);
    const x = join(work, 'x');
    await execa('dpkg-deb', ['-x', join(work, deb), x], { timeout: 300_000 });
    const release = (await readdir(join(x, 'lib', 'modules')))[0];
    if (!release) throw new Error(`${deb}: no lib/modules/<release>`);
    const stage = join(work, 'stage');
    await mkdir(join(stage, 'modules'), { recursive: true });
    await extractVmlinux(join(x, 'boot', `vmlinuz-${release}`), join(stage, 'vmlinux'));
    const mods = await resolveModuleFiles(indexModules(await listKo(join(x, 'lib', 'modules', release, 'kernel'))));
    for (const m of mods) await copyFile(m.path, join(stage, 'modules', `${m.name}.ko`));
    await writeFile(
      join(stage, 'kernel.json'),
      JSON.stringify({ pkg, deb, release, modules: mods.map((m) => m.name) }, null, 2),
    );
    // rename is atomic: a concurrent run either sees the whole directory or none.
    await rename(stage, readyDir(root, pkg)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Find (apt) or reuse (cache) the newest Debian 6.1 kernel, ready to boot. */
export async function prepareKernel(root = cacheDir()): Promise<PreparedKernel> {
  await mkdir(root, { recursive: true });
  const forced = process.env.CLUSTERIP_HA_QEMU_KERNEL_PKG;
  let pkg = forced;
  let aptError: unknown;
  if (!pkg) {
    try {
      pkg = newestKernelPackage(await aptPackageNames());
    } catch (err) {
      aptError = err;
    }
  }
  if (!pkg) {
    // apt unusable: fall back to the newest kernel already cached.
    const cached = newestKernelPackage(await readdir(root));
    if (!cached || !existsSync(join(root, cached, 'kernel.json'))) {
      throw new Error(`no linux-image-6.1.0-*-amd64-unsigned from apt and none cached in ${root}`, {
        cause: aptError,
      });
    }
    return loadReady(readyDir(root, cached), cached, 'cache');
  }
  const dir = readyDir(root, pkg);
  if (existsSync(join(dir, 'kernel.json'))) return loadReady(dir, pkg, 'cache');
  await buildFromDeb(root, pkg);
  // Keep only the newest kernel: each one is ~70 MB.
  for (const old of await readdir(root)) {
    if (old !== pkg && newestKernelPackage([old]) === old) await rm(join(root, old), { recursive: true, force: true });
  }
  return loadReady(dir, pkg, 'apt-get download');
}
