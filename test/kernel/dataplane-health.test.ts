import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { agentMainPath } from '../../src/localcluster/agentProcess.js';
import { checkExpected, doubleAnswers, foldLateReplies } from '../../src/netns/analysis.js';
import { buildDataplane, type Dataplane } from '../../src/netns/dataplane.js';
import { startMonitor } from '../../src/netns/monitor.js';
import { runTakeover, serviceCheckArgs } from '../../src/netns/scenarios.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// Service health on the real nftables dataplane (DESIGN §14, issue #12): each node's agent checks its own server
// (TCP to the VIP, from inside its namespace). Killing one server must move its sources to the others within
// fall × interval + a handoff with zero double answers; restarting it brings buckets back, again with zero doubles.

const enabled = requireCapability('nftables dataplane', netnsCapability());
const INTERVAL = 200;
const FALL = 2;
const SOURCES = 90;

describe.skipIf(!enabled)('netns dataplane: service health checks', () => {
  let dp: Dataplane | undefined;

  afterEach(async () => {
    const d = dp;
    dp = undefined;
    if (d) console.log(`dataplane teardown: ${(await d.destroy()).toFixed(0)} ms`);
  });

  it('a dead server: its sources are answered by the others after fall × interval and one handoff; it comes back; zero double answers', async () => {
    if (!existsSync(agentMainPath())) throw new Error(`${agentMainPath()} missing: run \`npm run build\` first`);
    dp = await buildDataplane({
      sources: SOURCES,
      leaseTtlSeconds: 2,
      agentArgs: serviceCheckArgs({ vip: '10.77.0.100', intervalMs: INTERVAL, fall: FALL, holdMs: 500 }),
    });
    expect(dp.vip.address).toBe('10.77.0.100');
    await dp.waitSettled({ timeoutMs: 45_000 });

    const r = await runTakeover(dp, { kind: 'service', victim: 'n2', tailMs: 500 });
    console.log(
      `service death n2: ${r.victimSources.length} sources, all answered by survivors at +${r.takeoverMs} ms ` +
        `(fall×interval ${FALL * INTERVAL} ms), ${r.results.length} probes, ${r.doubles.length} double answers`,
    );
    if (process.env.CIPHA_DEBUG_HEALTH) {
      for (const [id, a] of dp.agents)
        for (const l of a.logs())
          if (l.rxAt >= r.faultAt - 450 && l.event !== 'keepaliveAck' && (id === 'n2' || l.event !== 'checkResult'))
            console.log(
              `${id} +${l.rxAt - r.faultAt} t+${Date.parse(String(l.time)) - r.faultAt} ${l.event} ${l.msg} ${JSON.stringify({ ...l, rxAt: undefined, time: undefined, msg: undefined, moves: undefined })}`.slice(
                0,
                300,
              ),
            );
    }
    expect(r.ended).toBe('until');
    expect(r.doubles).toEqual([]);
    expect(r.takeoverMs).not.toBeNull();
    // The target is fall × interval + 100 ms (met on a quiet machine: ~490 ms); `npm run bench` holds it.
    // Here the bound is generous: two other engineers' suites share these 2 cores, and slow timers stretch both the
    // detection and the handoff.
    expect(r.takeoverMs!).toBeLessThanOrEqual(FALL * INTERVAL + 1000);
    // Drained by its checks, never fenced: the agent kept its lease.
    const n2 = dp.agents.get('n2')!;
    expect(n2.logs().some((l) => l.event === 'healthDrain' && l.reason === 'unhealthy:echo')).toBe(true);
    expect(n2.logs().some((l) => l.event === 'fenced')).toBe(false);
    expect(r.othersDisturbed).toEqual([]);

    // Restart it: after rise successes and the hold, the join policy gives n2 buckets back.
    const mon = startMonitor({ probe: dp.probe, probeOptions: { windowMs: 30 }, maxMs: 30_000, maxProbes: 3000 });
    const t0 = Date.now();
    let settledMs = -1;
    try {
      await dp.startServer('n2');
      const settled = await dp.waitSettled({ timeoutMs: 20_000, owners: ['n1', 'n2', 'n3'], stableMs: 500 });
      settledMs = Date.now() - t0;
      await new Promise((res) => setTimeout(res, 300));
      mon.stop();
      const results = foldLateReplies((await mon.done).results);
      const doubles = doubleAnswers(results);
      console.log(
        `service back n2: settled with n2 owning buckets at +${settledMs} ms, ${results.length} probes, ${doubles.length} double answers`,
      );
      expect(doubles).toEqual([]);
      expect([...settled.claims.values()]).toContain('n2');
      expect(checkExpected(await dp.probe({ tcp: true }), await dp.expectedOwners(settled.claims))).toEqual([]);
    } finally {
      mon.stop();
      await mon.done;
    }
  }, 120_000);
});
