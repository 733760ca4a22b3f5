import { z } from 'zod';
import { NODE_ID_RE } from '../config/nodeId.js';

export { NODE_ID_RE };

// Values stored in etcd. Each is JSON with a schema version `v`, except claims, whose value is the bare owner
// node id so that `etcdctl get` reads naturally and the release txn can compare it byte for byte.
// Anything that fails these schemas is logged with its key and ignored, never trusted.

export const nodeIdSchema = z.string().regex(NODE_ID_RE, 'a node id: letters, digits, ".", "_", "-", at most 63');

export const nodeValueSchema = z.strictObject({
  v: z.literal(1),
  address: z.string().max(255),
  weight: z.number().int().min(0).max(1000),
  draining: z.boolean(),
  version: z.string().max(64),
  startedAt: z.string().max(40),
  /** Why the node cannot take buckets now (its backend could not be set up); absent = ready. */
  notReady: z.string().max(500).optional(),
  /**
   * Drained by its own service checks (DESIGN §14): `unhealthy:<check>` or `maintenance`; absent = healthy. Kept
   * apart from `draining` (the operator's and the shutdown's) so a check recovering never undoes `drain`.
   */
  health: z.string().max(100).optional(),
});
export type NodeValue = z.infer<typeof nodeValueSchema>;

/** Whether the leader may give the node buckets: not draining, able to apply them, its checks passing. */
export function takesBuckets(v: NodeValue): boolean {
  return !v.draining && v.notReady === undefined && v.health === undefined;
}

const checkStatusSchema = z.strictObject({
  name: z.string().max(63),
  type: z.enum(['exec', 'tcp', 'http', 'https']),
  state: z.enum(['up', 'down']),
  since: z.string().max(40),
  last: z
    .strictObject({
      ok: z.boolean(),
      at: z.string().max(40),
      durationMs: z.number().nonnegative(),
      output: z.string().max(400),
      failure: z.string().max(32).optional(),
    })
    .nullable(),
  transitions: z.number().int().nonnegative(),
  flaps: z.number().int().nonnegative(),
});

/** The node's service checks as its monitor last saw them (status/<node>). */
export const healthStatusSchema = z.strictObject({
  checks: z.array(checkStatusSchema).max(32),
  drain: z.string().max(100).nullable(),
  drainSince: z.string().max(40).nullable(),
  maintenance: z.boolean(),
});
export type HealthStatusValue = z.infer<typeof healthStatusSchema>;

export const assignValueSchema = z.strictObject({
  v: z.literal(1),
  epoch: z.number().int().nonnegative(),
  /** The leader that wrote it, for operators. */
  leader: nodeIdSchema,
  /** bucket number (as a string key) → owner node id; absent = unassigned. */
  owners: z.record(z.string().regex(/^[1-9]\d{0,4}$/), nodeIdSchema),
  /**
   * The VIP's bucket count these owners are numbered for. A new count is a new bucket space: agents act on an
   * assignment only when it matches the count their kernel rule uses. Absent in values of older leaders.
   */
  buckets: z.number().int().positive().max(65535).optional(),
  /**
   * The VIP's hash identity (bucket count, hash mode, seed; DESIGN §12) these owners are numbered for: agents act
   * on the assignment only when their kernel rule has the same identity. Absent in values of older leaders.
   */
  hash: z.string().max(64).optional(),
});
export type AssignValue = z.infer<typeof assignValueSchema>;

export const claimValueSchema = nodeIdSchema;

export const backendHeldSchema = z.record(z.string(), z.array(z.number().int().positive()));

export const statusValueSchema = z.strictObject({
  v: z.literal(1),
  /** What the backend really holds, per VIP, as last read back. */
  held: backendHeldSchema,
  backend: z.string().max(32),
  fenced: z.boolean(),
  lastError: z.string().max(2000).nullable(),
  lastErrorAt: z.string().max(40).nullable(),
  lastApplyAt: z.string().max(40).nullable(),
  /** Wall-clock time of the last acknowledged keepalive (ISO). */
  lastAckAt: z.string().max(40).nullable(),
  /** Absent when the node has no checks and no maintenance file. */
  health: healthStatusSchema.optional(),
  /** The lease TTL the node asked for and the one etcd granted (etcd raises a TTL below its minimum). */
  leaseTtlRequested: z.number().int().positive().optional(),
  leaseTtlGranted: z.number().int().positive().optional(),
  /** nftables: the cluster MAC subscriptions, "eth0 01:00:5e:4d:00:64 subscribed" each (absent: not asked). */
  multicast: z.array(z.string().max(300)).max(256).optional(),
  updatedAt: z.string().max(40),
});
export type StatusValue = z.infer<typeof statusValueSchema>;

/** `members/<id>`: the node was part of the cluster. Lease-free: a node that is gone is shown DOWN until forgotten. */
export const memberValueSchema = z.strictObject({
  v: z.literal(1),
  /** When the leader first saw the node (ISO, the leader's clock). */
  firstSeenAt: z.string().max(40),
  address: z.string().max(255),
});
export type MemberValue = z.infer<typeof memberValueSchema>;

export const CLUSTER_EVENT_KINDS = [
  'nodeJoined', // a node registered for the first time
  'nodeBack', // a known node registered again (a restart, a new lease)
  'nodeLost', // a node's lease ended: its key, claims and status vanished
  'nodeFenced', // a node fenced itself (cut off from etcd past its deadline)
  'nodeUnfenced',
  'nodeDraining',
  'nodeUndrained',
  'bucketsMoved', // claims changed hands (a failover, a drain, a join)
  'leaderChanged',
] as const;
export type ClusterEventKind = (typeof CLUSTER_EVENT_KINDS)[number];

/** `events/<seq>`: one change the leader saw, for `clusterip-ha events` and `status --watch`. */
export const clusterEventSchema = z.strictObject({
  v: z.literal(1),
  /** When the leader saw it (ISO, the leader's clock). */
  at: z.string().max(40),
  /** The etcd revision it was seen at: a new leader records only what is newer than the last event. */
  revision: z.string().regex(/^\d{1,20}$/),
  leader: nodeIdSchema,
  kind: z.enum(CLUSTER_EVENT_KINDS),
  node: nodeIdSchema.optional(),
  vip: z.string().max(64).optional(),
  /** bucketsMoved: how many buckets, from which node (null: unowned before), to which nodes (count each). */
  buckets: z.number().int().nonnegative().optional(),
  from: nodeIdSchema.nullable().optional(),
  to: z.record(nodeIdSchema, z.number().int().positive()).optional(),
  /** bucketsMoved: the longest time one of them was unowned, as the leader's watch saw it. */
  failoverMs: z.number().nonnegative().optional(),
  detail: z.string().max(500),
});
export type ClusterEvent = z.infer<typeof clusterEventSchema>;

export type Decoded<T> = { ok: true; value: T } | { ok: false; error: string };

/** Parse a raw etcd value against a schema; the error text names what was wrong, for a log line with the key. */
export function decodeJson<T>(schema: z.ZodType<T>, raw: string): Decoded<T> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    return { ok: false, error: `not JSON: ${(err as Error).message}` };
  }
  const r = schema.safeParse(parsed);
  if (r.success) return { ok: true, value: r.data };
  return {
    ok: false,
    error: r.error.issues.map((i) => `${i.path.join('.') || '(value)'}: ${i.message}`).join('; '),
  };
}

export function decodeClaim(raw: string): Decoded<string> {
  const r = claimValueSchema.safeParse(raw);
  return r.success
    ? { ok: true, value: r.data }
    : { ok: false, error: `claim value is not a node id: ${JSON.stringify(raw.slice(0, 80))}` };
}
