import type { MoveReason } from '../planner/plan.js';
import type { SweepReason } from './sweep.js';
import type { HealthEvent } from '../health/events.js';

// The agent library's events. The daemon turns them into log lines (src/agent/daemon.ts) and metrics
// (src/metrics/agentMetrics.ts); tests and the chaos runner subscribe to them too.
// Reasons are closed sets so they can label metrics.

/** Why this node releases a bucket. */
export type ReleaseReason = 'notAssigned' | 'draining' | 'fenced' | 'shutdown' | 'startupOrphan' | 'vipRemoved';

/**
 * Why this node does not (yet) acquire a bucket it is assigned. `specStale`: the spec key changed since the spec
 * our kernel runs (its hash may number clients otherwise); retried once the new spec is applied.
 */
export type AcquireBlock =
  | 'heldByOther'
  | 'fenced'
  | 'deadlineShort'
  | 'notLive'
  | 'leaseChanged'
  | 'draining'
  | 'backendFailed'
  | 'etcdError'
  | 'specStale';

/** Why a restart took the path it took. */
export type RestartReason = 'requested' | 'ttlTooShort' | 'notLive' | 'noStateDir' | 'recordFailed';

export type FenceReason = 'deadlinePassed' | 'leaseLost' | 'shutdown';

export type AgentEvent =
  | { event: 'sessionStarted'; leaseId: string; ttlSeconds: number; adopted?: boolean }
  /** The fence worker thread died: the deadline is no longer kept on a stalled loop (the agent drains, exits 1). */
  | { event: 'fenceWorkerDied'; error: string }
  /** At start: the lease of an earlier run of this node (recorded in stateDir) was revoked, its claims went. */
  | { event: 'previousRevoked'; leaseId: string }
  /** A planned restart's lease could not be adopted (gone, or etcd did not answer before its deadline). */
  | { event: 'adoptFailed'; leaseId: string }
  /** SIGHUP: exit leaving lease, claims and kernel in place (`planned`), or a drain when that is unsafe. */
  | { event: 'restart'; mode: 'planned' | 'drain'; reason: RestartReason; headroomMs: number }
  | { event: 'keepaliveAck'; rttMs: number; headroomMs: number }
  | { event: 'fenced'; reason: FenceReason; buckets: number; cleared: boolean }
  | { event: 'unfenced'; sameLease: boolean }
  | { event: 'leaseLost' }
  | { event: 'elected'; revision: string }
  | { event: 'deposed'; reason: string }
  | {
      event: 'assignmentWritten';
      vip: string;
      epoch: number;
      moves: { bucket: number; from: string | null; to: string | null; reason: MoveReason }[];
      planMs: number;
      sinceTriggerMs: number;
      /** The VIP's hash identity changed: the assignment is emptied until no claim is left (DESIGN §12). */
      barrier?: 'hashChanged';
    }
  | { event: 'assignmentRejected'; vip: string; reason: 'notLeader' | 'etcdError' | 'invalid' }
  /** `claimRevision`: the revision our acquire txn created the claim at (absent for a claim handed to us). */
  | { event: 'acquired'; vip: string; bucket: number; durationMs: number; unownedMs?: number; claimRevision?: string }
  | { event: 'acquireBlocked'; vip: string; bucket: number; reason: AcquireBlock; holder?: string }
  | { event: 'released'; vip: string; bucket: number; reason: ReleaseReason; durationMs: number; handoff?: string }
  | {
      event: 'backendError';
      /** fenceClear: the fence worker's own clear (its attempts all failed). */
      op: 'apply' | 'refresh' | 'clear' | 'read' | 'ensure' | 'fenceClear';
      error: string;
      attempt: number;
      willRetry: boolean;
    }
  | { event: 'kernelExpired'; vip: string; buckets: number[] }
  | { event: 'badValue'; key: string; error: string }
  | { event: 'etcdError'; op: string; error: string }
  /** The leader deleted a key that blocked the cluster (DESIGN §10: bad data converges back). */
  | { event: 'swept'; key: string; reason: SweepReason; detail: string }
  | { event: 'loopDelay'; p99Ms: number; maxMs: number }
  | { event: 'drainRequested' }
  /** Local state in stateDir could not be read or written (the lease record, DESIGN §13). */
  | {
      event: 'stateError';
      op: 'readLeaseRecord' | 'recordLease' | 'readRestartRecord' | 'recordRestart';
      file: string;
      error: string;
    }
  /** The kernel runs the spec the `spec` key held at `modRevision` (acquires compare that revision, DESIGN §12). */
  | { event: 'specApplied'; generation: number; modRevision: string }
  /** The backend could (not) be set up for the spec: a node not ready registers so and is given no buckets. */
  | { event: 'readiness'; ready: boolean; reason?: string }
  | { event: 'shutdown'; phase: 'draining' | 'handedOff' | 'timedOut' | 'released' | 'revoked' | 'done' }
  | HealthEvent;

export type AgentEventName = AgentEvent['event'];

export type AgentEventListener = (e: AgentEvent) => void;
