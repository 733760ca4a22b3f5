// The pure half of service health (DESIGN §14): one check's rise/fall state machine and the node's drain decision
// with its hold time. No I/O, no clock: `now` is passed in (monotonic ms), so the runner and the tests agree.

/** Why one probe failed; closed so it can label metrics. */
export type CheckFailure = 'exitCode' | 'signal' | 'timeout' | 'refused' | 'status' | 'error';

export type ProbeResult =
  | { ok: true; durationMs: number; output: string }
  | { ok: false; durationMs: number; failure: CheckFailure; output: string };

export interface CheckThresholds {
  rise: number;
  fall: number;
  /** A transition this soon after the previous one counts as a flap. */
  flapWindowMs: number;
}

export type CheckPhase = 'up' | 'down';

export interface CheckState {
  state: CheckPhase;
  /** When `state` was entered (monotonic ms); the start time for the initial state. */
  since: number;
  /** Consecutive results against `state` (successes while down, failures while up). */
  streak: number;
  /** When the last transition happened; null before the first. */
  lastTransitionAt: number | null;
  transitions: number;
  flaps: number;
  last: (ProbeResult & { at: number }) | null;
}

export function initialCheckState(initial: CheckPhase, now: number): CheckState {
  return { state: initial, since: now, streak: 0, lastTransitionAt: null, transitions: 0, flaps: 0, last: null };
}

export interface CheckStep {
  next: CheckState;
  /** The state entered by this result; null when it stayed. */
  transition: CheckPhase | null;
  flap: boolean;
}

/** Feed one probe result: `fall` consecutive failures make an up check down, `rise` successes a down one up. */
export function stepCheck(s: CheckState, r: ProbeResult, t: CheckThresholds, now: number): CheckStep {
  const against = s.state === 'up' ? !r.ok : r.ok;
  const streak = against ? s.streak + 1 : 0;
  const needed = s.state === 'up' ? t.fall : t.rise;
  const last = { ...r, at: now };
  if (streak < Math.max(1, needed)) return { next: { ...s, streak, last }, transition: null, flap: false };
  const to: CheckPhase = s.state === 'up' ? 'down' : 'up';
  const flap = s.lastTransitionAt !== null && now - s.lastTransitionAt < t.flapWindowMs;
  return {
    next: {
      state: to,
      since: now,
      streak: 0,
      lastTransitionAt: now,
      transitions: s.transitions + 1,
      flaps: s.flaps + (flap ? 1 : 0),
      last,
    },
    transition: to,
    flap,
  };
}

/** Why the checks drain the node: written as `health` in its node key. */
export type HealthDrainReason = 'maintenance' | `unhealthy:${string}`;

export type HealthDrain = { drained: false } | { drained: true; reason: HealthDrainReason; since: number };

/** What the node's health did on one evaluation; closed, for events and logs. */
export type DrainChange = 'drain' | 'undrain' | 'reason' | 'hold' | 'none';

export interface DrainInput {
  /** Names of the checks that are down, in config order. */
  down: readonly string[];
  maintenance: boolean;
  now: number;
  /** Least time between a drain and the undrain that follows it. */
  holdMs: number;
  /** The first evaluation (the agent's start): a node that never served has nothing to hold back. */
  initial?: boolean;
}

export interface DrainStep {
  next: HealthDrain;
  change: DrainChange;
  /** With `hold`: ms until an undrain may happen (evaluate again then). */
  holdLeftMs?: number;
}

/** The reason the checks want now: maintenance first, then the first down check; null = serve. */
export function wantedDrain(down: readonly string[], maintenance: boolean): HealthDrainReason | null {
  if (maintenance) return 'maintenance';
  return down.length > 0 ? `unhealthy:${down[0]!}` : null;
}

/**
 * Drain at once when a check goes down (clients are black-holed meanwhile); undrain only once `holdMs` has passed
 * since the drain, so a flapping service moves buckets at most once per hold in each direction.
 */
export function decideDrain(prev: HealthDrain, i: DrainInput): DrainStep {
  const want = wantedDrain(i.down, i.maintenance);
  if (!prev.drained) {
    return want === null
      ? { next: prev, change: 'none' }
      : { next: { drained: true, reason: want, since: i.initial ? i.now - i.holdMs : i.now }, change: 'drain' };
  }
  if (want !== null) {
    return want === prev.reason
      ? { next: prev, change: 'none' }
      : { next: { ...prev, reason: want }, change: 'reason' };
  }
  const left = prev.since + i.holdMs - i.now;
  if (left > 0) return { next: prev, change: 'hold', holdLeftMs: left };
  return { next: { drained: false }, change: 'undrain' };
}
