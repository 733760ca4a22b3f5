import type { VipSpec } from '../config/types.js';

// DESIGN §12: a bucket number means "these clients" only under one hash identity. Two rules of one VIP with
// different identities can both match one client, so an assignment is acted on only under the identity it was
// written for, and the leader changes identity only through the empty-assignment barrier.

/** The fields that decide which bucket a packet falls in: bucket count, hash mode (the fields hashed), seed. */
export function hashIdentity(vip: Pick<VipSpec, 'buckets' | 'hashMode' | 'seed'>): string {
  return `${vip.buckets}/${vip.hashMode}/0x${(vip.seed >>> 0).toString(16).padStart(8, '0')}`;
}

/** What an assignment value says about the identity it was written for (older leaders wrote less). */
export interface IdentityStamp {
  hash?: string | undefined;
  buckets?: number | undefined;
}

/**
 * Whether an assignment written under `stamp` numbers its buckets as `vip` does. A value without `hash` (an
 * older leader) can only be checked by its bucket count.
 */
export function sameHashIdentity(stamp: IdentityStamp, vip: VipSpec): boolean {
  if (stamp.hash !== undefined) return stamp.hash === hashIdentity(vip);
  return stamp.buckets === undefined || stamp.buckets === vip.buckets;
}
