// The agent's event-loop delay figures: Node's histogram counts its own sampling interval, which must not show
// up as delay (it made every report of an idle agent a 100 ms "delay" warning).
import { describe, expect, it } from 'vitest';
import type { AgentEvent } from '../../src/agent/events.js';
import { startLoopDelayMonitor } from '../../src/agent/loopDelay.js';

describe('loop delay monitor', () => {
  it('reads an idle loop as (nearly) no delay and a 300 ms block as about 300 ms', async () => {
    const seen: AgentEvent[] = [];
    const stop = startLoopDelayMonitor((e) => seen.push(e), 1000, 100);
    try {
      await new Promise((r) => setTimeout(r, 1050));
      const idle = seen.find((e) => e.event === 'loopDelay');
      expect(idle).toBeDefined();
      if (idle?.event === 'loopDelay') expect(idle.p99Ms).toBeLessThan(50);
      const until = Date.now() + 300;
      while (Date.now() < until) {
        // block the loop on purpose
      }
      await new Promise((r) => setTimeout(r, 1000));
      const blocked = seen.filter((e) => e.event === 'loopDelay').at(-1);
      if (blocked?.event !== 'loopDelay') throw new Error('no loopDelay event after the block');
      expect(blocked.maxMs).toBeGreaterThanOrEqual(200);
      expect(blocked.maxMs).toBeLessThan(600);
    } finally {
      stop();
    }
  });
});
