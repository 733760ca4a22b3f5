import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findEtcdBinary } from '../../src/etcd/localEtcd.js';

// What `npm pack` ships: small, no test-only code or dependencies, the unit, examples and alert rules; and the
// packed CLI runs with only its runtime dependencies installed — the demo too, on Debian's etcd binary (no
// testcontainers, no Docker).

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TEST_ONLY = ['testcontainers', 'dockerode', 'ssh2', 'vitest', 'fast-check', 'docker-compose'];

interface Pkg {
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}
const pkgOf = (dir: string): Pkg => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Pkg;

/** The runtime dependency closure, as the repo's (flat) node_modules resolves it. */
function runtimeClosure(): Set<string> {
  const seen = new Set<string>();
  const todo = Object.keys(pkgOf(ROOT).dependencies ?? {});
  for (let i = 0; i < 10_000 && todo.length > 0; i++) {
    const name = todo.pop()!;
    if (seen.has(name)) continue;
    const dir = join(ROOT, 'node_modules', name);
    if (!existsSync(dir)) continue; // an optional dependency of another platform
    seen.add(name);
    const p = pkgOf(dir);
    todo.push(...Object.keys(p.dependencies ?? {}), ...Object.keys(p.optionalDependencies ?? {}));
  }
  return seen;
}

describe('the packed tarball', () => {
  let tmp: string;
  let tarball: string;
  let files: string[];
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'cipha-pack-'));
    const r = await run('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: ROOT, timeout: 60_000 });
    const info = (JSON.parse(r.stdout) as { filename: string; files: { path: string }[] }[])[0]!;
    tarball = join(tmp, info.filename);
    files = info.files.map((f) => f.path);
    await run('tar', ['-xzf', tarball, '-C', tmp], { timeout: 30_000 });
  });
  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('is small and holds no test code; the unit, examples and alert rules are in it', () => {
    expect(statSync(tarball).size).toBeLessThan(1_000_000);
    expect(files.filter((f) => /^test\/|\.test\.|vitest/.test(f))).toEqual([]);
    for (const f of [
      'dist/cli/main.js',
      'deploy/systemd/clusterip-ha.service',
      'deploy/examples/node.yaml',
      'deploy/examples/cluster.yaml',
      'deploy/prometheus/clusterip-ha.rules.yml',
    ])
      expect(files).toContain(f);
  });

  it('depends on no test-only package, directly or through its dependencies', () => {
    const closure = runtimeClosure();
    expect(TEST_ONLY.filter((n) => closure.has(n))).toEqual([]);
    expect(Object.keys(pkgOf(join(tmp, 'package')).dependencies ?? {})).not.toContain('testcontainers');
  });

  it('runs the demo with only its runtime dependencies, on the etcd binary', async () => {
    expect(findEtcdBinary()).toBeDefined();
    const nm = join(tmp, 'package', 'node_modules');
    await mkdir(nm, { recursive: true });
    for (const name of runtimeClosure()) {
      await mkdir(join(nm, name, '..'), { recursive: true });
      await symlink(join(ROOT, 'node_modules', name), join(nm, name));
    }
    const main = join(tmp, 'package', 'dist', 'cli', 'main.js');
    expect((await run(process.execPath, [main, 'version'], { timeout: 30_000 })).stdout).toMatch(/^clusterip-ha \d/);
    const demo = spawn(process.execPath, [main, 'demo', '--duration', '60000'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmp },
    });
    let out = '';
    let err = '';
    demo.stdout.on('data', (d: Buffer) => (out += d.toString()));
    demo.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const closed = new Promise<number | null>((r) => demo.on('close', (c) => r(c)));
    try {
      const until = Date.now() + 60_000;
      while (!/cluster demo {2}HEALTHY/.test(out) && Date.now() < until && demo.exitCode === null)
        await new Promise((r) => setTimeout(r, 200));
      expect(out, err.slice(-2000)).toMatch(/cluster demo {2}HEALTHY/);
      expect(err).not.toMatch(/testcontainers|Cannot find (module|package)/);
      demo.kill('SIGINT');
      expect(await closed).toBe(0);
    } finally {
      demo.kill('SIGKILL');
    }
  });
});
