import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Coalescer } from '../../src/coalesce.js';

// The one coalescing loop: kicks merge, runs never overlap, a kick during a run gets exactly one run after it.

const tick = () => new Promise((r) => setImmediate(r));

describe('Coalescer', () => {
  it('merges kicks before a run, and reruns once for any number of kicks during one', async () => {
    let runs = 0;
    let release: (() => void) | undefined;
    const c = new Coalescer(async () => {
      runs++;
      await new Promise<void>((r) => (release = r));
    });
    c.kick();
    c.kick();
    c.kick();
    await tick();
    expect(runs).toBe(1);
    c.kick();
    c.kick(); // during the run
    release!();
    await tick();
    await tick();
    expect(runs).toBe(2);
    release!();
    await c.settle();
    await tick();
    expect(runs).toBe(2); // nothing kicked during the second run
  });

  it('never overlaps runs and never loses a kick, for any interleaving', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 30 }), async (gaps) => {
        let active = 0;
        let maxActive = 0;
        let runs = 0;
        let lastKick = 0;
        let lastRunStart = 0;
        let seq = 0;
        const c = new Coalescer(async () => {
          active++;
          maxActive = Math.max(maxActive, active);
          runs++;
          lastRunStart = seq;
          await tick();
          active--;
        });
        for (const g of gaps) {
          lastKick = ++seq;
          c.kick();
          for (let i = 0; i < g; i++) await tick();
        }
        for (let i = 0; i < 10; i++) await tick();
        await c.settle();
        expect(maxActive).toBe(1);
        expect(runs).toBeGreaterThan(0);
        expect(runs).toBeLessThanOrEqual(gaps.length);
        // The last kick was served by a run that started at or after it.
        expect(lastRunStart).toBeGreaterThanOrEqual(lastKick);
      }),
      { numRuns: 100 },
    );
  });

  it('waits delayMs, and stop() cancels what is waiting', async () => {
    let runs = 0;
    const c = new Coalescer(
      async () => {
        runs++;
      },
      { delayMs: () => 30 },
    );
    c.kick();
    await new Promise((r) => setTimeout(r, 5));
    expect(runs).toBe(0);
    await new Promise((r) => setTimeout(r, 60));
    expect(runs).toBe(1);
    c.kick();
    c.stop();
    await new Promise((r) => setTimeout(r, 60));
    expect(runs).toBe(1);
  });

  it('reports a run that threw and keeps going', async () => {
    const errors: unknown[] = [];
    let runs = 0;
    const c = new Coalescer(
      async () => {
        runs++;
        if (runs === 1) throw new Error('boom');
      },
      { onError: (e) => errors.push(e) },
    );
    c.kick();
    await tick();
    await c.settle();
    c.kick();
    await tick();
    await c.settle();
    expect(runs).toBe(2);
    expect(errors).toHaveLength(1);
  });
});
