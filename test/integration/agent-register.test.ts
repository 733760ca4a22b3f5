// Chaos finding (seed 1001): a node whose re-registration failed still went live and stayed assigned buckets it
// never claimed. A session must retry registration while its lease lives, count as live only once registered,
// and replace a lease that died before registration succeeded. Real etcd; the fence is a plain recorder.
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FencedMessage } from '../../src/agent/fence.js';
import type { AgentEvent } from '../../src/agent/events.js';
import { NodeSession, type FenceControl } from '../../src/agent/session.js';
import { startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';

let etcd: LocalEtcd;
let client: Etcd3;

beforeAll(async () => {
  etcd = await startLocalEtcd({ preferContainer: false });
  client = new Etcd3({ hosts: etcd.endpoints });
}, 60_000);

afterAll(async () => {
  client?.close();
  await etcd?.stop();
});

function recorderFence(): FenceControl {
  let fenced = false;
  return {
    setDeadline: () => undefined,
    rearm: () => {
      fenced = false;
    },
    fenceNow: (reason): Promise<FencedMessage> => {
      fenced = true;
      return Promise.resolve({ type: 'fenced', reason, at: 0 } as unknown as FencedMessage);
    },
    isFenced: () => fenced,
    currentDeadline: () => 0,
  };
}

/** A session on the real etcd whose registration is `onLease`; everything else is a no-op recorder. */
function sessionWith(onLease: (leaseId: string) => Promise<void>, events: AgentEvent[] = []): NodeSession {
  return new NodeSession({
    etcd: client,
    ttlSeconds: 3,
    marginMs: 500,
    fence: recorderFence(),
    emit: (e) => events.push(e),
    hooks: {
      onLease,
      onAck: () => undefined,
      onFenced: () => undefined,
      onUnfenced: () => undefined,
      clearKernel: () => Promise.resolve(true),
    },
  });
}

describe('session registration', () => {
  it('retries a failing registration and is not live until it succeeded', async () => {
    const events: AgentEvent[] = [];
    let calls = 0;
    let liveDuringFailures = false;
    const key = `/test-register/${process.pid}/node`;
    const session: NodeSession = sessionWith(async (leaseId) => {
      calls++;
      if (session.isLive()) liveDuringFailures = true;
      if (calls <= 3) throw new Error(`injected register failure ${calls}`);
      await client.put(key).value('me').lease(leaseId);
    }, events);
    try {
      await session.start();
      expect(calls).toBe(4);
      expect(liveDuringFailures).toBe(false);
      expect(session.isLive()).toBe(true);
      expect(events.filter((e) => e.event === 'etcdError' && e.op === 'register')).toHaveLength(3);
      // Registered under the lease the session holds.
      const kv = (await client.get(key).exec()).kvs[0];
      expect(kv?.lease).toBe(session.leaseId);
    } finally {
      await session.close({ revoke: true });
    }
  }, 30_000);

  it('grants a new lease when the lease died before registration succeeded', async () => {
    const leases: string[] = [];
    const key = `/test-register/${process.pid}/node2`;
    const session: NodeSession = sessionWith(async (leaseId) => {
      leases.push(leaseId);
      // First lease: revoked behind our back, so the put fails with "lease not found".
      if (leases.length === 1) await client.leaseClient.leaseRevoke({ ID: leaseId });
      await client.put(key).value('me').lease(leaseId);
    });
    try {
      await session.start();
      // start() returns only once registered: live at once, and never on the dead lease.
      expect(session.isLive()).toBe(true);
      expect(leases).toHaveLength(2);
      expect(session.leaseId).toBe(leases[leases.length - 1]);
      expect(session.leaseId).not.toBe(leases[0]);
      const kv = (await client.get(key).exec()).kvs[0];
      expect(kv?.lease).toBe(session.leaseId);
    } finally {
      await session.close({ revoke: true });
    }
  }, 30_000);

  it('a registration failing after the lease-loss path replaced its lease leaves that replacement alone', async () => {
    // Chaos finding (seed 1004): both paths granted a lease; the second clobbered the first's and stopped its
    // keepalives, while claims were made under the first — a bucket stayed claimed by nobody's live session.
    const events: AgentEvent[] = [];
    const leases: string[] = [];
    const key = `/test-register/${process.pid}/node3`;
    const session: NodeSession = sessionWith(async (leaseId) => {
      leases.push(leaseId);
      if (leases.length === 1) {
        // Revoked behind our back; the put comes only after a keepalive saw it gone (TTL 0, every ~0.8 s).
        await client.leaseClient.leaseRevoke({ ID: leaseId });
        await new Promise((r) => setTimeout(r, 2000));
      }
      await client.put(key).value('me').lease(leaseId);
    }, events);
    try {
      await session.start();
      for (let i = 0; i < 100 && !(session.isLive() && session.leaseId === leases[1]); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(events.some((e) => e.event === 'leaseLost')).toBe(true);
      expect(session.isLive()).toBe(true);
      expect(session.leaseId).toBe(leases[1]);
      // Its keepalives still run: the lease outlives its TTL.
      await new Promise((r) => setTimeout(r, 4000));
      expect(events.filter((e) => e.event === 'sessionStarted')).toHaveLength(2);
      expect(session.leaseId).toBe(leases[1]);
      const ttl = await client.leaseClient.leaseTimeToLive({ ID: leases[1]! });
      expect(Number(ttl.TTL)).toBeGreaterThan(0);
      const kv = (await client.get(key).exec()).kvs[0];
      expect(kv?.lease).toBe(session.leaseId);
    } finally {
      await session.close({ revoke: true });
    }
  }, 30_000);
});
