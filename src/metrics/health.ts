import type { AgentEvent } from '../agent/events.js';

// Liveness and readiness from the agent's own events (pure, so it is unit-tested).
// live: the process still runs its loop (not shut down). ready: it holds a lease and is not fenced, so it can
// own buckets; a fenced node is alive but not ready.
export interface Health {
  live: boolean;
  ready: boolean;
  reason: HealthReason;
}

export type HealthReason = 'starting' | 'ok' | 'fenced' | 'leaseLost' | 'shuttingDown';

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

/** Track health from an event source; returns the getter startMetricsServer wants. */
export function trackHealth(events: { on(e: 'event', l: (ev: AgentEvent) => void): unknown }): () => Health {
  let h = INITIAL_HEALTH;
  events.on('event', (ev) => {
    h = nextHealth(h, ev);
  });
  return () => h;
}
