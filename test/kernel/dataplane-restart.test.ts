import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { agentMainPath } from '../../src/localcluster/agentProcess.js';
import { doubleAnswers, foldLateReplies, handoffOf, verdictOf } from '../../src/netns/analysis.js';
import { buildDataplane, type Dataplane } from '../../src/netns/dataplane.js';
import { holdConnections } from '../../src/netns/heldTcp.js';
import { startMonitor } from '../../src/netns/monitor.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// Issue 13, DESIGN §13: a planned restart (SIGHUP, `systemctl reload`) of an agent on the nftables backend, under
// the UDP prober: the next process adopts lease, claims and the kernel's set, so no source changes owner and no
// probe goes unanswered, and long-lived TCP connections (to the restarted node and to the others) live through
// every restart: never reset, never answered by another node, echoing to the end. TTL 4 s: the restart must fit before the fence deadline (restartBudgetMs).

const enabled = requireCapability('nftables dataplane', netnsCapability());
const RESTARTS = 10;

describe.skipIf(!enabled)('netns dataplane: hitless agent restart', () => {
  let dp: Dataplane | undefined;
  afterEach(async () => {
    await dp?.destroy();
    dp = undefined;
  });

  it(`SIGHUP and start again ${RESTARTS} times: every source keeps its owner, no probe unanswered`, async () => {
    if (!existsSync(agentMainPath())) throw new Error(`${agentMainPath()} missing: run \`npm run build\` first`);
    dp = await buildDataplane({ sources: 30, leaseTtlSeconds: 4 });
    const d = dp;
    const settled = await d.waitSettled({ timeoutMs: 45_000 });
    const owners = await d.expectedOwners(settled.claims);
    const onN2 = d.sources.filter((s) => owners.get(s) === 'n2');
    const elsewhere = d.sources.filter((s) => owners.get(s) !== 'n2').slice(0, 4);
    expect(onN2.length).toBeGreaterThan(0);
    const held = await holdConnections({
      ns: d.topology.clientNs,
      sources: [...onN2, ...elsewhere],
      vip: d.vip.address,
    });
    const mon = startMonitor({
      probe: d.probe,
      probeOptions: { windowMs: 30, tcp: true, tcpTimeoutMs: 300 },
      maxMs: 60_000,
      maxProbes: 4000,
    });
    try {
      for (let i = 0; i < RESTARTS; i++) {
        const exit = await d.stopAgent('n2', 'SIGHUP');
        expect(exit.code, `restart ${i}: exit after SIGHUP`).toBe(0);
        const a = d.startAgent('n2');
        await a.waitForLog((l) => l.event === 'started', 15_000);
        expect(a.logs().find((l) => l.event === 'sessionStarted')?.adopted, `restart ${i}: adopted`).toBe(true);
        await new Promise((r) => setTimeout(r, 300));
      }
      const conns = await held.report();
      console.log(
        `restart: ${conns.length} held TCP connections (${onN2.length} to n2), ` +
          `${conns.reduce((a, c) => a + c.echoed, 0)} echoes`,
      );
      for (const c of conns) {
        const at = `connection from ${c.source}`;
        expect(c.node, at).toBe(owners.get(c.source));
        expect({ error: c.error, closed: c.closed, wrongNode: c.wrongNode }, at).toEqual({
          error: null,
          closed: false,
          wrongNode: 0,
        });
        // Echoing through the restarts (sent every 100 ms): one in flight at most, and still answering now.
        expect(c.echoed, at).toBeGreaterThan(RESTARTS * 5);
        expect(c.sent - c.echoed, at).toBeLessThanOrEqual(2);
        expect(c.silentMs!, at).toBeLessThan(1000);
      }
    } finally {
      mon.stop();
      await held.stop();
    }
    const results = foldLateReplies((await mon.done).results);
    expect(results.length).toBeGreaterThan(20);
    expect(doubleAnswers(results)).toEqual([]);
    const moved = d.sources.map((s) => ({ s, h: handoffOf(results, s) })).filter((x) => x.h.kind !== 'stayed');
    expect(moved).toEqual([]);
    const unanswered = results.flatMap((r) =>
      r.udpProbed ? r.answers.filter((a) => verdictOf(a.udp).kind === 'none').map((a) => a.source) : [],
    );
    // New TCP connections too: each probe's connect is accepted by the source's one owner.
    const tcpFailed = results.flatMap((r) =>
      r.tcpProbed
        ? r.answers.filter((a) => a.tcp !== owners.get(a.source)).map((a) => `${a.source}:${a.tcpError}`)
        : [],
    );
    console.log(
      `restart: ${RESTARTS} restarts, ${results.length} probes, ${unanswered.length} unanswered, ` +
        `${tcpFailed.length} TCP connects not accepted by the owner`,
    );
    expect(unanswered).toEqual([]);
    expect(tcpFailed).toEqual([]);
  }, 180_000);
});
