import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadClusterState } from '../../src/etcd/store.js';
import { writeSpec } from '../../src/etcd/spec.js';
import { hashIdentity } from '../../src/hash/identity.js';
import { agentMainPath } from '../../src/localcluster/agentProcess.js';
import { doubleAnswers, foldLateReplies } from '../../src/netns/analysis.js';
import { buildDataplane, defaultDataplaneSpec, type Dataplane } from '../../src/netns/dataplane.js';
import { startMonitor } from '../../src/netns/monitor.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

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
