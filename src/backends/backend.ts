import type { BackendKind, ClusterSpec } from '../config/types.js';

/** Buckets held per VIP address. Sets are compared, never ordered. */
export type HeldBuckets = Map<string, Set<number>>;

export interface BucketChange {
  vip: string;
  add: number[];
  remove: number[];
}

export interface ApplyOptions {
  /**
   * How long the kernel may keep added buckets without a refresh (the time left to the fence deadline).
   * Backends that can enforce it (nftables element timeouts, the file backend's expiry) do; others ignore it.
   * undefined = no expiry.
   */
  holdForMs?: number;
}

export interface RefreshOptions {
  /** Refresh only these buckets (those the caller holds claims for); undefined = every unexpired bucket. */
  only?: HeldBuckets;
}

export interface BackendDescription {
  kind: BackendKind;
  /** Whether the kernel itself drops buckets at the fence deadline (nftables, file). */
  enforcesDeadline: boolean;
  /** Human-readable details for status: table name, proc dir, file dir, command. */
  detail: Record<string, string | number | boolean>;
}

/**
 * The narrow edge between the agent and the kernel. Every method is safe to retry.
 *
 * Contract:
 * - `apply` is atomic where the kernel allows it (nftables: one `nft -f` batch); removes are confirmed by reading
 *   back before it resolves, because the claim protocol deletes a claim only after the kernel let go.
 * - Adding a held bucket or removing an unheld one is not an error ("already so"), but only when a read-back agrees.
 * - Errors are BackendError: `transient` ones are worth retrying, the rest are not.
 */
export interface Backend {
  readonly kind: BackendKind;
  /** Create tables, sets, rules, files for the spec. Idempotent; VIPs no longer in the spec are removed. */
  ensure(spec: ClusterSpec): Promise<void>;
  /** What the kernel holds now (expired entries excluded). VIPs the backend does not know are absent. */
  read(): Promise<HeldBuckets>;
  apply(changes: BucketChange[], opts?: ApplyOptions): Promise<void>;
  /**
   * Extend the expiry of held buckets (after each acknowledged keepalive). Never adds: an entry that already
   * expired stays expired. `opts.only`: refresh only these buckets (the caller's model); others keep their
   * expiry. Resolves with what was renewed (so the caller learns what ran out), or null where entries never
   * expire (nothing to renew).
   */
  refresh(holdForMs: number, opts?: RefreshOptions): Promise<HeldBuckets | null>;
  /** Drop every bucket of every VIP now (fencing, `clusterip-ha fence`). Must not depend on etcd. */
  clear(): Promise<void>;
  describe(): BackendDescription;
  close(): Promise<void>;
}
