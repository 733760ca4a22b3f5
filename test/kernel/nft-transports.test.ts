import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// libnftables in process against `nft` processes (DESIGN §16): the same scenario of every backend operation runs
// once per transport in a namespace this test creates, and both must leave the same kernel state and return the
// same results. The library works in its process's own namespace, so the scenario runs as a child process under
// `ip netns exec` (from dist/: needs `npm run build`).

const run = requireCapability('nftables transports', netnsCapability());
const NS = `cipha-tr-${process.pid}`;
const DIST = resolve(import.meta.dirname, '../../dist/backends/nftables.js');

const SCENARIO = `
import childProcess from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { NftablesBackend } from ${JSON.stringify(DIST)};
const transport = process.argv[2];
const T = 'cipha_tr';
// Every process this one starts (execa goes through ChildProcess.prototype.spawn).
let spawned = 0;
const orig = childProcess.ChildProcess.prototype.spawn;
childProcess.ChildProcess.prototype.spawn = function (...a) { spawned++; return orig.apply(this, a); };
const vip = (address, over = {}) => ({ address, interface: 'eth0', buckets: 16, hashMode: 'sourceip', seed: 0x5eed1234,
  clusterMac: '01:00:5e:4d:00:64', sticky: false, ...over });
const spec = (...vips) => ({ vips, rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 } });
const V1 = '10.77.0.100', V2 = '10.77.0.101', V6 = 'fd77::100';
const show = (h) => Object.fromEntries([...h].map(([v, s]) => [v, [...s].sort((a, b) => a - b)]).sort());
// The table as nft prints it, without the times that differ from run to run.
const list = (family, name) => { try { return execFileSync('nft', ['list', 'table', family, name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
  .replace(/ (timeout|expires) [0-9hms.]+/g, ''); } catch { return 'absent'; } };
const table = () => list('ip', T) + list('ip6', T + '6');
const out = [];
const step = async (name, fn) => {
  const before = spawned;
  let result;
  try { result = await fn(); } catch (e) { result = { error: e.constructor.name, kind: e.kind, message: String(e.message).replace(/\\s+/g, ' ').slice(0, 120) }; }
  out.push({ name, result: result instanceof Map ? show(result) : result ?? null, table: table(), spawnedInStep: spawned - before, calls: { ...b.lastCall } });
};
const b = new NftablesBackend({ table: T, transport });
await step('ensure', () => b.ensure(spec(vip(V1), vip(V2, { buckets: 8, sticky: true }))));
await step('add', () => b.apply([{ vip: V1, add: [1, 2, 3], remove: [] }, { vip: V2, add: [1], remove: [] }], { holdForMs: 60000 }));
await step('read', () => b.read());
await step('move', () => b.apply([{ vip: V1, add: [4], remove: [2] }], { holdForMs: 60000 }));
await step('refresh', () => b.refresh(60000));
await step('refresh only', () => b.refresh(60000, { only: new Map([[V1, new Set([1])]]) }));
await step('out of range', () => b.apply([{ vip: V1, add: [17], remove: [] }], { holdForMs: 60000 }));
await step('rehash', () => b.ensure(spec(vip(V1, { seed: 7, hashMode: 'sourceip-sourceport' }), vip(V2, { buckets: 8, sticky: true }))));
await step('read after rehash', () => b.read());
await step('flushed by someone', () => { execFileSync('nft', ['delete', 'table', 'ip', T]); });
await step('add rebuilds', () => b.apply([{ vip: V1, add: [5], remove: [] }], { holdForMs: 60000 }));
await step('short hold', () => b.apply([{ vip: V2, add: [2], remove: [] }], { holdForMs: 300 }));
await new Promise((r) => setTimeout(r, 1200));
await step('expired', () => b.read());
// The agent's refresh: its model, here still listing V2's bucket 2, which ran out.
await step('refresh, one ran out', () => b.refresh(60000, { only: new Map([[V1, new Set([5])], [V2, new Set([2])]]) }));
await step('refresh, all there', () => b.refresh(60000, { only: new Map([[V1, new Set([5])]]) }));
await step('vip leaves', () => b.ensure(spec(vip(V1, { seed: 7, hashMode: 'sourceip-sourceport' }))));
await step('clear', () => b.clear());
await step('read cleared', () => b.read());
await step('again', () => b.apply([{ vip: V1, add: [6, 7], remove: [] }], { holdForMs: 60000 }));
const fresh = new NftablesBackend({ table: T, transport });
await step('fence path: a fresh instance clears', () => fresh.clear());
// IPv6 beside IPv4: a table ip6 of the same name, the same operations.
const b6 = new NftablesBackend({ table: T + '6', transport });
await step('v6 ensure', () => b6.ensure(spec(vip(V1), vip(V6, { clusterMac: '33:33:00:00:01:00' }))));
await step('v6 add', () => b6.apply([{ vip: V6, add: [1, 9], remove: [] }, { vip: V1, add: [3], remove: [] }], { holdForMs: 60000 }));
await step('v6 move', () => b6.apply([{ vip: V6, add: [2], remove: [9] }], { holdForMs: 60000 }));
await step('v6 refresh only', () => b6.refresh(60000, { only: new Map([[V6, new Set([1, 2])]]) }));
await step('v6 read', () => b6.read());
await step('v6 leaves (dark)', () => b6.ensure(spec(vip(V1))));
await step('v6 read dark', () => b6.read());
await step('v6 clear', () => b6.clear());
const used = b.describe().detail.transport;
await b.close(); await fresh.close(); await b6.close();
for (const [f, t] of [['ip', T + '6'], ['ip6', T + '6']]) execFileSync('nft', ['delete', 'table', f, t]);
execFileSync('nft', ['delete', 'table', 'ip', T]);
try { execFileSync('nft', ['delete', 'table', 'arp', T], { stdio: 'ignore' }); } catch {}
console.log(JSON.stringify({ transport: used, steps: out, spawned }));
`;

let dir = '';

describe.runIf(run)('nftables backend: libnftables in process and nft processes agree', () => {
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NS]);
    dir = mkdtempSync(join(tmpdir(), 'cipha-tr-'));
    writeFileSync(join(dir, 'scenario.mjs'), SCENARIO);
  });
  afterAll(() => {
    try {
      execFileSync('ip', ['netns', 'del', NS], { timeout: 10_000 });
    } catch {
      // already gone
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const scenario = (transport: string) =>
    JSON.parse(
      execFileSync('ip', ['netns', 'exec', NS, process.execPath, join(dir, 'scenario.mjs'), transport], {
        encoding: 'utf8',
        timeout: 60_000,
      }),
    ) as {
      transport: string;
      spawned: number;
      steps: {
        name: string;
        result: unknown;
        table: string;
        spawnedInStep: number;
        calls: { batches: number; lists: number };
      }[];
    };

  it('every operation gives the same results and kernel state; the library spawns no process', () => {
    const lib = scenario('libnftables');
    const proc = scenario('nft');
    expect(lib.transport).toBe('libnftables');
    expect(proc.transport).toBe('nft');
    const strip = (s: (typeof lib.steps)[number]) => ({ name: s.name, result: s.result, table: s.table });
    expect(lib.steps.map(strip)).toEqual(proc.steps.map(strip));
    // The scenario did what it says (so agreement is not two empty runs).
    const byName = new Map(lib.steps.map((s) => [s.name, s]));
    const held = (name: string) =>
      Object.fromEntries(
        Object.entries(byName.get(name)!.result as Record<string, number[]>).filter(([, b]) => b.length),
      );
    expect(held('read')).toEqual({ '10.77.0.100': [1, 2, 3], '10.77.0.101': [1] });
    expect(held('refresh only')).toEqual({ '10.77.0.100': [1] });
    expect(byName.get('out of range')!.result).toMatchObject({ error: 'BackendError' });
    expect(held('expired')).toEqual({ '10.77.0.100': [5] });
    expect(held('read cleared')).toEqual({});
    // A refresh of the model that lists a bucket which ran out renews the rest and revives nothing (both paths);
    // in process it is one batch when all are there, else that batch fails whole and the listing decides.
    expect(held('refresh, one ran out')).toEqual({ '10.77.0.100': [5] });
    expect(byName.get('refresh, one ran out')!.calls).toEqual({ batches: 2, lists: 1 });
    expect(byName.get('refresh, all there')!.calls).toEqual({ batches: 1, lists: 0 });
    const procSteps = new Map(proc.steps.map((s) => [s.name, s]));
    expect(procSteps.get('refresh, all there')!.calls).toEqual({ batches: 1, lists: 1 });
    expect(byName.get('fence path: a fresh instance clears')!.table).not.toMatch(/elements = /);
    expect(held('v6 read')).toEqual({ '10.77.0.100': [3], 'fd77::100': [1, 2] });
    expect(byName.get('v6 ensure')!.table).toMatch(
      /ip6 daddr fd77::100 iifname "eth0" jhash ip6 saddr mod 16 seed 0x5eed1234 offset 1 != @owned6_fd77__100 drop/,
    );
    expect(byName.get('v6 leaves (dark)')!.table).toMatch(/ip6 daddr fd77::100 drop/);
    expect(held('v6 read dark')).toEqual({ '10.77.0.100': [3] });
    expect(byName.get('ensure')!.table).toMatch(/jhash ip saddr mod 16 seed 0x5eed1234/);
    expect(byName.get('rehash')!.table).toMatch(/jhash ip saddr . th sport mod 16 seed 0x7 /);
    // The scenario's own listings run through spawnSync, which is not counted: the backend's calls are. A library
    // backend spawns nft only when it opens: the probe (the fence worker's binary, netlink) and, at set-up, the
    // version check; never for a change, a read or a refresh.
    const opening: Record<string, number> = { ensure: 2, 'fence path: a fresh instance clears': 1, 'v6 ensure': 2 };
    for (const s of lib.steps)
      expect({ step: s.name, spawned: s.spawnedInStep }).toEqual({ step: s.name, spawned: opening[s.name] ?? 0 });
    for (const s of proc.steps.filter((x) => x.name === 'add' || x.name === 'refresh'))
      expect(s.spawnedInStep).toBeGreaterThan(0);
  }, 120_000);
});
