// Contract between the invariant observer (src/invariant/observer.ts), the pure checker
// (src/invariant/checker.ts) and their users: the agent's integration tests, the netns dataplane tests, chaos.

/** Who holds one bucket at one instant, as one source saw it. */
export interface OwnershipSample {
  /** Wall-clock ms (Date.now()) when the observation was made. */
  t: number;
  source: 'claims' | 'backend' | 'dataplane';
  vip: string;
  bucket: number;
  /** Nodes holding it: the claim owner (claims), nodes whose backend holds it unexpired (backend), nodes that
   *  answered a probe (dataplane). */
  holders: string[];
  /** claims only: the claim's lease, i.e. the holder's incarnation (one node id may come back under a new lease). */
  lease?: string;
  /**
   * claims only: the claim changed by a write no agent makes (damage in etcd, not a protocol transition): a value
   * that is no claim, or a claim naming a holder not registered under its lease. Its previous holder could not have
   * let go first; it owes a release within the claim lag.
   */
  damaged?: true;
}

export type Violation =
  | { kind: 'doubleOwner'; source: OwnershipSample['source']; vip: string; bucket: number; nodes: string[]; at: number }
  | {
      kind: 'unownedTooLong';
      vip: string;
      bucket: number;
      fromMs: number;
      toMs: number;
      durationMs: number;
      boundMs: number;
    }
  | { kind: 'notConverged'; vip: string; bucket: number; detail: string }
  /** A node's backend held the bucket while etcd's claim named someone else or nobody (kernel ⊄ claims). */
  | {
      kind: 'heldWithoutClaim';
      vip: string;
      bucket: number;
      node: string;
      fromMs: number;
      toMs: number;
      durationMs: number;
    }
  /**
   * A claim changed hands (or went away) at `claimAt`, and a complete read of every backend that started after it
   * (`seenAt`) still found the previous holder: it had not let go before the claim moved (DESIGN §5 releases
   * kernel first, claim second).
   */
  | {
      kind: 'heldAfterRelease';
      vip: string;
      bucket: number;
      node: string;
      lease: string;
      claimAt: number;
      seenAt: number;
    }
  /** A backend held the bucket during [fromMs, toMs] and no claim of that node was seen then (or within the lag). */
  | { kind: 'heldNeverClaimed'; vip: string; bucket: number; node: string; fromMs: number; toMs: number };

export interface InvariantReport {
  violations: Violation[];
  /** Longest time each bucket (`vip#bucket`) had no owner in the backend while a live node existed. */
  maxUnownedMs: Record<string, number>;
  /** Every completed unowned interval, for failover percentiles. */
  unownedIntervals: { vip: string; bucket: number; fromMs: number; toMs: number }[];
  samples: number;
  startedAt: number;
  endedAt: number;
}

export interface ObserverOptions {
  endpoints: string[];
  cluster: string;
  /** File-backend directory of every node to read (nodes may be added later with addNode). */
  backendDirs: Record<string, string>;
  /** Unowned longer than this while a live node exists is a violation. */
  unownedBoundMs: number;
  /** How often backend files are read (ms). Default 10. */
  pollMs?: number;
  /** Backend state arrives through `record()` ('backend' samples, e.g. nftables sets read in namespaces) instead
   *  of file polling; `backendDirs` is then ignored. Default false. */
  backendFromRecord?: boolean;
  /** A backend holder without the claim counts only after this long (the watch and the file poll are two clocks
   *  of observation: an acquire's claim event may arrive after its file write is seen). Default 500. */
  claimLagMs?: number;
  /** How long a fact may arrive after its stamp and still be checked in time order (ms). Default 2000. */
  reorderMs?: number;
}

export interface Observer {
  addNode(id: string, backendDir: string): void;
  /** Feed dataplane observations (netns probes) into the same checker. */
  record(sample: OwnershipSample): void;
  /** Violations seen so far (cheap; for progress lines and early test failure). */
  violations(): Violation[];
  /** Stop watching and return the report. With `expectConverged`, also checks claims == assignment == backend. */
  stop(opts?: { expectConverged?: boolean; convergeTimeoutMs?: number }): Promise<InvariantReport>;
}
