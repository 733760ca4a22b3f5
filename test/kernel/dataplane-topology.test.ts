import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nftablesBucket } from '../../src/hash/index.js';
import { checkExpected, doubleAnswers, foldLateReplies, summarizeProbe } from '../../src/netns/analysis.js';
import { ETCD_CLIENT_PORT, SERVER_TCP_PORT, SERVER_UDP_PORT } from '../../src/netns/addressing.js';
import { startEtcdInNs, type NsEtcd } from '../../src/netns/etcdNs.js';
import { startProber, type ProbeResult, type Prober } from '../../src/netns/prober.js';
import { tcpReach } from '../../src/netns/reach.js';
import { startNodeServer, type NodeServer } from '../../src/netns/servers.js';
import { applyStaticRuleset, setStaticOwned, type StaticRulesetOptions } from '../../src/netns/staticRuleset.js';
import { createTopology, type Topology } from '../../src/netns/topology.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// The dataplane on its own, without agents: namespaces, bridges, cluster MAC, servers and prober, with a
// hand-written DESIGN §7 ruleset in each node. Proves that what the agent tests observe is the kernel's doing.

const enabled = requireCapability('nftables dataplane', netnsCapability());
const BUCKETS = 12;
const SEED = 0x5eed1234;

describe.skipIf(!enabled)('netns dataplane: topology, servers, prober (static rulesets)', () => {
  let topo: Topology;
  let etcd: NsEtcd | undefined;
  let prober: Prober | undefined;
  const servers: NodeServer[] = [];
  let rules: StaticRulesetOptions;
  // bucket → node under the static partition: n1 gets 1..4, n2 5..8, n3 9..12.
  const ownerOf = (b: number): string => `n${Math.ceil(b / 4)}`;
  const ownedBy = (node: string): number[] =>
    Array.from({ length: BUCKETS }, (_, i) => i + 1).filter((b) => ownerOf(b) === node);
  const expected = (): Map<string, string> =>
    new Map(topo.sources.map((s) => [s, ownerOf(nftablesBucket(s, BUCKETS, SEED, 1))]));

  beforeAll(async () => {
    topo = await createTopology({ nodes: ['n1', 'n2', 'n3'], sources: 96 });
    console.log(`setup of ${topo.nodes.length + 3} namespaces: ${topo.setupMs.toFixed(0)} ms`);
    try {
      rules = { table: 'cipha_static', vip: topo.vip, buckets: BUCKETS, seed: SEED };
      for (const n of topo.nodes) {
        await applyStaticRuleset(n.ns, rules, ownedBy(n.name));
        servers.push(
          await startNodeServer({
            ns: n.ns,
            node: n.name,
            vip: topo.vip,
            udpPort: SERVER_UDP_PORT,
            tcpPort: SERVER_TCP_PORT,
          }),
        );
      }
      prober = await startProber({
        ns: topo.clientNs,
        sources: topo.sources,
        vip: topo.vip,
        udpPort: SERVER_UDP_PORT,
        tcpPort: SERVER_TCP_PORT,
      });
      etcd = await startEtcdInNs({ ns: topo.etcdNs!, address: topo.etcdAddress, port: ETCD_CLIENT_PORT });
    } catch (err) {
      await teardown();
      throw err;
    }
  });

  const teardown = async (): Promise<void> => {
    await Promise.all([...servers.map((s) => s.stop()), prober?.stop(), etcd?.stop()]);
    const ms = await topo?.destroy();
    console.log(`teardown: ${ms?.toFixed(0)} ms`);
  };
  afterAll(teardown);

  it('answers every source from exactly one node, the one the nftables hash predicts (UDP and TCP)', async () => {
    // Every node has at least one bucket with sources, or the check would be weaker than it looks.
    const exp = expected();
    expect(new Set(exp.values())).toEqual(new Set(['n1', 'n2', 'n3']));
    for (let i = 0; i < 5; i++) {
      const r = await prober!.probe({ tcp: true, windowMs: 60 });
      expect(checkExpected(r, exp)).toEqual([]);
      expect(summarizeProbe(r)).toEqual({ one: 96, none: 0, double: 0, repeated: 0 });
    }
  });

  it('sees a double owner as two UDP answers, and an unowned bucket as none', async () => {
    // Make n2 also own bucket 1 (n1's): the prober must report both nodes for bucket 1's sources.
    const victims = topo.sources.filter((s) => nftablesBucket(s, BUCKETS, SEED, 1) === 1);
    expect(victims.length).toBeGreaterThan(0);
    await setStaticOwned(topo.node('n2').ns, rules, [...ownedBy('n2'), 1]);
    const r = await prober!.probe({ windowMs: 60 });
    const doubles = doubleAnswers([r]);
    expect(doubles.map((d) => d.source).sort()).toEqual([...victims].sort());
    expect(doubles.every((d) => d.nodes.join(',') === 'n1,n2')).toBe(true);

    // Now nobody owns bucket 1.
    await setStaticOwned(topo.node('n2').ns, rules, ownedBy('n2'));
    await setStaticOwned(
      topo.node('n1').ns,
      rules,
      ownedBy('n1').filter((b) => b !== 1),
    );
    const r2 = await prober!.probe({ windowMs: 60, tcp: true, tcpTimeoutMs: 300 });
    const silent = r2.answers.filter((a) => a.udp.length === 0);
    expect(silent.map((a) => a.source).sort()).toEqual([...victims].sort());
    expect(silent.every((a) => a.tcp === null && a.tcpError === 'timeout')).toBe(true);

    await setStaticOwned(topo.node('n1').ns, rules, ownedBy('n1'));
    expect(checkExpected(await prober!.probe({ tcp: true }), expected())).toEqual([]);
  });

  it('cuts and heals a node control link: etcd unreachable from the node, clients still served', async () => {
    const n2 = topo.node('n2');
    expect(await tcpReach(n2.ns, topo.etcdAddress, ETCD_CLIENT_PORT)).toBe('ok');
    for (const mode of ['blackhole', 'linkDown'] as const) {
      await topo.cutControl('n2', mode);
      const reach = await tcpReach(n2.ns, topo.etcdAddress, ETCD_CLIENT_PORT, 800);
      expect(reach).not.toBe('ok');
      // Others still reach etcd, and the client still reaches n2 on the LAN.
      expect(await tcpReach(topo.node('n1').ns, topo.etcdAddress, ETCD_CLIENT_PORT)).toBe('ok');
      expect(checkExpected(await prober!.probe({ tcp: true }), expected())).toEqual([]);
      await topo.healControl('n2');
      expect(await tcpReach(n2.ns, topo.etcdAddress, ETCD_CLIENT_PORT, 3000)).toBe('ok');
    }
  });

  it('probes 96 sources many times per second', async () => {
    const t = performance.now();
    const results: ProbeResult[] = [];
    for (let i = 0; i < 20; i++) results.push(await prober!.probe({ windowMs: 20 }));
    const perSecond = results.length / ((performance.now() - t) / 1000);
    // One more probe with a long window reports any reply that missed its 20 ms window (a loaded machine).
    results.push(await prober!.probe({ windowMs: 300 }));
    for (const r of foldLateReplies(results))
      expect(summarizeProbe(r)).toEqual({ one: 96, none: 0, double: 0, repeated: 0 });
    console.log(`prober: ${perSecond.toFixed(1)} probes/s of 96 sources (20 ms window)`);
    expect(perSecond).toBeGreaterThan(2); // liveness only; speed is a benchmark figure
  });

  it('never creates anything in the root namespace', () => {
    // Every interface the topology made lives in one of its namespaces.
    const rootIfaces = readdirSync('/sys/class/net');
    for (const name of ['br0', 'br1', 'p-client', 'p-etcd', 'p-n1', 'c-n1', 'ctl0']) {
      expect(rootIfaces).not.toContain(name);
    }
  });
});
