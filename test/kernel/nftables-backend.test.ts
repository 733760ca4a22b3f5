import { execFileSync, spawn } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NftablesBackend } from '../../src/backends/nftables.js';
import type { ClusterSpec, VipSpec } from '../../src/config/types.js';
import { BackendError } from '../../src/errors.js';
import { nftablesBucket } from '../../src/hash/nftables.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// The nftables backend against the real kernel of this machine, inside network namespaces this test creates
// (nothing touches the root namespace). nft runs as `ip netns exec NS nft`, through the backend's netns option.

const run = requireCapability('nftables backend', netnsCapability());
const TAG = `cipha-be-${process.pid}-`;
const NODE = `${TAG}node`;
const CLIENT = `${TAG}client`;
const created: string[] = [];

function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 20_000, ...(input !== undefined ? { input } : {}) });
}
function nsNft(args: string[], input?: string): string {
  return sh('ip', ['netns', 'exec', NODE, 'nft', ...args], input);
}
function ruleset(): string {
  return nsNft(['list', 'ruleset']);
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const V1 = '10.77.0.100';
const V2 = '10.77.0.101';
const VBIG = '10.77.0.102';
const vip = (address: string, over: Partial<VipSpec> = {}): VipSpec => ({
  address,
  interface: 'eth0',
  buckets: 16,
  hashMode: 'sourceip',
  seed: 0x5eed1234,
  clusterMac: '01:00:5e:4d:00:64',
  sticky: false,
  ...over,
});
const spec = (...vips: VipSpec[]): ClusterSpec => ({ vips, rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 } });

async function errorOf(p: Promise<unknown>): Promise<BackendError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BackendError);
  return err as BackendError;
}

/** Polls `cond` every 50 ms for at most `ms`; returns the elapsed time or throws. */
async function waitFor(cond: () => Promise<boolean>, ms: number, what: string): Promise<number> {
  const t0 = Date.now();
  for (let i = 0; Date.now() - t0 < ms && i < 1000; i++) {
    if (await cond()) return Date.now() - t0;
    await sleep(50);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

describe.runIf(run)('nftables backend on the real kernel (network namespace)', () => {
  beforeAll(() => {
    for (const ns of [NODE, CLIENT]) {
      sh('ip', ['netns', 'add', ns]);
      created.push(ns);
    }
    // Links are created from inside a namespace: client eth0 <-> node eth0.
    sh('ip', ['-n', CLIENT, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NODE]);
    for (const ns of [NODE, CLIENT]) {
      sh('ip', [
        'netns',
        'exec',
        ns,
        'sysctl',
        '-qw',
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
      ]);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    }
    sh('ip', ['netns', 'exec', NODE, 'sysctl', '-qw', 'net.ipv4.conf.eth0.rp_filter=0']);
    sh('ip', ['-n', NODE, 'addr', 'add', '10.77.0.2/16', 'dev', 'eth0']);
    sh('ip', ['-n', NODE, 'addr', 'add', `${V1}/32`, 'dev', 'eth0']);
    sh('ip', ['-n', CLIENT, 'addr', 'add', '10.77.0.3/16', 'dev', 'eth0']);
    // The client reaches the VIP through the multicast cluster MAC, like a real cluster.
    sh('ip', ['-n', CLIENT, 'neigh', 'add', V1, 'lladdr', '01:00:5e:4d:00:64', 'dev', 'eth0', 'nud', 'permanent']);
  });

  afterEach(() => {
    // Every test's tables go, even when it failed: a leftover table with an empty owned set drops the VIP.
    for (const line of nsNft(['list', 'tables']).split('\n')) {
      const m = /^table (ip|arp) (cipha_\w+)$/.exec(line.trim());
      if (m) nsNft(['delete', 'table', m[1]!, m[2]!]);
    }
  });

  afterAll(() => {
    for (const ns of created.reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { timeout: 10_000 });
      } catch {
        // already gone
      }
    }
  });

  it('ensure is idempotent, keeps owned elements, and keeps VIPs no longer in the spec dark', async () => {
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t1' });
    await b.ensure(spec(vip(V1), vip(V2)));
    const first = ruleset();
    await b.ensure(spec(vip(V1), vip(V2)));
    expect(ruleset()).toBe(first);
    expect(first).toContain(
      `ip daddr ${V1} iifname "eth0" jhash ip saddr mod 16 seed 0x5eed1234 offset 1 != @owned_10_77_0_100 drop`,
    );
    expect(first).toContain('type filter hook prerouting priority raw; policy accept;');
    await b.apply([{ vip: V1, add: [1, 2], remove: [] }], { holdForMs: 60_000 });
    await b.apply([{ vip: V2, add: [3], remove: [] }], { holdForMs: 60_000 });
    await b.ensure(spec(vip(V1)));
    expect(await b.read()).toEqual(new Map([[V1, new Set([1, 2])]]));
    // V2 left the spec: dark (set emptied, every packet dropped), not removed (DESIGN §12).
    expect(ruleset()).toContain(`ip daddr ${V2} drop`);
    expect(nsNft(['list', 'set', 'ip', 'cipha_t1', 'owned_10_77_0_101'])).not.toMatch(/elements/);
    expect(ruleset()).not.toContain(`ip daddr ${V2} iifname`);
    await b.clear();
    expect(await b.read()).toEqual(new Map([[V1, new Set()]]));
    // clear keeps the rules: without them every node would accept every bucket
    expect(ruleset()).toContain('!= @owned_10_77_0_100 drop');
  });

  it('applies adds and removes in one batch and reads them back; "already so" is not an error', async () => {
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t2' });
    await b.ensure(spec(vip(V1), vip(V2)));
    await b.apply(
      [
        { vip: V1, add: [1, 3, 5], remove: [] },
        { vip: V2, add: [16], remove: [] },
      ],
      { holdForMs: 60_000 },
    );
    expect(b.lastCall.batches).toBe(1);
    expect(await b.read()).toEqual(
      new Map([
        [V1, new Set([1, 3, 5])],
        [V2, new Set([16])],
      ]),
    );
    await b.apply(
      [
        { vip: V1, add: [7, 1], remove: [3, 9] },
        { vip: V2, add: [], remove: [16] },
      ],
      { holdForMs: 60_000 },
    );
    expect(b.lastCall.batches).toBe(1);
    expect(await b.read()).toEqual(
      new Map([
        [V1, new Set([1, 5, 7])],
        [V2, new Set()],
      ]),
    );
    // without a hold time the element ends up without a timeout even if it had one
    await b.apply([{ vip: V1, add: [1], remove: [] }]);
    expect(nsNft(['list', 'set', 'ip', 'cipha_t2', 'owned_10_77_0_100'])).toMatch(/elements = \{ 1, 5 timeout/);
  });

  it('a bad batch applies nothing (atomic)', async () => {
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t3' });
    await b.ensure(spec(vip(V1), vip(V2)));
    // Someone replaces V2's set by one without timeouts: adding an element with a timeout to it fails.
    nsNft(
      ['-f', '-'],
      'flush chain ip cipha_t3 pre\ndelete set ip cipha_t3 owned_10_77_0_101\nadd set ip cipha_t3 owned_10_77_0_101 { typeof numgen inc mod 16; }\n',
    );
    const err = await errorOf(
      b.apply(
        [
          { vip: V1, add: [1, 2, 3], remove: [] },
          { vip: V2, add: [4], remove: [] },
        ],
        { holdForMs: 60_000 },
      ),
    );
    expect(err.message).toMatch(/nft apply failed/);
    expect((await b.read()).get(V1)).toEqual(new Set());
  });

  it('a fresh instance without a spec (the fence path) finds and empties every owned set', async () => {
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t10' });
    await b.ensure(spec(vip(V1), vip(V2)));
    await b.apply(
      [
        { vip: V1, add: [1, 2], remove: [] },
        { vip: V2, add: [3], remove: [] },
      ],
      { holdForMs: 60_000 },
    );
    const fresh = new NftablesBackend({ netns: NODE, table: 'cipha_t10' });
    expect(await fresh.read()).toEqual(
      new Map([
        [V1, new Set([1, 2])],
        [V2, new Set([3])],
      ]),
    );
    await fresh.clear();
    expect(await b.read()).toEqual(
      new Map([
        [V1, new Set()],
        [V2, new Set()],
      ]),
    );
    // and a table that does not exist holds nothing
    const none = new NftablesBackend({ netns: NODE, table: 'cipha_absent' });
    expect(await none.read()).toEqual(new Map());
    await none.clear();
  });

  it('rebuilds a table someone flushed, then applies', async () => {
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t4' });
    await b.ensure(spec(vip(V1)));
    await b.apply([{ vip: V1, add: [2], remove: [] }], { holdForMs: 60_000 });
    expect(await b.read()).toEqual(new Map([[V1, new Set([2])]]));
    expect(ruleset()).toContain('!= @owned_10_77_0_100 drop');
  });

  it('probes how this kernel renews element timeouts', async () => {
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t9' });
    await b.ensure(spec(vip(V1)));
    // Linux 6.18 updates an existing element's timeout in place (DESIGN §5, measured).
    expect(b.describe().detail.timeoutRenewal).toBe('update');
    expect(nsNft(['list', 'tables'])).not.toContain('cipha_t9_probe');
  });

  for (const renewal of ['update', 'replace'] as const) {
    it(`elements expire on their own at their timeout; refresh (${renewal}) extends them; expired ones are not revived`, async () => {
      const b = new NftablesBackend({ netns: NODE, table: 'cipha_t5', renewal });
      await b.ensure(spec(vip(V1)));
      const t0 = Date.now();
      await b.apply([{ vip: V1, add: [1, 2], remove: [] }], { holdForMs: 1500 });
      await b.apply([{ vip: V1, add: [3], remove: [] }], { holdForMs: 600 });
      expect((await b.read()).get(V1)).toEqual(new Set([1, 2, 3]));
      await waitFor(async () => !(await b.read()).get(V1)!.has(3), 5000, 'bucket 3 to expire');
      await sleep(Math.max(0, 1000 - (Date.now() - t0)));
      await b.refresh(2500); // at ~1.0 s: 1 and 2 now expire at ~3.5 s instead of 1.5 s
      const refreshedAt = Date.now();
      expect((await b.read()).get(V1)).toEqual(new Set([1, 2]));
      await sleep(Math.max(0, 2000 - (Date.now() - t0))); // past the original 1.5 s timeout
      expect((await b.read()).get(V1)).toEqual(new Set([1, 2]));
      const gone = await waitFor(async () => (await b.read()).get(V1)!.size === 0, 8000, 'refreshed buckets to expire');
      expect(Date.now() - refreshedAt).toBeGreaterThanOrEqual(2400);
      expect(gone).toBeGreaterThan(0);
    });
  }

  it('a refresh of its model renews what is there and revives nothing that ran out', async () => {
    // (The library's one-batch refresh of the same case: test/kernel/nft-transports.test.ts.)
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t7' });
    await b.ensure(spec(vip(V1)));
    const t0 = Date.now();
    await b.apply([{ vip: V1, add: [1, 2], remove: [] }], { holdForMs: 1500 });
    await b.apply([{ vip: V1, add: [3], remove: [] }], { holdForMs: 400 });
    await waitFor(async () => !(await b.read()).get(V1)!.has(3), 5000, 'bucket 3 to expire');
    // The model still lists 3 (its loop stalled past the expiry).
    expect(await b.refresh(3000, { only: new Map([[V1, new Set([1, 2, 3])]]) })).toEqual(
      new Map([[V1, new Set([1, 2])]]),
    );
    await sleep(Math.max(0, 2000 - (Date.now() - t0))); // past 1 and 2's first timeout
    expect((await b.read()).get(V1)).toEqual(new Set([1, 2]));
  });

  it('holds 4,096 buckets of one VIP in one batch', async () => {
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t6' });
    await b.ensure(spec(vip(VBIG, { buckets: 4096 })));
    const all = Array.from({ length: 4096 }, (_, i) => i + 1);
    await b.apply([{ vip: VBIG, add: all, remove: [] }], { holdForMs: 60_000 });
    expect(b.lastCall.batches).toBe(1);
    expect((await b.read()).get(VBIG)?.size).toBe(4096);
    const odd = all.filter((n) => n % 2 === 1);
    await b.apply([{ vip: VBIG, add: [], remove: odd }], { holdForMs: 60_000 });
    expect(b.lastCall.batches).toBe(1);
    expect([...(await b.read()).get(VBIG)!].every((n) => n % 2 === 0)).toBe(true);
    expect((await b.read()).get(VBIG)?.size).toBe(2048);
    await b.refresh(60_000);
    expect(b.lastCall.batches).toBe(1);
    await errorOf(b.apply([{ vip: VBIG, add: [4097], remove: [] }]));
  });

  it('loads sticky VIPs, the port hash modes and the ARP mangling table', async () => {
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t7', arpMangle: true });
    await b.ensure(
      spec(
        vip(V1, { sticky: true }),
        vip(V2, { hashMode: 'sourceip-sourceport-destport', clusterMac: '01:00:5e:4d:00:65' }),
      ),
    );
    const rs = ruleset();
    expect(rs).toMatch(/chain pre_sticky \{\s+type filter hook prerouting priority mangle/);
    expect(rs).toContain(`ip daddr ${V1} iifname "eth0" meta l4proto tcp ct state established,related accept`);
    expect(rs).toContain(
      'jhash ip saddr . th sport . th dport mod 16 seed 0x5eed1234 offset 1 != @owned_10_77_0_101 drop',
    );
    expect(rs).toContain(`arp operation reply arp saddr ip ${V2} arp saddr ether set 01:00:5e:4d:00:65`);
    // arpMangle off removes the ARP table again
    await new NftablesBackend({ netns: NODE, table: 'cipha_t7' }).ensure(spec(vip(V1)));
    expect(ruleset()).not.toContain('table arp cipha_t7');
  });

  it('the owned set gates real packets by bucket, and the buckets are the ones nftablesBucket predicts', async () => {
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t8' });
    await b.ensure(spec(vip(V1)));
    // Record which client sources get past the backend's chain (input hook, after prerouting).
    nsNft(
      ['-f', '-'],
      [
        'add table ip cipha_seen',
        'add set ip cipha_seen seen { type ipv4_addr; flags dynamic; size 1024; }',
        'add chain ip cipha_seen in { type filter hook input priority 0; policy accept; }',
        `add rule ip cipha_seen in ip daddr ${V1} udp dport 9999 update @seen { ip saddr }`,
        '',
      ].join('\n'),
    );
    const sources = Array.from({ length: 96 }, (_, i) => `10.77.1.${i + 1}`);
    for (const s of sources) sh('ip', ['-n', CLIENT, 'addr', 'add', `${s}/16`, 'dev', 'eth0']);
    const send = () => sh('ip', ['netns', 'exec', CLIENT, process.execPath, '-e', SENDER, V1, ...sources]);
    const seen = (): Set<string> => {
      const out = JSON.parse(nsNft(['-j', 'list', 'set', 'ip', 'cipha_seen', 'seen'])) as {
        nftables: { set?: { elem?: unknown[] } }[];
      };
      const elems = out.nftables.find((x) => x.set)?.set?.elem ?? [];
      return new Set(elems.map((e) => (typeof e === 'string' ? e : (e as { elem: { val: string } }).elem.val)));
    };
    const owned = [2, 3, 5, 7, 11, 13];
    await b.apply([{ vip: V1, add: owned, remove: [] }], { holdForMs: 60_000 });
    send();
    const passed = seen();
    const predicted = sources.filter((s) => owned.includes(nftablesBucket(s, 16, 0x5eed1234)));
    expect(predicted.length).toBeGreaterThan(10);
    expect([...passed].sort()).toEqual([...predicted].sort());
    // The complement passes exactly the other sources.
    nsNft(['flush', 'set', 'ip', 'cipha_seen', 'seen']);
    const rest = Array.from({ length: 16 }, (_, i) => i + 1).filter((n) => !owned.includes(n));
    await b.apply([{ vip: V1, add: rest, remove: owned }], { holdForMs: 60_000 });
    send();
    expect([...seen()].sort()).toEqual(sources.filter((s) => !predicted.includes(s)).sort());
    // Nothing owned: nothing passes.
    nsNft(['flush', 'set', 'ip', 'cipha_seen', 'seen']);
    await b.clear();
    send();
    expect(seen().size).toBe(0);
  });

  it('the cluster MAC: on the interface after set-up, dropped on clear, taken again before the next add', async () => {
    sh('ip', ['-n', NODE, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1']);
    const maddr = () => sh('ip', ['-n', NODE, 'maddr', 'show', 'dev', 'd0']);
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t11', multicastSubscribe: true });
    try {
      await b.ensure(
        spec(vip(V1, { interface: 'd0' }), vip('fd77::100', { interface: 'd0', clusterMac: '33:33:00:00:01:00' })),
      );
      expect(maddr()).toMatch(/link {2}01:00:5e:4d:00:64( users \d+)? static/);
      expect(maddr()).toMatch(/link {2}33:33:00:00:01:00( users \d+)? static/);
      expect(b.describe().detail.multicast).toBe('d0 01:00:5e:4d:00:64 subscribed; d0 33:33:00:00:01:00 subscribed');
      // Removed behind its back: the next read (the agent's resync) takes it again.
      sh('ip', ['-n', NODE, 'maddr', 'del', '01:00:5e:4d:00:64', 'dev', 'd0']);
      await b.read();
      expect(maddr()).toContain('01:00:5e:4d:00:64');
      await b.apply([{ vip: V1, add: [1, 2], remove: [] }], { holdForMs: 60_000 });
      await b.clear();
      expect(maddr()).not.toContain('01:00:5e:4d:00:64');
      expect(b.describe().detail.multicast).toBe('released (cleared)');
      await b.apply([{ vip: V1, add: [3], remove: [] }], { holdForMs: 60_000 });
      expect(maddr()).toContain('01:00:5e:4d:00:64');
      expect((await b.read()).get(V1)).toEqual(new Set([3]));
      // The interface goes away while the node is cleared: the subscription fails visibly, the change goes in (one
      // VIP's interface must not stop the node's other VIPs, nor its releases).
      await b.clear();
      sh('ip', ['-n', NODE, 'link', 'del', 'd0']);
      nsNft(['add', 'element', 'ip', 'cipha_t11', 'owned_10_77_0_100', '{ 3 }']); // held, to be released
      await b.apply([{ vip: V1, add: [4], remove: [3] }], { holdForMs: 60_000 });
      expect((await b.read()).get(V1)).toEqual(new Set([4]));
      expect(b.describe().detail.multicast).toMatch(/^d0 01:00:5e:4d:00:64 failed \(interface d0 does not exist\)/);
    } finally {
      await b.close();
      sh('ip', [
        'netns',
        'exec',
        NODE,
        'sh',
        '-c',
        'ip link del d0 2>/dev/null; nft delete table ip cipha_t11; nft delete table ip6 cipha_t11; true',
      ]);
    }
  });

  it('a VIP removed from the spec stays dark on real packets, also through a restart (DESIGN §12)', async () => {
    const b = new NftablesBackend({ netns: NODE, table: 'cipha_t11' });
    nsNft(
      ['-f', '-'],
      [
        'add table ip cipha_seen',
        'add set ip cipha_seen seen { type ipv4_addr; flags dynamic; size 1024; }',
        'add chain ip cipha_seen in { type filter hook input priority 0; policy accept; }',
        `add rule ip cipha_seen in ip daddr ${V1} udp dport 9999 update @seen { ip saddr }`,
        '',
      ].join('\n'),
    );
    const sources = Array.from({ length: 32 }, (_, i) => `10.77.2.${i + 1}`);
    for (const s of sources) sh('ip', ['-n', CLIENT, 'addr', 'add', `${s}/16`, 'dev', 'eth0']);
    const send = () => sh('ip', ['netns', 'exec', CLIENT, process.execPath, '-e', SENDER, V1, ...sources]);
    const seenCount = (): number => {
      const out = JSON.parse(nsNft(['-j', 'list', 'set', 'ip', 'cipha_seen', 'seen'])) as {
        nftables: { set?: { elem?: unknown[] } }[];
      };
      return (out.nftables.find((x) => x.set)?.set?.elem ?? []).length;
    };
    try {
      await b.ensure(spec(vip(V1)));
      const all = Array.from({ length: 16 }, (_, i) => i + 1);
      await b.apply([{ vip: V1, add: all, remove: [] }], { holdForMs: 60_000 });
      send();
      expect(seenCount()).toBe(sources.length);
      // The spec drops V1 while its address is still configured: nothing may pass.
      nsNft(['flush', 'set', 'ip', 'cipha_seen', 'seen']);
      await b.ensure(spec());
      send();
      expect(seenCount()).toBe(0);
      // A restarted agent (fresh instance) with the same spec keeps it dark, and fence keeps it so.
      await new NftablesBackend({ netns: NODE, table: 'cipha_t11' }).ensure(spec(vip(V2)));
      await new NftablesBackend({ netns: NODE, table: 'cipha_t11' }).clear();
      send();
      expect(seenCount()).toBe(0);
      expect(ruleset()).toContain(`ip daddr ${V1} drop`);
    } finally {
      nsNft(['delete', 'table', 'ip', 'cipha_seen']);
      for (const s of sources) sh('ip', ['-n', CLIENT, 'addr', 'del', `${s}/16`, 'dev', 'eth0']);
    }
  });
});

// Sends one UDP datagram to VIP:9999 from each source address, then waits briefly for delivery.
const SENDER = `
const dgram = require('node:dgram');
const [vip, ...sources] = process.argv.slice(1);
(async () => {
  for (const s of sources) {
    const sock = dgram.createSocket('udp4');
    await new Promise((res, rej) => { sock.once('error', rej); sock.bind({ address: s, port: 0 }, res); });
    await new Promise((res) => sock.send('x', 9999, vip, res));
    sock.close();
  }
  setTimeout(() => process.exit(0), 200);
})().catch((e) => { console.error(e); process.exit(1); });
`;

// Sticky mode and the ARP mangling table with real TCP between namespaces: a switch (bridge), two nodes that
// both carry the VIP and run the backend, and one client that resolves the VIP by ARP (no static entry).
describe.runIf(run)('nftables backend: sticky TCP and ARP mangling through a bridge', () => {
  const SW = `${TAG}sw`;
  const NODES = [`${TAG}n1`, `${TAG}n2`];
  const CL = `${TAG}cl`;
  const VIPADDR = '10.77.0.100';
  const MAC = '01:00:5e:4d:00:64';
  const SRC = '10.77.1.5';
  const SEED = 0x5eed1234;
  const servers: number[] = [];
  const nsList: string[] = [];
  const vipSpec = (sticky: boolean) => spec(vip(VIPADDR, { buckets: 4, sticky }));
  const bucket = nftablesBucket(SRC, 4, SEED);

  beforeAll(() => {
    for (const ns of [SW, ...NODES, CL]) {
      sh('ip', ['netns', 'add', ns]);
      nsList.push(ns);
    }
    sh('ip', ['-n', SW, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
    sh('ip', ['-n', SW, 'link', 'set', 'br0', 'up']);
    [...NODES, CL].forEach((ns, i) => {
      sh('ip', ['-n', SW, 'link', 'add', `p${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      sh('ip', ['-n', SW, 'link', 'set', `p${i}`, 'master', 'br0', 'up']);
      sh('ip', [
        'netns',
        'exec',
        ns,
        'sysctl',
        '-qw',
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
        'net.ipv4.conf.all.arp_ignore=0',
        'net.ipv4.conf.all.arp_announce=0',
      ]);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    });
    NODES.forEach((ns, i) => {
      sh('ip', ['-n', ns, 'addr', 'add', `10.77.0.${11 + i}/16`, 'dev', 'eth0']);
      sh('ip', ['-n', ns, 'addr', 'add', `${VIPADDR}/32`, 'dev', 'eth0']);
      const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', TCP_SERVER, VIPADDR, `n${i + 1}`], {
        stdio: 'ignore',
      });
      servers.push(child.pid!);
    });
    sh('ip', ['-n', CL, 'addr', 'add', '10.77.0.3/16', 'dev', 'eth0']);
    sh('ip', ['-n', CL, 'addr', 'add', `${SRC}/16`, 'dev', 'eth0']);
  });

  afterAll(() => {
    // Servers first: a live process would keep a deleted namespace alive.
    for (const pid of servers) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const ns of nsList.reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { timeout: 10_000 });
      } catch {
        // gone
      }
    }
  });

  /** Client in CL: connect from SRC, print the reply, wait for `go`, send on the same connection and on a new one. */
  async function moveDuringConnection(
    sticky: boolean,
  ): Promise<{ before: string; same: string; fresh: string; arp: string }> {
    const backends = NODES.map((ns) => new NftablesBackend({ netns: ns, table: 'cipha_sticky', arpMangle: true }));
    for (const b of backends) await b.ensure(vipSpec(sticky));
    await backends[0]!.clear();
    await backends[1]!.clear();
    await backends[0]!.apply([{ vip: VIPADDR, add: [1, 2, 3, 4], remove: [] }], { holdForMs: 120_000 });
    sh('ip', ['-n', CL, 'neigh', 'flush', 'dev', 'eth0']);
    const client = spawn('ip', ['netns', 'exec', CL, process.execPath, '-e', TCP_CLIENT, VIPADDR, SRC], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines: string[] = [];
    let buf = '';
    client.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      lines.push(...parts);
    });
    const exited = new Promise<void>((resolve) => client.on('exit', () => resolve()));
    try {
      await waitFor(async () => lines.length >= 1, 15_000, 'the first reply');
      const arp = sh('ip', ['-n', CL, 'neigh', 'show', VIPADDR]).trim();
      // Move the client's bucket from n1 to n2 (release first, as the claim protocol does).
      await backends[0]!.apply([{ vip: VIPADDR, add: [], remove: [bucket] }]);
      await backends[1]!.apply([{ vip: VIPADDR, add: [bucket], remove: [] }], { holdForMs: 120_000 });
      client.stdin.write('go\n');
      await Promise.race([exited, sleep(20_000)]);
      return { before: lines[0]!, same: lines[1] ?? 'none', fresh: lines[2] ?? 'none', arp };
    } finally {
      client.kill('SIGKILL');
      for (const b of backends) await b.clear();
    }
  }

  it('sticky: an established connection stays on the old owner, a new one goes to the new owner; ARP answers with the cluster MAC', async () => {
    const r = await moveDuringConnection(true);
    expect(r.arp).toContain(`lladdr ${MAC}`);
    expect(r.before).toBe('reply n1');
    expect(r.same).toBe('reply n1');
    expect(r.fresh).toBe('reply n2');
  });

  it('without sticky the same move breaks the established connection (the control case)', async () => {
    const r = await moveDuringConnection(false);
    expect(r.before).toBe('reply n1');
    expect(r.same).not.toBe('reply n1');
    expect(r.same).toMatch(/^error /);
    expect(r.fresh).toBe('reply n2');
  });
});

// A TCP server on VIP:8080 answering every chunk with its node name.
const TCP_SERVER = `
const net = require('node:net');
const [vip, name] = process.argv.slice(1);
net.createServer((s) => { s.on('data', () => s.write(name + '\\n')); s.on('error', () => {}); }).listen(8080, vip);
setTimeout(() => process.exit(0), 600000);
`;

// Connects from SRC to VIP:8080, prints "reply <node>"; after "go" on stdin sends again on the same connection
// (prints "reply <node>" or "error <code>") and on a new one. Every wait is bounded.
const TCP_CLIENT = `
const net = require('node:net');
const [vip, src] = process.argv.slice(1);
function ask(sock) {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve('error timeout'), 3000);
    sock.once('data', (d) => { clearTimeout(t); resolve('reply ' + d.toString().trim()); });
    sock.once('error', (e) => { clearTimeout(t); resolve('error ' + (e.code || e.message)); });
    sock.write('x');
  });
}
function open() {
  return new Promise((resolve) => {
    const s = net.connect({ host: vip, port: 8080, localAddress: src });
    const t = setTimeout(() => { s.destroy(); resolve(null); }, 5000);
    s.once('connect', () => { clearTimeout(t); resolve(s); });
    s.once('error', () => { clearTimeout(t); resolve(null); });
  });
}
(async () => {
  const a = await open();
  console.log(a ? await ask(a) : 'error connect');
  await new Promise((r) => process.stdin.once('data', r));
  console.log(a ? await ask(a) : 'error connect');
  const b = await open();
  console.log(b ? await ask(b) : 'error connect');
  process.exit(0);
})();
setTimeout(() => process.exit(2), 60000);
`;
