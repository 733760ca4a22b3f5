import type { AgentEvent } from '../agent/events.js';

// Liveness and readiness from the agent's own events (pure, so it is unit-tested).
// live: the process still runs its loop (not shut down). ready: it holds a lease and is not fenced, so it can
// own buckets; a fenced node is alive but not ready.
export interface Health {
  live: boolean;
  ready: boolean;
  reason: HealthReason;
}

export type HealthReason = 'starting' | 'ok' | 'fenced' | 'leaseLost' | 'shuttingDown' | 'notRegistered' | 'notReady';

export const INITIAL_HEALTH: Health = { live: true, ready: false, reason: 'starting' };

export function nextHealth(h: Health, ev: AgentEvent): Health {
  if (h.reason === 'shuttingDown') return h;
  switch (ev.event) {
    case 'sessionStarted':
    case 'unfenced':
      return { live: true, ready: true, reason: 'ok' };
    case 'fenced':
      return ev.reason === 'shutdown'
        ? { live: true, ready: false, reason: 'shuttingDown' }
        : { live: true, ready: false, reason: 'fenced' };
    case 'leaseLost':
      return { live: true, ready: false, reason: 'leaseLost' };
    case 'shutdown':
      return { live: true, ready: false, reason: 'shuttingDown' };
    default:
      return h;
  }
}

/** What readiness needs from etcd itself: our node key, under our current lease, and whether it is assignable. */
export interface Registration {
  /** Our lease id (decimal), or null without a live session. */
  leaseId: string | null;
  /** Our node key as the agent's picture has it, or undefined. */
  node: { lease: string; notReady?: string } | undefined;
}

/**
 * Ready means the node can be given buckets: besides a live lease (the events), its registration is in etcd under
 * that lease and says ready. A node whose writes etcd refuses (a read-only role) holds a lease but never registers.
 */
export function withRegistration(h: Health, r: Registration): Health {
  if (!h.ready) return h;
  if (r.leaseId === null || r.node?.lease !== r.leaseId) return { live: true, ready: false, reason: 'notRegistered' };
  if (r.node.notReady !== undefined) return { live: true, ready: false, reason: 'notReady' };
  return h;
}

/** Track health from an event source; returns the getter startMetricsServer wants. */
export function trackHealth(events: { on(e: 'event', l: (ev: AgentEvent) => void): unknown }): () => Health {
  let h = INITIAL_HEALTH;
  events.on('event', (ev) => {
    h = nextHealth(h, ev);
  });
  return () => h;
}
