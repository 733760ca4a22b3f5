// Issue 9: after a lease loss, the acks of the replacement lease never moved the fence deadline while the node
// registered under it, so a registration slower than TTL − margin ended in a spurious fence right after the
// recovery. Real etcd, the real NodeSession; the fence is a recorder (what the worker would be told).
import type { Etcd3 } from 'etcd3';
import { afterEach, describe, expect, it } from 'vitest';
import { monoNow } from '../../src/agent/clock.js';
import type { FencedMessage } from '../../src/agent/fence.js';
import { NodeSession, type FenceControl } from '../../src/agent/session.js';
import { createEtcdClient } from '../../src/etcd/client.js';
import { startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class RecordingFence implements FenceControl {
  deadline = 0;
  fenced = false;
  setDeadline(mono: number): void {
    this.deadline = mono;
  }
  rearm(mono: number): void {
    this.deadline = mono;
    this.fenced = false;
  }
  currentDeadline(): number {
    return this.deadline;
  }
  fenceNow(reason: 'leaseLost' | 'shutdown'): Promise<FencedMessage> {
    this.fenced = true;
    const now = monoNow();
    return Promise.resolve({
      type: 'fenced',
      reason,
      deadline: this.deadline,
      firedAt: now,
      clearedAt: now,
      error: undefined,
      attempts: 1,
    });
  }
  isFenced(): boolean {
    return this.fenced;
  }
}

let etcd: LocalEtcd | undefined;
let client: Etcd3 | undefined;
let session: NodeSession | undefined;

afterEach(async () => {
  await session?.close({ revoke: true });
  client?.close();
  await etcd?.stop();
  session = client = etcd = undefined;
});

describe('NodeSession after a lease loss', () => {
  it("moves the deadline with the replacement lease's acks while it registers", async () => {
    etcd = await startLocalEtcd({ preferContainer: false });
    client = createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 2000 });
    const fence = new RecordingFence();
    let registrations = 0;
    let slowRegistration: { from: number; to: number } | null = null;
    session = new NodeSession({
      etcd: client,
      ttlSeconds: 2,
      marginMs: 500,
      fence,
      emit: () => undefined,
      hooks: {
        onLease: async () => {
          // The replacement's registration takes longer than TTL − margin (a slow etcd, a long catch-up).
          if (++registrations === 2) {
            const from = monoNow();
            await sleep(2500);
            slowRegistration = { from, to: monoNow() };
          }
        },
        onAck: () => undefined,
        onFenced: () => undefined,
        onUnfenced: () => undefined,
        clearKernel: () => Promise.resolve(true),
      },
    });
    await session.start();
    const first = session.leaseId!;
    await client.leaseClient.leaseRevoke({ ID: first });
    // Sample the headroom the fence worker would see, until the slow registration is over.
    let worst = Infinity;
    const until = monoNow() + 15_000;
    while (monoNow() < until && slowRegistration === null) {
      if (registrations === 2 && fence.deadline > 0) worst = Math.min(worst, fence.deadline - monoNow());
      await sleep(20);
    }
    expect(slowRegistration, 'the replacement lease was registered').not.toBeNull();
    expect(session.leaseId).not.toBe(first);
    expect(worst, 'ms left before the fence deadline during the registration').toBeGreaterThan(0);
    expect(session.state.state).toBe('live');
  });
});
