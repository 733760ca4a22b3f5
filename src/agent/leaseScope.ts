import type { Etcd3, PutBuilder } from 'etcd3';

// The seam between the NodeSession and everything that acts under its lease (the election, the claim reconciler,
// the kernel gate, the status writer): etcd's concurrency.Session in small. Each of them takes a LeaseScope, so
// "may I act under this lease?" is answered in one place, and no key they write can be written unleased.

/** One lease as held at one moment: what a pass plans, compares and writes under. */
export interface HeldLease {
  /** The lease id (decimal string, as etcd3 reports it). */
  readonly id: string;
  /** A put stamped with this lease (a claim, a campaign key, the status key). */
  put(key: string): PutBuilder;
}

export interface LeaseScope {
  /** The lease held now, live or fenced or still registering; null before the first grant, between leases, closed. */
  lease(): HeldLease | null;
  /** Held, acked, registered, the fence down, and not letting go (shutdown): claims and kernel adds may go ahead. */
  isLive(): boolean;
  /** The fence worker raised its flag (it may still be clearing). */
  isFenced(): boolean;
  /** Milliseconds until the fence deadline; ≤ 0 when passed or unknown. */
  msToDeadline(): number;
}

/** A HeldLease over a client: every put it makes carries `.lease(id)`. */
export function heldLease(etcd: Etcd3, id: string): HeldLease {
  return { id, put: (key) => etcd.put(key).lease(id) };
}
