import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError, type InputIssue } from '../errors.js';
import { expected, mkIssue, sortIssues, toInputIssues, type Locator } from './issues.js';
import { NOT_AN_ADDRESS, canonicalVip, familyOf, vipAddressProblem } from './address.js';
import { deriveClusterMac, normalizeMac } from './mac.js';
import {
  BACKEND_KINDS,
  HASH_MODES,
  MAX_BUCKETS,
  type BackendKind,
  type ClusterSpec,
  type RebalancePolicy,
  type VipSpec,
} from './types.js';
import { parseYamlSource } from './yamlSource.js';

// The cluster spec: one per cluster, written to etcd by `clusterip-ha apply` and read by every agent. The
// same schema checks the operator's YAML (errors with file:line) and the JSON read back from etcd (errors
// with the key), so an agent never acts on a spec the CLI would have refused.

export interface ClusterSpecOptions {
  /** When known, bucket counts and options are checked against what this backend supports. */
  backend?: BackendKind;
}

const ABSOLUTE_MAX_BUCKETS = Math.max(...BACKEND_KINDS.map((k) => MAX_BUCKETS[k]));
const MAX_VIPS = 256;
const UINT32_MAX = 0xffffffff;

/** Linux dev_valid_name(): 1..15 bytes (IFNAMSIZ 16 with the NUL), not "." or "..", no "/", ":" or space. */
export function isValidInterfaceName(name: string): boolean {
  return name.length > 0 && Buffer.byteLength(name) < 16 && name !== '.' && name !== '..' && !/[/:\s]/.test(name);
}

const addressWhat = 'a unicast IPv4 or IPv6 address like 10.77.0.100 or 2001:db8::100';
const addressSchema = z.string({ error: expected(addressWhat) }).transform((v, ctx): string => {
  const problem = vipAddressProblem(v);
  if (problem !== null) {
    const why = problem === NOT_AN_ADDRESS ? '' : ` (${problem})`;
    ctx.addIssue({ code: 'custom', message: `${expected(addressWhat)({ input: v })}${why}` });
    return z.NEVER;
  }
  // IPv6 VIPs are compared, stored and named in one text form.
  return canonicalVip(v);
});

const interfaceSchema = z.string({ error: expected('an interface name like eth0') }).refine(isValidInterfaceName, {
  error: expected('an interface name: 1 to 15 characters, no "/", ":" or spaces'),
});

const bucketsWhat = `an integer 1..${ABSOLUTE_MAX_BUCKETS}`;
const bucketsSchema = z
  .number({ error: expected(bucketsWhat) })
  .int({ error: expected(bucketsWhat) })
  .min(1, { error: expected(bucketsWhat) })
  .max(ABSOLUTE_MAX_BUCKETS, {
    error: (iss) => `${String(iss.input)} exceeds ${ABSOLUTE_MAX_BUCKETS}, the most any backend supports`,
  });

const hashModeSchema = z.enum(HASH_MODES, { error: expected(`one of ${HASH_MODES.join(', ')}`) });

const seedWhat = 'a 32-bit seed: an integer 0..4294967295 or a hex string "0x…" of 1 to 8 digits';

/** YAML reads an unquoted 0x5eed1234 as a number already; a quoted one arrives as a string. */
export function parseSeed(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 && v <= UINT32_MAX ? v : undefined;
  if (typeof v === 'string' && /^0[xX][0-9a-fA-F]{1,8}$/.test(v)) return parseInt(v.slice(2), 16);
  if (typeof v === 'string' && /^(0|[1-9]\d{0,9})$/.test(v)) return parseSeed(Number(v));
  return undefined;
}

const seedSchema = z.unknown().transform((v, ctx): number => {
  const seed = parseSeed(v);
  if (seed === undefined) {
    ctx.addIssue({
      code: 'custom',
      message:
        v === undefined
          ? `required: ${seedWhat} (an explicit seed keeps every node's hash the same)`
          : expected(seedWhat)({ input: v }),
    });
    return z.NEVER;
  }
  return seed;
});

const macSchema = z.string({ error: expected('a MAC address like 01:00:5e:4d:00:64') }).transform((v, ctx): string => {
  const mac = normalizeMac(v);
  if (mac === undefined) {
    ctx.addIssue({ code: 'custom', message: expected('a MAC address like 01:00:5e:4d:00:64')({ input: v }) });
    return z.NEVER;
  }
  if ((parseInt(mac.slice(0, 2), 16) & 1) === 0) {
    ctx.addIssue({
      code: 'custom',
      message: `${mac} is not a multicast MAC (the first octet must be odd, e.g. 01:00:5e:…); every node must receive the VIP's frames`,
    });
    return z.NEVER;
  }
  return mac;
});

const boolSchema = z.boolean({ error: expected('true or false') });

const vipSchema = z.strictObject({
  address: addressSchema,
  interface: interfaceSchema,
  buckets: bucketsSchema,
  hashMode: hashModeSchema.default('sourceip'),
  seed: seedSchema,
  clusterMac: macSchema.optional(),
  sticky: boolSchema.default(false),
});

const movesWhat = `an integer 0..${ABSOLUTE_MAX_BUCKETS} (0 = never move buckets of live nodes)`;
const intervalWhat = 'an integer number of milliseconds 10..3600000';
const rebalanceSchema = z.strictObject({
  joinMovesPerInterval: z
    .number({ error: expected(movesWhat) })
    .int({ error: expected(movesWhat) })
    .min(0, { error: expected(movesWhat) })
    .max(ABSOLUTE_MAX_BUCKETS, { error: expected(movesWhat) })
    .default(1),
  intervalMs: z
    .number({ error: expected(intervalWhat) })
    .int({ error: expected(intervalWhat) })
    .min(10, { error: expected(intervalWhat) })
    .max(3_600_000, { error: expected(intervalWhat) })
    .default(1000),
});

const minHealthyWhat = 'an integer 0..1000 (nodes kept serving when every check fails; 0 = drain them all)';

/** The document schema (no cross-field checks; those need every VIP at once and the backend). */
export const clusterSpecSchema = z.strictObject(
  {
    vips: z
      .array(vipSchema, { error: expected('a list of VIPs') })
      .max(MAX_VIPS, { error: `at most ${MAX_VIPS} VIPs` }),
    rebalance: rebalanceSchema.default({ joinMovesPerInterval: 1, intervalMs: 1000 }),
    minHealthyNodes: z
      .number({ error: expected(minHealthyWhat) })
      .int({ error: expected(minHealthyWhat) })
      .min(0, { error: expected(minHealthyWhat) })
      .max(1000, { error: expected(minHealthyWhat) })
      .default(1),
  },
  {
    error: (iss) =>
      iss.input === undefined
        ? 'the document is empty: expected a mapping with "vips" and optionally "rebalance"'
        : expected('a mapping with "vips" and optionally "rebalance"')(iss),
  },
);

type ParsedSpec = z.output<typeof clusterSpecSchema>;

/** Checks that need several fields at once. Works on the raw value so they run even when zod found issues. */
function crossFieldIssues(raw: unknown, loc: Locator, opts: ClusterSpecOptions): InputIssue[] {
  const out: InputIssue[] = [];
  if (typeof raw !== 'object' || raw === null || !Array.isArray((raw as { vips?: unknown }).vips)) return out;
  const vips = (raw as { vips: unknown[] }).vips;
  const firstIndexOf = new Map<string, number>();
  const backend = opts.backend;
  vips.forEach((v, i) => {
    if (typeof v !== 'object' || v === null) return;
    const vip = v as Record<string, unknown>;
    const address = typeof vip.address === 'string' && vipAddressProblem(vip.address) === null ? vip.address : null;
    if (address !== null) {
      const canon = canonicalVip(address);
      const first = firstIndexOf.get(canon);
      if (first !== undefined) {
        out.push(mkIssue(loc, ['vips', i, 'address'], `${address} is already used by vips[${first}]`));
      } else firstIndexOf.set(canon, i);
    }
    if (address !== null && familyOf(address) === 'ipv6') {
      const mac =
        typeof vip.clusterMac === 'string' ? normalizeMac(vip.clusterMac) : deriveClusterMac(canonicalVip(address));
      // 33:33:00:00:00:01 is the all-nodes MAC (ff02::1): every IPv6 host on the segment would take the VIP's frames.
      if (mac === '33:33:00:00:00:01') {
        out.push(
          mkIssue(
            loc,
            ['vips', i, typeof vip.clusterMac === 'string' ? 'clusterMac' : 'address'],
            `the cluster MAC would be 33:33:00:00:00:01, the all-nodes MAC: set vips[${i}].clusterMac to another 33:33:… MAC`,
          ),
        );
      }
    }
    if (!backend) return;
    const max = MAX_BUCKETS[backend];
    if (typeof vip.buckets === 'number' && Number.isInteger(vip.buckets) && vip.buckets > max) {
      if (vip.buckets <= ABSOLUTE_MAX_BUCKETS) {
        out.push(
          mkIssue(
            loc,
            ['vips', i, 'buckets'],
            `${vip.buckets} exceeds ${max}, the most the ${backend} backend supports`,
          ),
        );
      }
    }
    if (backend === 'clusterip' && address !== null && familyOf(address) === 'ipv6') {
      out.push(
        mkIssue(
          loc,
          ['vips', i, 'address'],
          `${address} is an IPv6 VIP: the clusterip backend is IPv4 only (the kernel has no ip6 CLUSTERIP target); use the nftables backend`,
        ),
      );
    }
    if (backend === 'clusterip' && vip.sticky === true) {
      out.push(
        mkIssue(
          loc,
          ['vips', i, 'sticky'],
          'sticky mode needs the nftables backend; the clusterip backend has no such option',
        ),
      );
    }
  });
  return out;
}

function finish(parsed: ParsedSpec): ClusterSpec {
  const vips: VipSpec[] = parsed.vips.map((v) => ({
    address: v.address,
    interface: v.interface,
    buckets: v.buckets,
    hashMode: v.hashMode,
    seed: v.seed,
    clusterMac: v.clusterMac ?? deriveClusterMac(v.address),
    sticky: v.sticky,
  }));
  const rebalance: RebalancePolicy = { ...parsed.rebalance };
  // Absent means the default (1), so specs written in code and older stored values compare equal.
  return {
    vips,
    rebalance,
    ...(parsed.minHealthyNodes !== 1 ? { minHealthyNodes: parsed.minHealthyNodes } : {}),
  } satisfies ClusterSpec;
}

function validate(raw: unknown, loc: Locator, opts: ClusterSpecOptions, pre: InputIssue[] = []): ClusterSpec {
  const r = clusterSpecSchema.safeParse(raw, { reportInput: true });
  const issues = [
    ...pre,
    ...(r.success ? [] : toInputIssues(r.error.issues, loc, clusterSpecSchema)),
    ...crossFieldIssues(raw, loc, opts),
  ];
  if (issues.length > 0 || !r.success) {
    throw new ConfigError(sortIssues(dedupe(issues)));
  }
  return finish(r.data);
}

function dedupe(issues: InputIssue[]): InputIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${i.where}\0${i.line ?? ''}\0${i.path}\0${i.message}`;
    return seen.has(k) ? false : (seen.add(k), true);
  });
}

/** Parse the operator's YAML; every issue names `file:line`, the field path and what was expected. */
export function parseClusterSpecYaml(text: string, file: string, opts: ClusterSpecOptions = {}): ClusterSpec {
  const src = parseYamlSource(text, file);
  if (src.syntaxIssues.length > 0) throw new ConfigError(src.syntaxIssues);
  return validate(src.value, { where: file, lineOf: src.lineOf }, opts);
}

/** Validate a spec that arrived as JSON (etcd); `where` names the key. */
export function validateClusterSpec(value: unknown, where: string, opts: ClusterSpecOptions = {}): ClusterSpec {
  return validate(value, { where }, opts);
}

export async function loadClusterSpecFile(path: string, opts: ClusterSpecOptions = {}): Promise<ClusterSpec> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError([{ where: path, path: '', message: `cannot read: ${(err as Error).message}` }]);
  }
  return parseClusterSpecYaml(text, path, opts);
}
