import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WATCH_LAG_ENV, loadClusterState, type ClusterState } from '../../src/etcd/store.js';
import { writeSpec } from '../../src/etcd/spec.js';
import { hashIdentity } from '../../src/hash/identity.js';
import { agentMainPath } from '../../src/localcluster/agentProcess.js';
import { doubleAnswers, foldLateReplies } from '../../src/netns/analysis.js';
import { buildDataplane, defaultDataplaneSpec, type Dataplane } from '../../src/netns/dataplane.js';
import { startMonitor } from '../../src/netns/monitor.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// Issue 9, hole 1 (DESIGN §12): a new seed went straight to each node's `nft` while the others still hashed with
// the old one, so for as long as one node's rule switch lagged, bucket x under the old seed and bucket y under the
// new one both matched some clients: two nodes answered them. Here n2's `nft` sleeps 1.5 s on every batch that
// flushes the chain (the rule switch); the UDP prober runs through the whole change and must never see two
// answers to one source.

const enabled = requireCapability('nftables dataplane', netnsCapability());
const SLOW_NFT = `#!/bin/sh
if [ "$1" = "-f" ] && [ "$2" = "-" ]; then
  input=$(cat)
  case "$input" in *"flush chain"*) sleep 1.5 ;; esac
  printf '%s\\n' "$input" | exec nft "$@"
fi
exec nft "$@"
`;

describe.skipIf(!enabled)('netns dataplane: changing the hash', () => {
  let dp: Dataplane | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await dp?.destroy();
    dp = undefined;
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a new seed, with one node slow to switch its rule: zero double answers, every source served after', async () => {
    if (!existsSync(agentMainPath())) throw new Error(`${agentMainPath()} missing: run \`npm run build\` first`);
    dir = await mkdtemp(join(tmpdir(), 'cipha-rehash-'));
    const slow = join(dir, 'slow-nft');
    await writeFile(slow, SLOW_NFT);
    await chmod(slow, 0o755);
    const spec = defaultDataplaneSpec();
    dp = await buildDataplane({
      sources: 60,
      leaseTtlSeconds: 2,
      spec,
      agentArgsOf: (node) => (node === 'n2' ? ['--nft-path', slow] : []),
    });
    await dp.waitSettled({ timeoutMs: 45_000 });
    const d = dp;
    const vip = spec.vips[0]!;
    const next = { ...spec, vips: [{ ...vip, seed: (vip.seed ^ 0x0badcafe) >>> 0 }, ...spec.vips.slice(1)] };
    const mon = startMonitor({ probe: d.probe, probeOptions: { windowMs: 30 }, maxMs: 20_000, maxProbes: 2000 });
    let appliedAt = 0;
    try {
      await new Promise((r) => setTimeout(r, 500));
      const cur = await loadClusterState(d.etcd, d.keys);
      appliedAt = Date.now();
      await writeSpec(d.etcd, d.keys, next, { expectModRevision: cur.spec?.modRevision ?? 'absent' });
      // Settled again under the new identity: every bucket assigned, claimed and in exactly its owner's kernel.
      for (let i = 0; i < 300; i++) {
        const st = await loadClusterState(d.etcd, d.keys);
        const a = st.assignments.get(vip.address)?.value;
        if (a?.hash === hashIdentity(next.vips[0]!) && Object.keys(a.owners).length === vip.buckets) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      await d.waitSettled({ timeoutMs: 20_000, stableMs: 500 });
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      mon.stop();
    }
    const results = foldLateReplies((await mon.done).results);
    const during = results.filter((r) => r.t0 >= appliedAt - 500);
    expect(during.length).toBeGreaterThan(20);
    expect(doubleAnswers(during)).toEqual([]);
    // After the barrier every source is answered by exactly one node again.
    const last = during[during.length - 1]!;
    expect(last.answers.filter((a) => a.udp.length !== 1)).toEqual([]);
    // Without the barrier this run showed 567 double answers (n2 hashed with the old seed for 1.5 s).
    console.log(`rehash: ${during.length} probes, last at +${last.t0 - appliedAt} ms`);
  }, 120_000);
});

// Issue 9, the remaining hole: a node whose picture lags etcd acts on an assignment of the old seed after the
// barrier passed without it (it held nothing), so its kernel answers by the old seed while the survivor answers by
// the new one. n3's watch lags 900 ms (WATCH_LAG_ENV); it joins with nothing (k = 0), gets the orphans of a killed
// node, and the seed changes 450 ms after that assignment. The acquire txn compares the spec key's mod revision
// with the spec n3's kernel runs, so n3 acquires only once it runs the new seed.
describe.skipIf(!enabled)('netns dataplane: a spec change a lagging node sees late', () => {
  let dp: Dataplane | undefined;
  afterEach(async () => {
    await dp?.destroy();
    dp = undefined;
  });

  it('a new seed while a lagging node takes orphans: zero double answers', async () => {
    if (!existsSync(agentMainPath())) throw new Error(`${agentMainPath()} missing: run \`npm run build\` first`);
    const LAG_MS = 900;
    const base = defaultDataplaneSpec('10.77.0.100', 12);
    const spec = { ...base, rebalance: { ...base.rebalance, joinMovesPerInterval: 0 } };
    dp = await buildDataplane({
      sources: 60,
      leaseTtlSeconds: 2,
      spec: base,
      agents: false,
      agentEnvOf: (node) => (node === 'n3' ? { [WATCH_LAG_ENV]: String(LAG_MS) } : {}),
    });
    const d = dp;
    d.startAgent('n1');
    d.startAgent('n2');
    await d.waitSettled({ timeoutMs: 45_000, owners: ['n1', 'n2'] });
    const st = (): Promise<ClusterState> => loadClusterState(d.etcd, d.keys);
    // No join moves from now on (the same hash identity: no barrier).
    await writeSpec(d.etcd, d.keys, spec, { expectModRevision: (await st()).spec?.modRevision ?? 'absent' });
    d.startAgent('n3');
    // Registered and assignable (its catching-up registration done).
    const ready = async (): Promise<boolean> => {
      const n = (await st()).nodes.get('n3');
      return n !== undefined && n.value.notReady === undefined;
    };
    for (let i = 0; i < 400 && !(await ready()); i++) await sleep(50);
    const leader = (await st()).leader;
    const victim = leader === 'n1' ? 'n2' : 'n1';
    const survivor = victim === 'n1' ? 'n2' : 'n1';
    const vip = spec.vips[0]!;
    const next = { ...spec, vips: [{ ...vip, seed: (vip.seed ^ 0x0badcafe) >>> 0 }] };
    const mon = startMonitor({ probe: d.probe, probeOptions: { windowMs: 30 }, maxMs: 30_000, maxProbes: 3000 });
    let appliedAt = 0;
    try {
      await d.stopAgent(victim, 'SIGKILL');
      // The victim's orphans go to n3 (least loaded) under the old seed.
      for (let i = 0; i < 2000; i++) {
        const a = (await st()).assignments.get(vip.address)?.value.owners ?? {};
        if (Object.values(a).includes('n3')) break;
        await sleep(5);
      }
      await sleep(LAG_MS / 2);
      const cur = await st();
      appliedAt = Date.now();
      await writeSpec(d.etcd, d.keys, next, { expectModRevision: cur.spec?.modRevision ?? 'absent' });
      for (let i = 0; i < 300; i++) {
        const a = (await st()).assignments.get(vip.address)?.value;
        if (a?.hash === hashIdentity(next.vips[0]!) && Object.keys(a.owners).length === vip.buckets) break;
        await sleep(50);
      }
      await d.waitSettled({ timeoutMs: 20_000, stableMs: 500, owners: [survivor, 'n3'] });
      await sleep(1000);
    } finally {
      mon.stop();
    }
    const results = foldLateReplies((await mon.done).results);
    const during = results.filter((r) => r.t0 >= appliedAt - 500);
    expect(during.length).toBeGreaterThan(20);
    const doubles = doubleAnswers(during);
    console.log(
      `lagging node: ${during.length} probes, ${doubles.length} double answers` +
        (doubles.length > 0
          ? ` from +${doubles[0]!.t - appliedAt} to +${doubles[doubles.length - 1]!.t - appliedAt} ms`
          : ''),
    );
    // With the acquire's spec compare (and the kernel gate's checks) disabled this run showed 56 double answers,
    // from +483 to +889 ms: n3 answered by the old seed for as long as its picture lagged.
    expect(doubles).toEqual([]);
  }, 150_000);
});
