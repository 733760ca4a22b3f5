import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { agentMainPath } from '../../src/localcluster/agentProcess.js';
import { doubleAnswers, foldLateReplies, handoffOf } from '../../src/netns/analysis.js';
import { buildDataplane, type Dataplane } from '../../src/netns/dataplane.js';
import { startMonitor } from '../../src/netns/monitor.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// Issue 9, hole 5: after a link cut long enough to lose its lease heals, the victim re-registers, the leader
// hands it its join moves at once and the old owners release — but the victim acquired only 1.5–3.1 s later:
// its picture of etcd was stale (a watch still on the dead connection), so those sources were black-holed. A
// node is now assignable only once its own watch has delivered its registration. Every source that moves back
// to it must be answered again within 300 ms, like any planned move. Measured here (link down, TTL 2): without
// the catch-up the longest gap was 347 / 564 / 596 ms in three runs, with it 170 / 177 ms.

const enabled = requireCapability('nftables dataplane', netnsCapability());
const TTL_S = 2;
const GAP_BOUND_MS = 300;

describe.skipIf(!enabled)('netns dataplane: a node rejoins after its control link heals', () => {
  let dp: Dataplane | undefined;
  afterEach(async () => {
    await dp?.destroy();
    dp = undefined;
  });

  it.each(['linkDown', 'blackhole'] as const)(
    '%s: every source moved back to it is answered again within 300 ms',
    async (mode) => {
      if (!existsSync(agentMainPath())) throw new Error(`${agentMainPath()} missing: run \`npm run build\` first`);
      dp = await buildDataplane({
        sources: 60,
        leaseTtlSeconds: TTL_S,
        ...(process.env.REJOIN_LOGS ? { logDir: process.env.REJOIN_LOGS } : {}),
      });
      const d = dp;
      await d.waitSettled({ timeoutMs: 45_000 });
      await d.cutControl('n1', mode);
      // Past the lease: n1's node key is gone and the survivors own everything.
      for (let i = 0; i < 200 && (await d.etcd.get(d.keys.node('n1')).string()) !== null; i++)
        await new Promise((r) => setTimeout(r, 50));
      expect(await d.etcd.get(d.keys.node('n1')).string()).toBeNull();
      await d.waitSettled({ timeoutMs: 20_000, owners: ['n2', 'n3'], stableMs: 500 });
      const mon = startMonitor({ probe: d.probe, probeOptions: { windowMs: 30 }, maxMs: 30_000, maxProbes: 3000 });
      let healedAt = 0;
      try {
        await new Promise((r) => setTimeout(r, 300));
        healedAt = Date.now();
        await d.healControl('n1');
        await d.waitSettled({ timeoutMs: 25_000, owners: ['n1', 'n2', 'n3'], stableMs: 1000 });
      } finally {
        mon.stop();
      }
      const results = foldLateReplies((await mon.done).results);
      expect(doubleAnswers(results)).toEqual([]);
      const back = d.sources
        .map((s) => ({ s, h: handoffOf(results, s) }))
        .filter((x) => x.h.kind === 'clean' && x.h.to === 'n1');
      const kinds = d.sources.map((s) => handoffOf(results, s));
      console.log(`handoffs: ${JSON.stringify(kinds.slice(0, 8))}; ${results.length} probes`);
      expect(back.length).toBeGreaterThan(0);
      const gaps = back.map((x) => (x.h.kind === 'clean' ? x.h.gapMs : Infinity));
      console.log(
        `rejoin (${mode}): ${back.length} sources moved back to n1 after the heal; longest gap ${Math.max(...gaps)} ms, ` +
          `first at +${Math.min(...back.map((x) => (x.h.kind === 'clean' ? x.h.firstToT : 0))) - healedAt} ms`,
      );
      expect(back.filter((x) => x.h.kind === 'clean' && x.h.gapMs > GAP_BOUND_MS)).toEqual([]);
      // Nothing else moved more than once or went to a third node.
      expect(d.sources.map((s) => handoffOf(results, s)).filter((h) => h.kind === 'unclean')).toEqual([]);
    },
    120_000,
  );
});
