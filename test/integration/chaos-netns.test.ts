import { describe, expect, it } from 'vitest';
import { runChaos } from '../../src/chaos/run.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// `chaos --dataplane netns`: agents with the nftables backend in network namespaces, kernel sets as the backend
// source and UDP probes from every client source as the dataplane source. A short fixed-seed run; no packet may
// be answered by two nodes and the assignment must converge. Needs root and `npm run build`.

const run = requireCapability('chaos --dataplane netns', netnsCapability());

describe.runIf(run)('chaos on the nftables dataplane (netns)', () => {
  it('seed 5: no double reply, no violation, converged', async () => {
    const { exitCode, report, text } = await runChaos({
      seed: 5,
      agents: 4,
      durationSeconds: 20,
      dataplane: 'netns',
      log: () => undefined,
      progress: () => undefined,
    });
    console.log(text);
    expect(report.dataplane).toBe('netns');
    const counts = report.dataplaneCounts ?? {};
    expect(counts.probes).toBeGreaterThan(20);
    expect(counts.doubleReplies).toBe(0);
    expect(report.violations).toEqual([]);
    expect(report.converged).toBe(true);
    expect(exitCode).toBe(0);
    // Probes really reached owners: most probed sources got an answer.
    expect(counts.sourcesProbed! - counts.unanswered!).toBeGreaterThan(counts.sourcesProbed! / 2);
  }, 240_000);
});
