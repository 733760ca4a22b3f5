import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ExecBackend, execPlan } from '../../src/backends/exec.js';
import { createBackend, execStateFile } from '../../src/backends/index.js';
import { fenceNode } from '../../src/backends/fence.js';
import type { ClusterSpec, NodeConfig } from '../../src/config/types.js';
import { BackendError } from '../../src/errors.js';

// Real child processes: a node script that appends the environment it saw to a log file, and fails or hangs
// on demand.
const HOOK = `
const fs = require('node:fs');
const keys = ['CLUSTERIP_HA_OP','CLUSTERIP_HA_VIP','CLUSTERIP_HA_ADD','CLUSTERIP_HA_REMOVE','CLUSTERIP_HA_HELD','CLUSTERIP_HA_NODE','CLUSTERIP_HA_HOLD_MS'];
const mode = process.argv[2], log = process.argv[1];
if (mode === 'hang') setTimeout(() => {}, 60000);
else {
  fs.appendFileSync(log, JSON.stringify(Object.fromEntries(keys.map((k) => [k, process.env[k]]))) + '\\n');
  if (mode === 'fail') { process.stderr.write('boom: cannot apply\\n'); process.exit(3); }
}
`;

const V = '10.77.0.100';
const spec: ClusterSpec = {
  vips: [
    {
      address: V,
      interface: 'eth0',
      buckets: 8,
      hashMode: 'sourceip',
      seed: 1,
      clusterMac: '01:00:5e:4d:00:64',
      sticky: false,
    },
  ],
  rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 },
};

let dir: string;
let log: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cipha-be-exec-'));
  log = join(dir, 'hook.log');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const backend = (mode: string, timeoutMs = 10_000, stateFile?: string) =>
  new ExecBackend({
    command: [process.execPath, '-e', HOOK, log, mode],
    timeoutMs,
    nodeId: 'n1',
    ...(stateFile ? { stateFile } : {}),
  });

async function runs(): Promise<Record<string, string>[]> {
  const text = await readFile(log, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, string>);
}

async function errorOf(p: Promise<unknown>): Promise<BackendError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BackendError);
  return err as BackendError;
}

describe('exec backend', () => {
  it('runs the command once per changed VIP with the change in env vars', async () => {
    const b = backend('ok');
    await b.ensure(spec);
    await b.apply([{ vip: V, add: [3, 1], remove: [] }], { holdForMs: 1500 });
    await b.apply([{ vip: V, add: [5, 1], remove: [3, 7] }]);
    await b.apply([{ vip: V, add: [1], remove: [2] }]); // nothing changes: no run
    expect(await runs()).toEqual([
      {
        CLUSTERIP_HA_OP: 'apply',
        CLUSTERIP_HA_VIP: V,
        CLUSTERIP_HA_ADD: '1,3',
        CLUSTERIP_HA_REMOVE: '',
        CLUSTERIP_HA_HELD: '1,3',
        CLUSTERIP_HA_NODE: 'n1',
        CLUSTERIP_HA_HOLD_MS: '1500',
      },
      {
        CLUSTERIP_HA_OP: 'apply',
        CLUSTERIP_HA_VIP: V,
        CLUSTERIP_HA_ADD: '5',
        CLUSTERIP_HA_REMOVE: '3',
        CLUSTERIP_HA_HELD: '1,5',
        CLUSTERIP_HA_NODE: 'n1',
        CLUSTERIP_HA_HOLD_MS: '',
      },
    ]);
    expect(await b.read()).toEqual(new Map([[V, new Set([1, 5])]]));
    expect(b.describe().enforcesDeadline).toBe(false);
  });

  it('a failing command is a transient error and changes nothing held', async () => {
    const b = backend('fail');
    await b.ensure(spec);
    const err = await errorOf(b.apply([{ vip: V, add: [1], remove: [] }]));
    expect(err.kind).toBe('transient');
    expect(err.recoverable).toBe(true);
    expect(err.message).toMatch(/exit 3: boom: cannot apply/);
    expect(await b.read()).toEqual(new Map());
    expect(await runs()).toHaveLength(1);
  });

  it('a hanging command is killed at the timeout and reported as transient', async () => {
    const b = backend('hang', 300);
    await b.ensure(spec);
    const t0 = Date.now();
    const err = await errorOf(b.apply([{ vip: V, add: [1], remove: [] }]));
    expect(err.kind).toBe('transient');
    expect(err.message).toMatch(/timed out after 300 ms/);
    expect(Date.now() - t0).toBeLessThan(20_000); // bounded, generously
  });

  it('a command that cannot start is transient too', async () => {
    const b = new ExecBackend({ command: ['/nonexistent/cipha-hook'], timeoutMs: 1000, nodeId: 'n1' });
    expect((await errorOf(b.apply([{ vip: V, add: [1], remove: [] }]))).message).toMatch(/cannot start/);
  });

  it('remembers what it told the command in the state file, so fence can clear it after a restart', async () => {
    const cfg = {
      nodeId: 'n1',
      stateDir: dir,
      backend: { kind: 'exec', command: [process.execPath, '-e', HOOK, log, 'ok'], timeoutMs: 10_000 },
    } as unknown as NodeConfig;
    const b = createBackend(cfg.backend, { nodeId: 'n1', stateDir: dir });
    await b.ensure(spec);
    await b.apply([{ vip: V, add: [2, 4], remove: [] }]);
    expect(JSON.parse(await readFile(execStateFile(dir), 'utf8'))).toEqual({ version: 1, held: { [V]: [2, 4] } });
    const r = await fenceNode(cfg); // a new process would do exactly this
    expect(r.removed).toEqual(new Map([[V, new Set([2, 4])]]));
    expect(r.remaining).toEqual(new Map());
    expect((await runs()).at(-1)).toMatchObject({
      CLUSTERIP_HA_OP: 'clear',
      CLUSTERIP_HA_REMOVE: '2,4',
      CLUSTERIP_HA_HELD: '',
    });
  });

  it("two instances on one state file (the main thread's and the fence worker's) each see the other's changes", async () => {
    const state = join(dir, 'held.json');
    const main = backend('ok', 10_000, state);
    const worker = backend('ok', 10_000, state);
    await main.ensure(spec);
    await main.apply([{ vip: V, add: [1, 2], remove: [] }]);
    await worker.clear(); // the first fence: loads the file as it is now
    await main.apply([{ vip: V, add: [3], remove: [] }]);
    await worker.clear(); // the second fence must tell the command about bucket 3
    expect((await runs()).at(-1)).toMatchObject({ CLUSTERIP_HA_OP: 'clear', CLUSTERIP_HA_REMOVE: '3' });
    expect(await main.read()).toEqual(new Map());
  });

  it('rejects a shell string and bad buckets', async () => {
    expect(() => new ExecBackend({ command: [], timeoutMs: 1, nodeId: 'n1' })).toThrow(BackendError);
    const b = backend('ok');
    await b.ensure(spec);
    expect((await errorOf(b.apply([{ vip: V, add: [9], remove: [] }]))).kind).toBe('invalid');
  });

  it('execPlan computes the effective change', () => {
    expect(execPlan(new Set([1, 2]), { vip: V, add: [2, 3], remove: [1, 4] })).toEqual({
      add: [3],
      remove: [1],
      after: new Set([2, 3]),
    });
  });
});
