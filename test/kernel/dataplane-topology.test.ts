import { test } from 'vitest';
import { createTopology } from '../../src/netns/topology.js';
import { startNodeServer } from '../../src/netns/servers.js';
import { startProber } from '../../src/netns/prober.js';
import { applyStaticRuleset } from '../../src/netns/staticRuleset.js';
import { startEtcdInNs } from '../../src/netns/etcdNs.js';

test('smoke', async () => {
  const topo = await createTopology({});
  console.log('setup', topo.setupMs);
  const stops: (() => Promise<void>)[] = [];
  try {
    const etcd = await startEtcdInNs({ ns: topo.etcdNs!, address: topo.etcdAddress, port: 2379 });
    stops.push(etcd.stop);
    console.log('etcd', etcd.harnessEndpoint);
    for (const n of topo.nodes) {
      const s = await startNodeServer({ ns: n.ns, node: n.name, vip: topo.vip, udpPort: 7000, tcpPort: 7001 });
      stops.push(s.stop);
    }
    const o = { table: 't', vip: topo.vip, buckets: 6, seed: 0x5eed1234 };
    await applyStaticRuleset(topo.nodes[0]!.ns, o, [1, 2]);
    await applyStaticRuleset(topo.nodes[1]!.ns, o, [3, 4]);
    await applyStaticRuleset(topo.nodes[2]!.ns, o, [5, 6]);
    const p = await startProber({ ns: topo.clientNs, sources: topo.sources, vip: topo.vip, udpPort: 7000, tcpPort: 7001 });
    stops.push(p.stop);
    for (let k = 0; k < 3; k++) {
      const t = performance.now();
      const r = await p.probe({ tcp: k > 0, windowMs: 30 });
      const counts: Record<string, number> = {};
      for (const a of r.answers) { const key = a.udp.join('+') + '/' + a.tcp + '/' + a.tcpError; counts[key] = (counts[key] ?? 0) + 1; }
      console.log(performance.now() - t, JSON.stringify(counts), r.late.length);
    }
  } finally {
    for (const s of stops.reverse()) await s();
    console.log('teardown', await topo.destroy());
  }
});
