import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RepeatFilter } from '../../src/log/repeats.js';

describe('RepeatFilter', () => {
  it('logs the first, holds identical ones back for the window, then logs with the count', () => {
    const f = new RepeatFilter(1000);
    expect(f.check('a', 0)).toEqual({ log: true, repeated: 0 });
    expect(f.check('a', 10).log).toBe(false);
    expect(f.check('a', 999).log).toBe(false);
    expect(f.check('b', 999)).toEqual({ log: true, repeated: 0 }); // another kind is news
    expect(f.check('a', 1000)).toEqual({ log: true, repeated: 2 });
    expect(f.check('a', 1500).log).toBe(false);
  });

  it('never stays silent longer than the window for a key that keeps repeating, and counts every line', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 400 }), { minLength: 1, maxLength: 200 }), (steps) => {
        const f = new RepeatFilter(1000);
        let t = 0;
        let lastLogged = -Infinity;
        let logged = 0;
        let counted = 0;
        for (const dt of steps) {
          t += dt;
          const v = f.check('k', t);
          if (v.log) {
            expect(t - lastLogged).toBeGreaterThanOrEqual(1000); // at most one line per window
            lastLogged = t;
            logged++;
            counted += v.repeated;
          } else expect(t - lastLogged).toBeLessThan(1000);
        }
        const held = steps.length - logged;
        expect(counted).toBeLessThanOrEqual(held);
      }),
    );
  });
});
