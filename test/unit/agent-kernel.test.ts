import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentEvent } from '../../src/agent/events.js';
import { KernelGate } from '../../src/agent/kernel.js';
import type { LeaseScope } from '../../src/agent/leaseScope.js';
import type {
  ApplyOptions,
  Backend,
  BackendDescription,
  BucketChange,
  HeldBuckets,
  RefreshOptions,
} from '../../src/backends/backend.js';
import { FileBackend } from '../../src/backends/file.js';
import type { ClusterSpec } from '../../src/config/types.js';
import { BackendError } from '../../src/errors.js';
import { hashIdentity } from '../../src/hash/identity.js';

// The kernel gate's decisions, against an in-memory backend whose failures the test scripts.

class ScriptedBackend implements Backend {
  readonly kind = 'file' as const;
  held: HeldBuckets = new Map();
  failAdd = false;
  failRemove = false;
  failRead = false;
  failClear = false;
  refreshed: (RefreshOptions | undefined)[] = [];
  /** Runs inside apply, after the write landed (to simulate a lease change during the write). */
  duringApply: (() => void) | null = null;

  async ensure(_spec: ClusterSpec): Promise<void> {}
  async read(): Promise<HeldBuckets> {
    if (this.failRead) throw new BackendError('bug', 'read failed');
    return new Map([...this.held].map(([v, s]) => [v, new Set(s)]));
  }
  async apply(changes: BucketChange[], _opts?: ApplyOptions): Promise<void> {
    for (const c of changes) {
      let s = this.held.get(c.vip);
      if (!s) this.held.set(c.vip, (s = new Set()));
      if (c.remove.length > 0 && this.failRemove) throw new BackendError('bug', 'remove failed');
      for (const b of c.remove) s.delete(b);
      // The add lands, then the backend reports a failure (a batch that stopped half way).
      for (const b of c.add) s.add(b);
      if (c.add.length > 0 && this.failAdd) throw new BackendError('bug', 'add failed');
    }
    this.duringApply?.();
  }
  async refresh(_holdForMs: number, opts?: RefreshOptions): Promise<HeldBuckets> {
    this.refreshed.push(opts);
    const out: HeldBuckets = new Map();
    for (const [vip, s] of this.held) {
      const keep = [...s].filter((b) => !opts?.only || opts.only.get(vip)?.has(b));
      if (keep.length > 0) out.set(vip, new Set(keep));
    }
    return out;
  }
  async clear(): Promise<void> {
    if (this.failClear) throw new BackendError('bug', 'clear failed');
    this.held.clear();
  }
  describe(): BackendDescription {
    return { kind: 'file', enforcesDeadline: true, detail: {} };
  }
  async close(): Promise<void> {}
}

/** The fence as the gate sees it; tests move it. */
interface TestFence {
  fenced: boolean;
  msLeft: number;
}

/** The session as the gate sees it: live while it has a lease and the fence is down. */
function scope(lease: { id: string | null }, fence: TestFence): LeaseScope {
  return {
    lease: () =>
      lease.id === null
        ? null
        : {
            id: lease.id,
            put: () => {
              throw new Error('the kernel gate writes nothing to etcd');
            },
          },
    isLive: () => lease.id !== null && !fence.fenced,
    isFenced: () => fence.fenced,
    msToDeadline: () => fence.msLeft,
  };
}

function gate(
  backend: Backend,
  lease: { id: string | null } = { id: 'L1' },
  fence: TestFence = { fenced: false, msLeft: 5000 },
): KernelGate {
  const events: AgentEvent[] = [];
  return new KernelGate({
    backend,
    emit: (e) => events.push(e),
    session: scope(lease, fence),
    retries: 0,
  });
}

describe('KernelGate after a failed add', () => {
  it('counts the adds as held when neither the undo nor the re-read is confirmed (claims must be kept)', async () => {
    const be = new ScriptedBackend();
    const k = gate(be);
    be.failAdd = true;
    be.failRemove = true;
    be.failRead = true;
    await expect(k.apply([{ vip: 'v', add: [1, 2], remove: [] }], { lease: 'L1' })).rejects.toThrow(/add failed/);
    // The kernel does hold them: the model must say so, or the reconciler deletes their claims.
    expect(be.held.get('v')).toEqual(new Set([1, 2]));
    expect(k.has('v', 1) && k.has('v', 2)).toBe(true);
  });

  it('trusts the read-back when the undo worked', async () => {
    const be = new ScriptedBackend();
    const k = gate(be);
    be.failAdd = true;
    await expect(k.apply([{ vip: 'v', add: [3], remove: [] }], { lease: 'L1' })).rejects.toThrow();
    expect(k.has('v', 3)).toBe(false);
    expect(be.held.get('v')?.has(3) ?? false).toBe(false);
  });
});

// Issue 9, hole 3: the model may only lose a bucket the backend confirmed gone. Else the reconciler releases the
// claim of a bucket the kernel still holds, and its new owner serves it too.
describe('KernelGate: a clear is confirmed or the model keeps what may be held', () => {
  it('a failed clear keeps what the read-back shows', async () => {
    const be = new ScriptedBackend();
    const k = gate(be);
    await k.apply([{ vip: 'v', add: [1, 2], remove: [] }], { lease: 'L1' });
    be.failClear = true;
    expect(await k.clear()).toBe(false);
    expect(k.has('v', 1) && k.has('v', 2)).toBe(true);
    be.failClear = false;
    expect(await k.clear()).toBe(true);
    expect(k.heldCount()).toBe(0);
  });

  it('a failed clear whose read-back fails too keeps the whole model', async () => {
    const be = new ScriptedBackend();
    const k = gate(be);
    await k.apply([{ vip: 'v', add: [5], remove: [] }], { lease: 'L1' });
    be.failClear = true;
    be.failRead = true;
    expect(await k.clear()).toBe(false);
    expect(k.has('v', 5)).toBe(true);
  });

  it('fenced during a write, with the clear failing: the landed adds stay in the model', async () => {
    const be = new ScriptedBackend();
    const fence = { fenced: false, msLeft: 5000 };
    const k = gate(be, { id: 'L1' }, fence);
    be.failClear = true;
    be.duringApply = () => {
      be.duringApply = null;
      fence.fenced = true; // the worker fired while we wrote
    };
    expect(await k.apply([{ vip: 'v', add: [7], remove: [] }], { lease: 'L1' })).toEqual({
      added: [],
      refused: 'fenced',
    });
    expect(be.held.get('v')?.has(7)).toBe(true);
    expect(k.has('v', 7)).toBe(true);
  });

  it('a write that failed part way, then a fence before the retry: what landed is undone or kept in the model', async () => {
    const be = new ScriptedBackend();
    const fence = { fenced: false, msLeft: 5000 };
    const events: AgentEvent[] = [];
    const k = new KernelGate({
      backend: be,
      emit: (e) => events.push(e),
      session: scope({ id: 'L1' }, fence),
      retries: 2,
    });
    be.failAdd = true; // the add lands, then the write reports failure (a CLUSTERIP "+N" that went through)
    be.failRemove = true; // and the undo cannot take it back
    const orig = be.apply.bind(be);
    be.apply = async (c, o) => {
      try {
        await orig(c, o);
      } catch {
        throw new BackendError('transient', 'write failed part way'); // worth a retry
      } finally {
        fence.fenced = true; // the retry finds the fence up
      }
    };
    expect(await k.apply([{ vip: 'v', add: [3], remove: [] }], { lease: 'L1' })).toEqual({
      added: [],
      refused: 'fenced',
    });
    expect(be.held.get('v')?.has(3)).toBe(true);
    expect(k.has('v', 3)).toBe(true);
  });

  it('says why adds were refused: too close to the deadline', async () => {
    const be = new ScriptedBackend();
    const k = gate(be, { id: 'L1' }, { fenced: false, msLeft: 10 });
    expect(await k.apply([{ vip: 'v', add: [1], remove: [] }], { lease: 'L1' })).toEqual({
      added: [],
      refused: 'deadlineShort',
    });
  });
});

describe('KernelGate and the session lease', () => {
  it('refuses adds planned under another lease, or while no lease is live', async () => {
    const be = new ScriptedBackend();
    const lease = { id: 'L2' as string | null };
    const k = gate(be, lease);
    expect(await k.apply([{ vip: 'v', add: [1], remove: [] }], { lease: 'L1' })).toEqual({
      added: [],
      refused: 'leaseChanged',
    });
    lease.id = null;
    expect((await k.apply([{ vip: 'v', add: [1], remove: [] }], { lease: 'L2' })).added).toEqual([]);
    expect(be.held.get('v')?.size ?? 0).toBe(0);
    lease.id = 'L2';
    expect((await k.apply([{ vip: 'v', add: [1], remove: [] }], { lease: 'L2' })).added).toHaveLength(1);
    expect(k.has('v', 1)).toBe(true);
  });

  it('takes back an add whose lease was replaced while it was written', async () => {
    const be = new ScriptedBackend();
    const lease = { id: 'L1' as string | null };
    const k = gate(be, lease);
    be.duringApply = () => {
      be.duringApply = null;
      lease.id = 'L2';
    };
    expect(await k.apply([{ vip: 'v', add: [4], remove: [] }], { lease: 'L1' })).toEqual({
      added: [],
      refused: 'leaseChanged',
    });
    expect(be.held.get('v')?.has(4) ?? false).toBe(false);
    expect(k.has('v', 4)).toBe(false);
  });
});

describe('refresh renews only what the model holds', () => {
  it('passes the model to the backend', async () => {
    const be = new ScriptedBackend();
    const k = gate(be);
    await k.apply([{ vip: 'v', add: [1], remove: [] }], { lease: 'L1' });
    be.held.get('v')!.add(9); // in the kernel, not in our model (no claim behind it)
    await k.refresh();
    expect(be.refreshed.at(-1)?.only).toEqual(new Map([['v', new Set([1])]]));
  });

  it('drops entries that ran out before the refresh from the model and asks for a re-add', async () => {
    const be = new ScriptedBackend();
    const events: AgentEvent[] = [];
    let asked = 0;
    const k = new KernelGate({
      backend: be,
      emit: (e) => events.push(e),
      session: scope({ id: 'L1' }, { fenced: false, msLeft: 1000 }),
      onExpired: () => asked++,
    });
    await k.apply([{ vip: 'v', add: [1, 2], remove: [] }], { lease: 'L1' });
    be.held.get('v')!.delete(2); // expired in the backend while the loop was stalled
    await k.refresh();
    expect(k.has('v', 1)).toBe(true);
    expect(k.has('v', 2)).toBe(false);
    expect(events.filter((e) => e.event === 'kernelExpired')).toEqual([
      { event: 'kernelExpired', vip: 'v', buckets: [2] },
    ]);
    expect(asked).toBe(1);
    // Nothing ran out: no event, no re-add request.
    await k.refresh();
    expect(asked).toBe(1);
  });

  let dir = '';
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = '';
  });

  it('file backend: a bucket outside `only` keeps its expiry and runs out', async () => {
    dir = await mkdtemp(join(tmpdir(), 'cipha-agent-kernel-'));
    let now = 1_000_000;
    const fb = new FileBackend({ dir, now: () => now });
    const spec: ClusterSpec = {
      vips: [
        {
          address: '10.77.0.1',
          interface: 'eth0',
          buckets: 8,
          hashMode: 'sourceip',
          seed: 1,
          clusterMac: '01:00:5e:00:00:01',
          sticky: false,
        },
      ],
      rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 },
    };
    await fb.ensure(spec);
    await fb.apply([{ vip: '10.77.0.1', add: [1, 2], remove: [] }], { holdForMs: 1000 });
    now += 500;
    expect(await fb.refresh(1000, { only: new Map([['10.77.0.1', new Set([1])]]) })).toEqual(
      new Map([['10.77.0.1', new Set([1])]]),
    );
    now += 700; // past bucket 2's first expiry, within bucket 1's renewed one
    expect(await fb.read()).toEqual(new Map([['10.77.0.1', new Set([1])]]));
    // Without `only`, every unexpired bucket is renewed (the old behaviour, for other callers).
    await fb.apply([{ vip: '10.77.0.1', add: [3], remove: [] }], { holdForMs: 1000 });
    await fb.refresh(1000);
    now += 900;
    expect(await fb.read()).toEqual(new Map([['10.77.0.1', new Set([1, 3])]]));
    // A held entry that already ran out is not renewed, and the result says so.
    now += 2000;
    expect(await fb.refresh(1000, { only: new Map([['10.77.0.1', new Set([1, 3])]]) })).toEqual(new Map());
    expect(await fb.read()).toEqual(new Map([['10.77.0.1', new Set()]]));
  });
});

// Issue 9, the stale-hash hole (DESIGN §12): a bucket number means other clients under another hash identity. An
// add claimed under one identity must not land under a rule of another, and no bucket survives a rule switch.
describe('KernelGate: adds only under the rule they were claimed for', () => {
  const specOf = (seed: number): ClusterSpec => ({
    vips: [
      {
        address: 'v',
        interface: 'eth0',
        buckets: 4,
        hashMode: 'sourceip',
        seed,
        clusterMac: '01:00:5e:00:00:01',
        sticky: false,
      },
    ],
    rebalance: { joinMovesPerInterval: 1, intervalMs: 100 },
  });

  it('refuses an add planned under another seed than the rule the backend runs', async () => {
    const be = new ScriptedBackend();
    const k = gate(be);
    await k.ensure(specOf(2));
    const r = await k.apply([{ vip: 'v', add: [1], remove: [] }], { lease: 'L1', spec: specOf(1) });
    expect(r).toEqual({ added: [], refused: 'specStale' });
    expect(be.held.get('v')?.has(1) ?? false).toBe(false);
    const ok = await k.apply([{ vip: 'v', add: [1], remove: [] }], { lease: 'L1', spec: specOf(2) });
    expect(ok).toEqual({ added: [{ vip: 'v', add: [1], remove: [] }] });
  });

  it('refuses adds before any rule is set up', async () => {
    const k = gate(new ScriptedBackend());
    const r = await k.apply([{ vip: 'v', add: [1], remove: [] }], { lease: 'L1', spec: specOf(1) });
    expect(r.refused).toBe('specStale');
  });

  it('a new seed removes every held bucket of the VIP before the rule switches', async () => {
    const be = new ScriptedBackend();
    const k = gate(be);
    await k.ensure(specOf(1));
    await k.apply([{ vip: 'v', add: [1, 3], remove: [] }], { lease: 'L1', spec: specOf(1) });
    await k.ensure(specOf(1));
    expect(k.has('v', 1)).toBe(true);
    await k.ensure(specOf(2));
    expect(be.held.get('v')?.size ?? 0).toBe(0);
    expect(k.heldCount()).toBe(0);
  });

  it('after a planned restart, the recorded rule counts: a seed changed meanwhile empties the VIP first', async () => {
    // Kernel entries kept by a planned restart under seed 1; the next process sets up seed `next`.
    const restarted = async (next: number): Promise<ScriptedBackend> => {
      const be = new ScriptedBackend();
      be.held.set('v', new Set([1, 2]));
      const k = gate(be);
      await k.read();
      k.assumeRule({ v: hashIdentity(specOf(1).vips[0]!) });
      await k.ensure(specOf(next));
      expect(k.ruleIdentities()).toEqual({ v: hashIdentity(specOf(next).vips[0]!) });
      return be;
    };
    expect((await restarted(2)).held.get('v')?.size ?? 0).toBe(0);
    // The same seed keeps them (hitless).
    expect((await restarted(1)).held.get('v')).toEqual(new Set([1, 2]));
  });

  it('does not switch the rule when that removal fails', async () => {
    const be = new ScriptedBackend();
    const k = gate(be);
    let ensured = 0;
    be.ensure = async () => {
      ensured++;
    };
    await k.ensure(specOf(1));
    await k.apply([{ vip: 'v', add: [2], remove: [] }], { lease: 'L1', spec: specOf(1) });
    be.failRemove = true;
    await expect(k.ensure(specOf(2))).rejects.toThrow(/remove failed/);
    expect(ensured).toBe(1);
    expect(k.has('v', 2)).toBe(true);
    // Still the old rule: adds claimed under the new seed are refused.
    const r = await k.apply([{ vip: 'v', add: [1], remove: [] }], { lease: 'L1', spec: specOf(2) });
    expect(r.refused).toBe('specStale');
  });
});
