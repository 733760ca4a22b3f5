import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assignableNodes } from '../../src/health/leader.js';
import { assignable, decidePanic, type HealthNode } from '../../src/health/panic.js';
import {
  decideDrain,
  initialCheckState,
  stepCheck,
  type CheckPhase,
  type HealthDrain,
  type ProbeResult,
} from '../../src/health/state.js';

const okR: ProbeResult = { ok: true, durationMs: 1, output: '' };
const badR: ProbeResult = { ok: false, durationMs: 1, failure: 'refused', output: 'ECONNREFUSED' };

/** Run a sequence of results through the state machine, one per `interval` ms. */
function run(initial: CheckPhase, results: boolean[], rise: number, fall: number, flapWindowMs = 0) {
  let s = initialCheckState(initial, 0);
  const states: CheckPhase[] = [];
  let transitions = 0;
  let flaps = 0;
  results.forEach((ok, i) => {
    const step = stepCheck(s, ok ? okR : badR, { rise, fall, flapWindowMs }, (i + 1) * 100);
    s = step.next;
    if (step.transition) transitions++;
    if (step.flap) flaps++;
    states.push(s.state);
  });
  return { s, states, transitions, flaps };
}

describe('check state machine (rise/fall)', () => {
  it('examples: fall 2 rise 3 from up', () => {
    const { states } = run('up', [false, true, false, false, true, true, false, true, true, true], 3, 2);
    expect(states).toEqual(['up', 'up', 'up', 'down', 'down', 'down', 'down', 'down', 'down', 'up']);
  });

  it('starts in the initial state and keeps it until the first rise/fall streak', () => {
    expect(initialCheckState('down', 5)).toMatchObject({ state: 'down', since: 5, transitions: 0 });
    expect(run('down', [true], 2, 1).states).toEqual(['down']);
    expect(run('down', [true, true], 2, 1).states).toEqual(['down', 'up']);
  });

  it('property: the state changes exactly after rise (fall) consecutive opposite results', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<CheckPhase>('up', 'down'),
        fc.array(fc.boolean(), { maxLength: 60 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 5 }),
        (initial, results, rise, fall) => {
          const { states } = run(initial, results, rise, fall);
          // Reference model: count the run of results against the current state.
          let state = initial;
          let streak = 0;
          results.forEach((ok, i) => {
            const against = state === 'up' ? !ok : ok;
            streak = against ? streak + 1 : 0;
            if (streak >= (state === 'up' ? fall : rise)) {
              state = state === 'up' ? 'down' : 'up';
              streak = 0;
            }
            expect(states[i]).toBe(state);
          });
        },
      ),
    );
  });

  it('property: never changes on fewer than min(rise, fall) results; flaps ≤ transitions', () => {
    fc.assert(
      fc.property(
        fc.array(fc.boolean(), { maxLength: 60 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 0, max: 2000 }),
        (results, rise, fall, win) => {
          const { states, transitions, flaps, s } = run('up', results, rise, fall, win);
          let lastChange = -1;
          states.forEach((st, i) => {
            const prev = i === 0 ? 'up' : states[i - 1];
            if (st !== prev) {
              expect(i - lastChange).toBeGreaterThanOrEqual(Math.min(rise, fall));
              lastChange = i;
            }
          });
          expect(s.transitions).toBe(transitions);
          expect(flaps).toBeLessThanOrEqual(Math.max(0, transitions - 1));
          if (win <= Math.min(rise, fall) * 100 - 1) expect(flaps).toBe(0);
        },
      ),
    );
  });

  it('counts a transition within the flap window as a flap', () => {
    // fall 1 rise 1 at 100 ms per result: every flip transitions, 100 ms apart.
    expect(run('up', [false, true, false, true], 1, 1, 150).flaps).toBe(3);
    expect(run('up', [false, true, false, true], 1, 1, 50).flaps).toBe(0);
  });
});

describe('drain decision with hold time', () => {
  const none: HealthDrain = { drained: false };

  it('drains at once, keeps maintenance first, undrains only after the hold', () => {
    const a = decideDrain(none, { down: ['web'], maintenance: false, now: 1000, holdMs: 500 });
    expect(a).toEqual({ next: { drained: true, reason: 'unhealthy:web', since: 1000 }, change: 'drain' });
    const b = decideDrain(a.next, { down: ['web'], maintenance: true, now: 1100, holdMs: 500 });
    expect(b).toEqual({ next: { drained: true, reason: 'maintenance', since: 1000 }, change: 'reason' });
    expect(decideDrain(b.next, { down: [], maintenance: false, now: 1200, holdMs: 500 })).toEqual({
      next: b.next,
      change: 'hold',
      holdLeftMs: 300,
    });
    expect(decideDrain(b.next, { down: [], maintenance: false, now: 1500, holdMs: 500 })).toEqual({
      next: none,
      change: 'undrain',
    });
  });

  it('a drain the node starts in (initial: down, maintenance file) has no hold: it serves once the checks pass', () => {
    const a = decideDrain(none, { down: ['web'], maintenance: false, now: 50, holdMs: 10_000, initial: true });
    expect(a.change).toBe('drain');
    expect(decideDrain(a.next, { down: [], maintenance: false, now: 450, holdMs: 10_000 }).change).toBe('undrain');
  });

  it('property: undrains never sooner than holdMs after the drain; drains follow the checks at once', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ bad: fc.boolean(), maint: fc.boolean(), dt: fc.integer({ min: 0, max: 400 }) }), {
          maxLength: 80,
        }),
        fc.integer({ min: 0, max: 2000 }),
        (steps, holdMs) => {
          let h: HealthDrain = none;
          let now = 0;
          let drainedAt: number | null = null;
          let drains = 0;
          for (const st of steps) {
            now += st.dt;
            const r = decideDrain(h, { down: st.bad ? ['c'] : [], maintenance: st.maint, now, holdMs });
            const want = st.bad || st.maint;
            if (want) expect(r.next.drained).toBe(true);
            if (r.change === 'drain') {
              drains++;
              drainedAt = now;
            }
            if (r.change === 'undrain') {
              expect(now - drainedAt!).toBeGreaterThanOrEqual(holdMs);
              expect(want).toBe(false);
            }
            if (r.change === 'hold') expect(r.holdLeftMs).toBeGreaterThan(0);
            h = r.next;
          }
          // At most one drain per hold (plus the first): the flap bound.
          if (holdMs > 0) expect(drains).toBeLessThanOrEqual(1 + Math.floor(now / holdMs));
        },
      ),
    );
  });
});

describe('panic threshold', () => {
  const node = (id: string, over: Partial<HealthNode> = {}): HealthNode => ({
    id,
    weight: 1,
    draining: false,
    notReady: false,
    health: undefined,
    ...over,
  });

  it('keeps the first failing nodes in planner order (weighted first, then id) when too few are healthy', () => {
    const nodes = [
      node('c', { health: 'unhealthy:web' }),
      node('a', { health: 'maintenance' }),
      node('s', { weight: 0, health: 'unhealthy:web' }),
      node('b', { health: 'unhealthy:web' }),
    ];
    expect(decidePanic(nodes, 1)).toEqual({ panic: true, healthy: 0, kept: ['a'], short: 0 });
    expect(decidePanic(nodes, 2)).toEqual({ panic: true, healthy: 0, kept: ['a', 'b'], short: 0 });
    expect(decidePanic(nodes, 5)).toEqual({ panic: true, healthy: 0, kept: ['a', 'b', 'c', 's'], short: 1 });
    expect(decidePanic(nodes, 0)).toEqual({ panic: false, healthy: 0 });
    expect(decidePanic([...nodes, node('z')], 1)).toEqual({ panic: false, healthy: 1 });
    // Operator drains and not-ready nodes are never kept.
    expect(
      decidePanic([node('a', { draining: true, health: 'maintenance' }), node('b', { notReady: true })], 1),
    ).toEqual({ panic: false, healthy: 0 });
  });

  const arbNode = fc.record({
    id: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'),
    weight: fc.constantFrom(0, 1, 3),
    draining: fc.boolean(),
    notReady: fc.boolean(),
    health: fc.option(fc.constantFrom('maintenance', 'unhealthy:web'), { nil: undefined }),
  });

  it('property: at least min(minHealthy, candidates) nodes assignable; never an operator-drained one; order-free', () => {
    fc.assert(
      fc.property(fc.uniqueArray(arbNode, { selector: (n) => n.id, maxLength: 6 }), fc.nat(7), (nodes, min) => {
        const d = decidePanic(nodes, min);
        const ok = nodes.filter((n) => assignable(n, d));
        const servable = nodes.filter((n) => !n.draining && !n.notReady).length;
        expect(ok.length).toBeGreaterThanOrEqual(Math.min(min, servable));
        for (const n of ok) expect(n.draining || n.notReady).toBe(false);
        // Healthy nodes are always assignable; failing ones only when needed.
        for (const n of nodes)
          if (!n.draining && !n.notReady && n.health === undefined) expect(assignable(n, d)).toBe(true);
        if (d.panic) expect(ok.length).toBe(Math.min(min, servable));
        expect(decidePanic([...nodes].reverse(), min)).toEqual(d);
      }),
    );
  });
});

describe('assignableNodes (handoff targets and the leader agree)', () => {
  it('a failing node is a target only when the panic threshold keeps it', () => {
    const entry = (health?: string, draining = false) => ({
      value: {
        v: 1 as const,
        address: '',
        weight: 1,
        draining,
        version: '0',
        startedAt: '',
        ...(health ? { health } : {}),
      },
      lease: '1',
      modRevision: '1',
    });
    const nodes = new Map([
      ['a', entry('unhealthy:web')],
      ['b', entry('maintenance')],
      ['c', entry(undefined, true)],
    ]);
    expect([...assignableNodes(nodes, 1)]).toEqual([
      ['a', true],
      ['b', false],
      ['c', false],
    ]);
    nodes.set('d', entry());
    expect([...assignableNodes(nodes, 1)]).toEqual([
      ['a', false],
      ['b', false],
      ['c', false],
      ['d', true],
    ]);
  });
});
