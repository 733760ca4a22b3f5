// The etcd key layout (DESIGN.md §4). Every key of a cluster lives under `/clusterip-ha/<cluster>/`.
// Bucket numbers in keys are zero-padded so a range read returns them in numeric order.

import { NODE_ID_RE } from '../config/nodeId.js';

export const KEY_ROOT = '/clusterip-ha/';
const EVENT_SEQ_DIGITS = 12;

export interface Keys {
  readonly prefix: string;
  readonly spec: string;
  readonly nodesPrefix: string;
  node(id: string): string;
  readonly electionName: string;
  readonly assignPrefix: string;
  assign(vip: string): string;
  readonly claimsPrefix: string;
  claimsOf(vip: string): string;
  claim(vip: string, bucket: number): string;
  readonly statusPrefix: string;
  status(id: string): string;
  /** Known members: one lease-free record per node ever registered, removed only by `clusterip-ha forget`. */
  readonly membersPrefix: string;
  member(id: string): string;
  /** The leader's bounded change log; `seq` is zero-padded so a range read returns it in order. */
  readonly eventsPrefix: string;
  event(seq: number): string;
}

export function keysFor(cluster: string): Keys {
  const prefix = `${KEY_ROOT}${cluster}/`;
  return {
    prefix,
    spec: `${prefix}spec`,
    nodesPrefix: `${prefix}nodes/`,
    node: (id) => `${prefix}nodes/${id}`,
    // etcd3's Election appends `/<lease hex>` to this prefix.
    electionName: `${prefix}leader`,
    assignPrefix: `${prefix}assign/`,
    assign: (vip) => `${prefix}assign/${vip}`,
    claimsPrefix: `${prefix}claims/`,
    claimsOf: (vip) => `${prefix}claims/${vip}/`,
    claim: (vip, bucket) => `${prefix}claims/${vip}/${String(bucket).padStart(4, '0')}`,
    statusPrefix: `${prefix}status/`,
    status: (id) => `${prefix}status/${id}`,
    membersPrefix: `${prefix}members/`,
    member: (id) => `${prefix}members/${id}`,
    eventsPrefix: `${prefix}events/`,
    event: (seq) => `${prefix}events/${String(seq).padStart(EVENT_SEQ_DIGITS, '0')}`,
  };
}

export type ParsedKey =
  | { family: 'spec' }
  | { family: 'node'; node: string }
  | { family: 'leader'; rest: string }
  | { family: 'assign'; vip: string }
  | { family: 'claim'; vip: string; bucket: number }
  | { family: 'status'; node: string }
  | { family: 'member'; node: string }
  | { family: 'event'; seq: number }
  | { family: 'unknown'; rest: string };

/** Classify a key under `keys.prefix`. Never throws: what it cannot read is `unknown`. */
export function parseKey(keys: Keys, key: string): ParsedKey {
  if (!key.startsWith(keys.prefix)) return { family: 'unknown', rest: key };
  const rest = key.slice(keys.prefix.length);
  if (rest === 'spec') return { family: 'spec' };
  const parts = rest.split('/');
  const [family, a, b] = parts;
  // A node id that is not one (`nodes/bad@id`) is no node: it must never get buckets nobody can claim.
  if (family === 'nodes' && parts.length === 2 && a && NODE_ID_RE.test(a)) return { family: 'node', node: a };
  if (family === 'status' && parts.length === 2 && a && NODE_ID_RE.test(a)) return { family: 'status', node: a };
  if (family === 'members' && parts.length === 2 && a && NODE_ID_RE.test(a)) return { family: 'member', node: a };
  if (family === 'events' && parts.length === 2 && a && /^\d{12}$/.test(a)) return { family: 'event', seq: Number(a) };
  if (family === 'assign' && parts.length === 2 && a) return { family: 'assign', vip: a };
  if (family === 'leader') return { family: 'leader', rest: parts.slice(1).join('/') };
  if (family === 'claims' && parts.length === 3 && a && b && /^\d{1,5}$/.test(b)) {
    return { family: 'claim', vip: a, bucket: Number(b) };
  }
  return { family: 'unknown', rest };
}
