import type { Etcd3, IKeyValue } from 'etcd3';
import { z } from 'zod';
import { validateClusterSpec } from '../config/index.js';
import type { ClusterSpec } from '../config/types.js';
import { ConfigError, ConflictError, EtcdUnavailableError } from '../errors.js';
import type { Keys } from './keys.js';

// The cluster spec as stored under `spec`: `{v: 1, generation, spec}` (JSON). `generation` counts applies so
// operators and status can tell specs apart; writes are compare-and-swap on the key's mod revision.

export const storedSpecEnvelopeSchema = z.strictObject({
  v: z.literal(1),
  generation: z.number().int().positive(),
  spec: z.unknown(),
});

export interface StoredSpec {
  spec: ClusterSpec;
  generation: number;
  /** The `spec` key's mod revision, for the next compare-and-swap. */
  modRevision: string;
}

/** Decode a raw `spec` value; throws ConfigError naming the key and every problem. */
export function decodeStoredSpec(raw: string, key: string): { spec: ClusterSpec; generation: number } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw new ConfigError([{ where: key, path: '', message: `not JSON: ${(err as Error).message}` }]);
  }
  const env = storedSpecEnvelopeSchema.safeParse(parsed);
  if (!env.success) {
    throw new ConfigError(env.error.issues.map((i) => ({ where: key, path: i.path.join('.'), message: i.message })));
  }
  return { spec: validateClusterSpec(env.data.spec, key), generation: env.data.generation };
}

export function encodeStoredSpec(spec: ClusterSpec, generation: number): string {
  return JSON.stringify({ v: 1, generation, spec });
}

/** A `spec` value that does not decode: `apply` may replace it (compare-and-swap on its mod revision). */
export interface UnreadableSpec {
  unreadable: true;
  /** Why it does not decode, naming the key. */
  error: string;
  /** Its generation if one can still be read, else 0. */
  generation: number;
  modRevision: string;
}

/** The stored spec, or null when none was applied yet. Throws ConfigError when the stored value is invalid. */
export async function readSpec(etcd: Etcd3, keys: Keys): Promise<StoredSpec | null> {
  const kv = await getSpecKv(etcd, keys);
  if (!kv) return null;
  const { spec, generation } = decodeStoredSpec(kv.value.toString(), keys.spec);
  return { spec, generation, modRevision: kv.mod_revision };
}

/** The stored spec, null when none was applied yet, or what is wrong with a stored value that does not decode. */
export async function readSpecOrUnreadable(etcd: Etcd3, keys: Keys): Promise<StoredSpec | UnreadableSpec | null> {
  const kv = await getSpecKv(etcd, keys);
  if (!kv) return null;
  const raw = kv.value.toString();
  try {
    const { spec, generation } = decodeStoredSpec(raw, keys.spec);
    return { spec, generation, modRevision: kv.mod_revision };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return { unreadable: true, error: err.message, generation: lenientGeneration(raw), modRevision: kv.mod_revision };
  }
}

async function getSpecKv(etcd: Etcd3, keys: Keys): Promise<IKeyValue | undefined> {
  try {
    return (await etcd.get(keys.spec).exec()).kvs[0];
  } catch (err) {
    throw new EtcdUnavailableError(`reading ${keys.spec}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Write the spec if the key is still at `expectModRevision` ('absent': not there yet). Throws ConflictError when
 * someone else wrote in between. A previous value that no longer decodes is overwritten (its generation is
 * read leniently so the count keeps going up).
 */
export async function writeSpec(
  etcd: Etcd3,
  keys: Keys,
  spec: ClusterSpec,
  opts: { expectModRevision: string | 'absent' },
): Promise<{ generation: number; modRevision: string }> {
  // Validate before writing: nothing unvalidated ever reaches etcd from us.
  const valid = validateClusterSpec(spec as unknown, 'spec');
  let prevGeneration = 0;
  try {
    if (opts.expectModRevision !== 'absent') {
      const cur = await etcd.get(keys.spec).exec();
      const kv = cur.kvs[0];
      if (!kv || kv.mod_revision !== opts.expectModRevision) {
        throw new ConflictError(
          `spec changed since it was read (expected mod revision ${opts.expectModRevision}, found ${kv ? kv.mod_revision : 'none'})`,
        );
      }
      prevGeneration = lenientGeneration(kv.value.toString());
    }
    const cmp =
      opts.expectModRevision === 'absent'
        ? etcd.if(keys.spec, 'Create', '==', 0)
        : etcd.if(keys.spec, 'Mod', '==', opts.expectModRevision);
    const generation = prevGeneration + 1;
    const res = await cmp.then(etcd.put(keys.spec).value(encodeStoredSpec(valid, generation))).commit();
    if (!res.succeeded) {
      throw new ConflictError(
        opts.expectModRevision === 'absent'
          ? 'a spec already exists (expected none)'
          : `spec changed since it was read (expected mod revision ${opts.expectModRevision})`,
      );
    }
    return { generation, modRevision: res.header.revision };
  } catch (err) {
    if (err instanceof ConflictError || err instanceof ConfigError) throw err;
    throw new EtcdUnavailableError(`writing ${keys.spec}: ${(err as Error).message}`, { cause: err });
  }
}

function lenientGeneration(raw: string): number {
  try {
    const g = (JSON.parse(raw) as { generation?: unknown }).generation;
    return typeof g === 'number' && Number.isInteger(g) && g > 0 ? g : 0;
  } catch {
    return 0;
  }
}
