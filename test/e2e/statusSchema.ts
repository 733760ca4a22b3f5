import { readFileSync } from 'node:fs';
import { z } from 'zod';

// docs/status-json.md as a zod schema: tests parse real `status --json` output with it, and check that the
// page documents exactly these fields.

const anomaly = z.strictObject({
  kind: z.enum([
    'noSpec',
    'noNodes',
    'noLeader',
    'unowned',
    'unassigned',
    'claimNotAssigned',
    'backendNotClaim',
    'doubleBackend',
    'fenced',
    'backendError',
    'drainPending',
    'notReady',
    'unhealthy',
    'healthPanic',
    'nodeDown',
    'badValue',
  ]),
  severity: z.enum(['error', 'degraded', 'warning']),
  graceMs: z.number().int().nonnegative(),
  seenForMs: z.number().nonnegative(),
  vip: z.string().optional(),
  bucket: z.number().int().positive().optional(),
  node: z.string().optional(),
  detail: z.string(),
});

const check = z.strictObject({
  name: z.string(),
  type: z.enum(['exec', 'tcp', 'http', 'https']),
  state: z.enum(['up', 'down']),
  since: z.string(),
  last: z
    .strictObject({
      ok: z.boolean(),
      at: z.string(),
      durationMs: z.number().nonnegative(),
      output: z.string(),
      failure: z.string().optional(),
    })
    .nullable(),
  transitions: z.number().int().nonnegative(),
  flaps: z.number().int().nonnegative(),
});

const node = z.strictObject({
  id: z.string(),
  state: z.enum(['up', 'down']),
  alive: z.boolean(),
  member: z.boolean(),
  draining: z.boolean(),
  notReady: z.string().nullable(),
  weight: z.number().int().nullable(),
  leaseTtlLeft: z.number().nullable(),
  fenced: z.boolean().nullable(),
  version: z.string().nullable(),
  backendKind: z.string().nullable(),
  lastError: z.string().nullable(),
  lastErrorAt: z.string().nullable(),
  lastAckAt: z.string().nullable(),
  leaseTtlRequested: z.number().int().nullable(),
  leaseTtlGranted: z.number().int().nullable(),
  multicast: z.array(z.string()).nullable(),
  claims: z.number().int().nonnegative(),
  leader: z.boolean(),
  health: z.string().nullable(),
  panicKept: z.boolean(),
  checks: z.array(check).nullable(),
});

const panic = z.strictObject({
  kept: z.array(z.string()),
  healthy: z.number().int().nonnegative(),
  minHealthyNodes: z.number().int().nonnegative(),
});

const bucket = z.strictObject({
  bucket: z.number().int().positive(),
  owner: z.string().nullable(),
  assigned: z.string().nullable(),
  backend: z.string().nullable(),
});

const vip = z.strictObject({
  address: z.string(),
  interface: z.string().nullable(),
  bucketCount: z.number().int().nonnegative(),
  hashMode: z.string().nullable(),
  epoch: z.number().int().nullable(),
  buckets: z.array(bucket),
});

export const statusJsonSchema = z.strictObject({
  schema: z.literal(1),
  cluster: z.string(),
  revision: z.string().regex(/^\d+$/),
  healthy: z.boolean(),
  health: z.enum(['healthy', 'degraded', 'unhealthy']),
  leader: z.string().nullable(),
  specGeneration: z.number().int().nullable(),
  panic: panic.nullable(),
  anomalies: z.array(anomaly),
  settling: z.array(anomaly),
  nodes: z.array(node),
  vips: z.array(vip),
});
export type StatusJson = z.infer<typeof statusJsonSchema>;

export const DOCUMENTED_OBJECTS = {
  'Top level': statusJsonSchema,
  Anomaly: anomaly,
  Node: node,
  Vip: vip,
  Bucket: bucket,
  Check: check,
  Panic: panic,
};

/** `## Section` → the field names of its table in docs/status-json.md. */
export function documentedFields(): Map<string, string[]> {
  const text = readFileSync(new URL('../../docs/status-json.md', import.meta.url), 'utf8');
  const out = new Map<string, string[]>();
  let section = '';
  for (const line of text.split('\n')) {
    const h = /^## (.+)$/.exec(line);
    if (h) section = h[1]!.trim();
    const row = /^\|\s*`([A-Za-z]+)`\s*\|/.exec(line);
    if (row && section) out.set(section, [...(out.get(section) ?? []), row[1]!]);
  }
  return out;
}
