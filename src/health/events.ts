import type { CheckFailure, CheckPhase, DrainChange } from './state.js';

// The health monitor's and the leader's panic events; part of AgentEvent (src/agent/events.ts), so the daemon
// logs them and counts them like every other event.

export type HealthEvent =
  /** One probe ran (debug log, duration histogram). */
  | {
      event: 'checkResult';
      check: string;
      ok: boolean;
      /** The check's state after this result. */
      state: CheckPhase;
      failure?: CheckFailure;
      durationMs: number;
      output: string;
    }
  /** A check changed state after rise/fall results; `flap` when it changed within the hold of its last change. */
  | { event: 'checkTransition'; check: string; state: CheckPhase; flap: boolean; output: string }
  | { event: 'maintenance'; present: boolean; file: string }
  /** The node's health drain changed (`reason` is `unhealthy:<check>` or `maintenance`). */
  | { event: 'healthDrain'; change: Exclude<DrainChange, 'none'>; reason?: string; holdLeftMs?: number }
  /** Leader: too few healthy nodes, so these failing ones keep serving (DESIGN §14 panic threshold). */
  | { event: 'healthPanic'; panic: boolean; kept: string[]; healthy: number; minHealthyNodes: number };
