import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { validateClusterSpec } from '../../src/config/index.js';
import type { VipSpec } from '../../src/config/types.js';
import { decodeJson, statusValueSchema } from '../../src/etcd/values.js';
import { agentMainPath } from '../../src/localcluster/agentProcess.js';
import { SERVER_TCP_PORT, SERVER_UDP_PORT } from '../../src/netns/addressing.js';
import { buildDataplane, type Dataplane } from '../../src/netns/dataplane.js';
import { readOwnedSet } from '../../src/netns/nftRead.js';
import { startProber, type ProbeResult, type Prober, type StreamReport } from '../../src/netns/prober.js';
import { nsRun, run } from '../../src/netns/run.js';
import { startNodeServer, type NodeServer } from '../../src/netns/servers.js';
import { createTopology, type Topology } from '../../src/netns/topology.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// Issue 14: real networks. Every node's eth0 is a macvlan whose lower veth sits in an underlay namespace, so the
// multicast filter of a real NIC is there: a frame to the cluster MAC reaches a node only if the MAC is on eth0's
// list. The client has no static entries: it resolves the IPv4 VIP by ARP and the IPv6 one by neighbour
// discovery, and learns the cluster MAC only because the nodes rewrite their replies (arpMangle) — or, before any
// traffic, from the announcement an agent sends when it sets a VIP up.

const enabled = requireCapability('macvlan dataplane', netnsCapability());
const VIP4 = '10.77.0.100';
const VIP6 = 'fd77::100';

const SPEC = validateClusterSpec(
  {
    vips: [
      { address: VIP4, interface: 'eth0', buckets: 16, hashMode: 'sourceip', seed: 0x5eed1234 },
      { address: VIP6, interface: 'eth0', buckets: 16, hashMode: 'sourceip', seed: 0x5eed1234 },
    ],
    rebalance: { joinMovesPerInterval: 4, intervalMs: 200 },
  },
  'macvlan test spec',
);
const V4 = SPEC.vips[0]!;
const V6 = SPEC.vips[1]!;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function neighbour(ns: string, address: string): Promise<string> {
  const r = await nsRun(ns, 'ip', ['neigh', 'show', address], { allowFail: true, timeoutMs: 5000 });
  return r.stdout.trim();
}

async function maddrs(ns: string): Promise<string> {
  return (await run('ip', ['-n', ns, 'maddr', 'show', 'dev', 'eth0'], { timeoutMs: 5000 })).stdout;
}

describe.skipIf(!enabled)('netns dataplane on macvlans: cluster MAC subscription, ARP and ND, IPv4 and IPv6', () => {
  let topo: Topology | undefined;
  let dp: Dataplane | undefined;
  const procs: { stop(): Promise<void> }[] = [];
  afterEach(async () => {
    await Promise.all(procs.splice(0).map((p) => p.stop()));
    await dp?.destroy();
    await topo?.destroy();
    dp = undefined;
    topo = undefined;
  });

  it('control: without the cluster MAC on its multicast list a macvlan node receives nothing', async () => {
    topo = await createTopology({ nodes: ['n1'], sources: 20, vip: VIP4, vip6: VIP6, link: 'macvlan', etcdNs: false });
    const t = topo;
    const n1 = t.nodes[0]!;
    // No nft rules at all: whatever reaches n1 is answered.
    const servers: NodeServer[] = [];
    for (const vip of [VIP4, VIP6]) {
      servers.push(
        await startNodeServer({ ns: n1.ns, node: 'n1', vip, udpPort: SERVER_UDP_PORT, tcpPort: SERVER_TCP_PORT }),
      );
    }
    procs.push(...servers);
    const probers: Prober[] = [];
    for (const [vip, sources] of [
      [VIP4, t.sources],
      [VIP6, t.sources6],
    ] as const) {
      const p = await startProber({
        ns: t.clientNs,
        sources,
        vip,
        udpPort: SERVER_UDP_PORT,
        tcpPort: SERVER_TCP_PORT,
      });
      probers.push(p);
      procs.push(p);
    }
    const answered = async (): Promise<number[]> => {
      const out: number[] = [];
      for (const p of probers) {
        let n = 0;
        for (let i = 0; i < 3; i++)
          n += (await p.probe({ windowMs: 80 })).answers.filter((a) => a.udp.length > 0).length;
        out.push(n);
      }
      return out;
    };
    expect(await answered(), 'answers without the subscription (IPv4, IPv6)').toEqual([0, 0]);
    for (const mac of [V4.clusterMac, V6.clusterMac]) {
      await run('ip', ['-n', n1.ns, 'maddr', 'add', mac, 'dev', 'eth0'], { timeoutMs: 5000 });
    }
    const withIt = await answered();
    // 3 rounds of 20 sources per family; a probe lost on a loaded machine is not the point here.
    for (const n of withIt) expect(n, 'answers with it (of 60)').toBeGreaterThanOrEqual(57);
  });

  it('serves both families with learned neighbours: one answer per source, SIGKILL and drain without a double', async () => {
    if (!existsSync(agentMainPath())) throw new Error(`${agentMainPath()} missing: run \`npm run build\` first`);
    dp = await buildDataplane({
      spec: SPEC,
      sources: 40,
      link: 'macvlan',
      resolution: 'learned',
      leaseTtlSeconds: 1,
      agents: false,
      agentArgs: ['--nft-arp-mangle', 'true'],
    });
    const d = dp;
    const client = d.topology.clientNs;
    // A stale entry from before (another MAC): only the agents' announcement can correct it without traffic.
    const stale = '02:00:00:00:00:99';
    for (const vip of [VIP4, VIP6]) {
      await nsRun(client, 'ip', ['neigh', 'replace', vip, 'lladdr', stale, 'dev', 'eth0', 'nud', 'stale'], {
        timeoutMs: 5000,
      });
    }
    for (const n of d.nodes) d.startAgent(n);
    const settled = await d.waitSettled({ timeoutMs: 45_000 });
    await waitKernelMatchesClaims(d, V6, 30_000);

    // Announced at set-up: the client's entries carry the cluster MAC before it sent the VIPs anything.
    expect(await neighbour(client, VIP4)).toContain(V4.clusterMac);
    expect(await neighbour(client, VIP6)).toContain(V6.clusterMac);
    // Resolved from scratch: the replies themselves carry the cluster MAC.
    for (const vip of [VIP4, VIP6]) await nsRun(client, 'ip', ['neigh', 'flush', 'to', vip], { timeoutMs: 5000 });

    // Exactly one answer per source, from the node whois names (the nftables hash of each family).
    const expect4 = await d.expectedOwners(settled.claims);
    const expect6 = await d.expectedOwners(undefined, V6);
    await oneAnswerEach((o) => d.probe(o), expect4, 'IPv4');
    await oneAnswerEach((o) => d.probe6(o), expect6, 'IPv6');
    expect(await neighbour(client, VIP4), 'learned by ARP').toContain(V4.clusterMac);
    expect(await neighbour(client, VIP6), 'learned by neighbour discovery').toContain(V6.clusterMac);
    expect(new Set(expect4.values()).size, 'every node serves IPv4 sources').toBe(3);
    expect(new Set(expect6.values()).size, 'every node serves IPv6 sources').toBe(3);
    // TCP too (it needs pkttype host on the multicast-addressed frames, IPv6 as IPv4).
    for (const [what, probe, owners] of [
      ['IPv4', d.probe, expect4],
      ['IPv6', d.probe6, expect6],
    ] as const) {
      const r = await probe({ windowMs: 50, udp: false, tcp: true, tcpTimeoutMs: 2000 });
      const wrong = r.answers.filter((a) => a.tcp !== owners.get(a.source));
      expect(
        wrong.map((a) => `${a.source}: ${a.tcp ?? a.tcpError}`),
        `${what} TCP`,
      ).toEqual([]);
    }

    // Status shows the subscriptions; one removed behind the agent's back comes back at its resync.
    const status = async () => {
      const raw = await d.etcd.get(d.keys.status('n1')).string();
      const s = raw === null ? null : decodeJson(statusValueSchema, raw);
      return s?.ok ? (s.value.multicast ?? []) : [];
    };
    expect(await status()).toEqual(
      expect.arrayContaining([`eth0 ${V4.clusterMac} subscribed`, `eth0 ${V6.clusterMac} subscribed`]),
    );
    await run('ip', ['-n', d.nsOf('n1'), 'maddr', 'del', V4.clusterMac, 'dev', 'eth0'], { timeoutMs: 5000 });
    const until = Date.now() + 15_000;
    while (!(await maddrs(d.nsOf('n1'))).includes(V4.clusterMac) && Date.now() < until) await sleep(200);
    expect(await maddrs(d.nsOf('n1')), 'the agent subscribed again').toContain(V4.clusterMac);
    await oneAnswerEach((o) => d.probe(o), expect4, 'IPv4 after the re-subscription');

    // Continuous probing of both families (every source every 10 ms) through a SIGKILL and a graceful drain.
    const tally = { v4: newTally(), v6: newTally() };
    const s4 = d.probeStream({ periodMs: 10, reportMs: 50, settleMs: 30 }, (r) => record(tally.v4, r));
    const s6 = d.probeStream6({ periodMs: 10, reportMs: 50, settleMs: 30 }, (r) => record(tally.v6, r));
    try {
      await sleep(500);
      d.agents.get('n3')!.signal('SIGKILL');
      const killedAt = Date.now();
      // n3's kernel lets go at its fence deadline (its elements time out); the others take its buckets then.
      const gap = await waitAllAnswered(tally, killedAt, 20_000, 'after SIGKILL of n3', true);
      console.log(`macvlan: SIGKILL of n3: last unanswered probe ${gap} ms after the kill`);
      const drainAt = Date.now();
      const exit = await d.stopAgent('n2', 'SIGTERM');
      expect(exit.code, 'n2 drained and exited').toBe(0);
      await waitAllAnswered(tally, drainAt, 20_000, 'after the drain of n2', false);
    } finally {
      s4.stop();
      s6.stop();
      await sleep(300);
    }
    console.log(
      `macvlan: ${tally.v4.sends + tally.v6.sends} sends; doubles IPv4 ${tally.v4.doubles.length}, IPv6 ${tally.v6.doubles.length}`,
    );
    expect(tally.v4.doubles, 'IPv4 double answers').toEqual([]);
    expect(tally.v6.doubles, 'IPv6 double answers').toEqual([]);
    // One node left: it answers everything of both families.
    await oneAnswerEach((o) => d.probe(o), new Map(d.sources.map((s) => [s, 'n1'])), 'IPv4, n1 alone');
    await oneAnswerEach((o) => d.probe6(o), new Map(d.sources6.map((s) => [s, 'n1'])), 'IPv6, n1 alone');
  });

  it("the router's static entry instead (no arpMangle): one answer per source for both families", async () => {
    if (!existsSync(agentMainPath())) throw new Error(`${agentMainPath()} missing: run \`npm run build\` first`);
    dp = await buildDataplane({ spec: SPEC, sources: 20, link: 'macvlan', resolution: 'static', leaseTtlSeconds: 1 });
    const d = dp;
    const settled = await d.waitSettled({ timeoutMs: 45_000 });
    await waitKernelMatchesClaims(d, V6, 30_000);
    await oneAnswerEach((o) => d.probe(o), await d.expectedOwners(settled.claims), 'IPv4, static entry');
    await oneAnswerEach((o) => d.probe6(o), await d.expectedOwners(undefined, V6), 'IPv6, static entry');
    // The nodes' own replies (their MACs, unmangled) never replace a permanent entry.
    expect(await neighbour(d.topology.clientNs, VIP4)).toMatch(new RegExp(`${V4.clusterMac} PERMANENT`));
    expect(await neighbour(d.topology.clientNs, VIP6)).toMatch(new RegExp(`${V6.clusterMac} PERMANENT`));
  });

  it('IPv6 with the ports hashed: a node resolves the clients it answers (neighbour discovery passes the hash)', async () => {
    if (!existsSync(agentMainPath())) throw new Error(`${agentMainPath()} missing: run \`npm run build\` first`);
    // The client's advertisement answering a node's solicitation is addressed to the VIP; hashed with "ports" (ICMPv6
    // type and checksum), it lands on an arbitrary node, and dropped there the node that asked never answers.
    const spec = validateClusterSpec(
      {
        vips: [
          { address: VIP4, interface: 'eth0', buckets: 16, hashMode: 'sourceip', seed: 0x5eed1234 },
          { address: VIP6, interface: 'eth0', buckets: 16, hashMode: 'sourceip-sourceport', seed: 0x5eed1234 },
        ],
        rebalance: { joinMovesPerInterval: 4, intervalMs: 200 },
      },
      'macvlan ports spec',
    );
    dp = await buildDataplane({ spec, sources: 20, link: 'macvlan', resolution: 'static', leaseTtlSeconds: 1 });
    const d = dp;
    await d.waitSettled({ timeoutMs: 45_000 });
    await waitKernelMatchesClaims(d, spec.vips[1]!, 30_000);
    let unanswered: string[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await d.probe6({ windowMs: 150 });
      expect(
        r.answers.filter((a) => a.udp.length > 1).map((a) => a.source),
        'double answers',
      ).toEqual([]);
      unanswered = r.answers.filter((a) => a.udp.length === 0).map((a) => a.source);
      if (unanswered.length === 0) break;
      await sleep(300);
    }
    expect(unanswered, 'IPv6 sources never answered').toEqual([]);
  });
});

async function waitKernelMatchesClaims(d: Dataplane, vip: VipSpec, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  let why = '';
  while (Date.now() < until) {
    const owners = await d.expectedOwners(undefined, vip);
    const kernel = new Map<string, number[]>();
    for (const n of d.nodes) kernel.set(n, await readOwnedSet(d.nsOf(n), 'clusterip_ha', vip.address));
    why = '';
    for (let b = 1; b <= vip.buckets && !why; b++) {
      const holders = [...kernel].filter(([, l]) => l.includes(b)).map(([n]) => n);
      if (holders.length !== 1) why = `bucket ${b} in the kernel of [${holders.join(', ')}]`;
    }
    if (!why && owners.size === d.sources6.length) return;
    await sleep(200);
  }
  throw new Error(`${vip.address} not settled: ${why || 'sources without a claimed bucket'}`);
}

async function oneAnswerEach(
  probe: (o: { windowMs: number }) => Promise<ProbeResult>,
  expected: Map<string, string>,
  what: string,
): Promise<void> {
  let wrong: string[] = [];
  for (let i = 0; i < 20; i++) {
    const r = await probe({ windowMs: 100 });
    const doubles = r.answers.filter((a) => a.udp.length > 1);
    expect(
      doubles.map((a) => `${a.source}: ${a.udp.join(',')}`),
      `${what}: double answers`,
    ).toEqual([]);
    wrong = r.answers
      .filter((a) => a.udp[0] !== expected.get(a.source))
      .map((a) => `${a.source}: ${a.udp[0] ?? 'none'} (expected ${expected.get(a.source)})`);
    if (wrong.length === 0) return;
    await sleep(200);
  }
  throw new Error(`${what}: ${wrong.length} sources answered wrongly: ${wrong.slice(0, 5).join('; ')}`);
}

interface Tally {
  sends: number;
  doubles: StreamReport['doubles'];
  /** Prober-clock time of the last report in which some source went unanswered. */
  lastSilent: number;
  lastReport: number;
}

const newTally = (): Tally => ({ sends: 0, doubles: [], lastSilent: 0, lastReport: 0 });

function record(t: Tally, r: StreamReport): void {
  t.sends += r.sends;
  t.doubles.push(...r.doubles);
  if (r.sends > 0 && r.silent.some((x) => x > 0)) t.lastSilent = r.t;
  if (r.sends > 0) t.lastReport = r.t;
}

/**
 * Both families: every source answered for a whole second of reports after `after` (and, with `gap`, only after
 * some went unanswered first: a killed node's sources fall silent until its buckets move). Returns the last
 * silence, in ms after `after`.
 */
async function waitAllAnswered(
  t: { v4: Tally; v6: Tally },
  after: number,
  timeoutMs: number,
  what: string,
  gap: boolean,
): Promise<number> {
  const until = Date.now() + timeoutMs;
  const ok = (x: Tally) => (!gap || x.lastSilent > after) && x.lastReport - Math.max(x.lastSilent, after + 300) >= 1000;
  while (Date.now() < until) {
    if (ok(t.v4) && ok(t.v6)) return Math.max(t.v4.lastSilent, t.v6.lastSilent) - after;
    await sleep(100);
  }
  throw new Error(`${what}: sources still unanswered (IPv4 ok ${ok(t.v4)}, IPv6 ok ${ok(t.v6)})`);
}
