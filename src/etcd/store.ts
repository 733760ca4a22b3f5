import {
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  Range,
  type Etcd3,
  type IKeyValue,
  type IWatchResponse,
  type Watcher,
} from 'etcd3';
import type { ClusterSpec } from '../config/types.js';
import { EtcdUnavailableError } from '../errors.js';
import { parseKey, type Keys } from './keys.js';
import { decodeStoredSpec } from './spec.js';
import {
  assignValueSchema,
  clusterEventSchema,
  decodeClaim,
  decodeJson,
  memberValueSchema,
  nodeValueSchema,
  statusValueSchema,
  type AssignValue,
  type ClusterEvent,
  type MemberValue,
  type NodeValue,
  type StatusValue,
} from './values.js';
import { backoffMs } from '../backoff.js';

// The narrow read side of etcd: one decoded picture of a cluster's prefix, built from a range read and kept
// current from one prefix watch. Shared by the agent (claims, leader), the CLI's status and the observer.
// Invalid values are kept out of the picture (a bad write leaves the last good value in place) and listed in
// `badValues` with their key; decoding never throws.

export interface NodeEntry {
  value: NodeValue;
  lease: string;
  modRevision: string;
}

export interface ClaimEntry {
  owner: string;
  lease: string;
  createRevision: string;
  /** As read from etcd (absent in our own overlaid writes): guards the leader's sweep of a ghost claim. */
  modRevision?: string;
}

export interface AssignEntry {
  value: AssignValue;
  modRevision: string;
}

export interface CandidateEntry {
  key: string;
  node: string;
  lease: string;
  createRevision: string;
}

export interface SpecEntry {
  spec: ClusterSpec;
  generation: number;
  modRevision: string;
}

export interface BadValue {
  key: string;
  error: string;
  /** Mod revision of the bad value (for a delete guarded by Mod == it). */
  modRevision?: string;
  /** A claim key only: the good claim this value overwrote (its owner may delete the garbage once it let go). */
  overwrote?: ClaimEntry;
}

export interface ClusterState {
  /** The etcd revision this picture reflects. */
  revision: string;
  spec: SpecEntry | null;
  nodes: Map<string, NodeEntry>;
  /** Election candidates, lowest create revision first; the first is the leader. */
  candidates: CandidateEntry[];
  leader: string | null;
  assignments: Map<string, AssignEntry>;
  /** vip → bucket → claim. */
  claims: Map<string, Map<number, ClaimEntry>>;
  statuses: Map<string, StatusValue>;
  /** Known members (lease-free records), by node id. */
  members: Map<string, MemberValue>;
  /** The leader's change log, by sequence number (insertion order; sort the keys to read it in order). */
  events: Map<number, ClusterEvent>;
  /** Values currently under the prefix that failed validation (key → error). */
  badValues: BadValue[];
}

export function emptyClusterState(): ClusterState {
  return {
    revision: '0',
    spec: null,
    nodes: new Map(),
    candidates: [],
    leader: null,
    assignments: new Map(),
    claims: new Map(),
    statuses: new Map(),
    members: new Map(),
    events: new Map(),
    badValues: [],
  };
}

/**
 * The `spec` key's mod revision in this picture, garbage included: garbage keeps the last good spec in the
 * picture (`spec`) but moves the key, and an acquire compares the key (DESIGN §12). null: no spec key.
 */
export function specKeyRevision(state: ClusterState, keys: Keys): string | null {
  return state.badValues.find((b) => b.key === keys.spec)?.modRevision ?? state.spec?.modRevision ?? null;
}

/** What one applied key did: for callers that emit `badValue` events on fresh garbage only. */
export type ApplyOutcome = { ok: true } | { ok: false; key: string; error: string };

export const NODE_WITHOUT_LEASE = 'node key without a lease';
export const CLAIM_WITHOUT_LEASE = 'claim without a lease';

/** Fold one put into the picture. Pure with respect to I/O; mutates `state`. */
export function applyPut(state: ClusterState, keys: Keys, kv: IKeyValue): ApplyOutcome {
  const key = kv.key.toString();
  const raw = kv.value.toString();
  // A new value replaces any earlier bad one under the same key.
  removeBad(state, key);
  // A bad write is ignored: the last good value under the key (if any) stays in the picture, so garbage written
  // over the spec or an assignment cannot make agents drop buckets.
  const bad = (error: string): ApplyOutcome => {
    state.badValues.push({ key, error, modRevision: kv.mod_revision });
    return { ok: false, key, error };
  };
  const pk = parseKey(keys, key);
  switch (pk.family) {
    case 'spec': {
      try {
        const { spec, generation } = decodeStoredSpec(raw, key);
        state.spec = { spec, generation, modRevision: kv.mod_revision };
      } catch (err) {
        return bad((err as Error).message);
      }
      return { ok: true };
    }
    case 'node': {
      // Detached from every lease, the key would outlive its agent and count as a live node forever: it is no
      // node at all (its agent, if it runs, puts it back under its lease; the leader sweeps it otherwise).
      if (kv.lease === '0') {
        state.nodes.delete(pk.node);
        return bad(NODE_WITHOUT_LEASE);
      }
      const d = decodeJson(nodeValueSchema, raw);
      if (!d.ok) return bad(d.error);
      state.nodes.set(pk.node, { value: d.value, lease: kv.lease, modRevision: kv.mod_revision });
      return { ok: true };
    }
    case 'status': {
      const d = decodeJson(statusValueSchema, raw);
      if (!d.ok) return bad(d.error);
      state.statuses.set(pk.node, d.value);
      return { ok: true };
    }
    case 'member': {
      const d = decodeJson(memberValueSchema, raw);
      if (!d.ok) return bad(d.error);
      state.members.set(pk.node, d.value);
      return { ok: true };
    }
    case 'event': {
      const d = decodeJson(clusterEventSchema, raw);
      if (!d.ok) return bad(d.error);
      state.events.set(pk.seq, d.value);
      return { ok: true };
    }
    case 'assign': {
      const d = decodeJson(assignValueSchema, raw);
      if (!d.ok) return bad(d.error);
      state.assignments.set(pk.vip, { value: d.value, modRevision: kv.mod_revision });
      return { ok: true };
    }
    case 'claim': {
      // Unlike other keys, a bad claim does not keep its last good value: the key holds nobody's claim, so its
      // former owner must let go in the kernel (kernel ⊆ claims) before the leader sweeps it.
      const d = decodeClaim(raw);
      if (!d.ok || kv.lease === '0') {
        const overwrote = state.claims.get(pk.vip)?.get(pk.bucket);
        state.claims.get(pk.vip)?.delete(pk.bucket);
        // A claim outside any lease never goes away by itself.
        const out = bad(d.ok ? CLAIM_WITHOUT_LEASE : d.error);
        if (overwrote) state.badValues[state.badValues.length - 1]!.overwrote = overwrote;
        return out;
      }
      let m = state.claims.get(pk.vip);
      if (!m) state.claims.set(pk.vip, (m = new Map()));
      m.set(pk.bucket, {
        owner: d.value,
        lease: kv.lease,
        createRevision: kv.create_revision,
        modRevision: kv.mod_revision,
      });
      return { ok: true };
    }
    case 'leader': {
      // A candidate is only a candidate under the lease its key names; anything else (a put without a lease,
      // garbage) is dropped here, so full reads and watches agree on who leads, and the leader deletes it.
      state.candidates = state.candidates.filter((c) => c.key !== key);
      sortCandidates(state);
      const d = decodeClaim(raw);
      if (!d.ok) return bad(`election value is not a node id: ${JSON.stringify(raw.slice(0, 80))}`);
      if (!candidateLeaseMatches(pk.rest, kv.lease)) return bad(`election key not under its lease (${kv.lease})`);
      state.candidates.push({ key, node: d.value, lease: kv.lease, createRevision: kv.create_revision });
      sortCandidates(state);
      return { ok: true };
    }
    case 'unknown':
      return bad('unknown key under the cluster prefix');
  }
}

/** Fold one delete into the picture. */
export function applyDelete(state: ClusterState, keys: Keys, key: string): void {
  removeBad(state, key);
  dropKey(state, keys, key);
}

function dropKey(state: ClusterState, keys: Keys, key: string): void {
  const pk = parseKey(keys, key);
  switch (pk.family) {
    case 'spec':
      state.spec = null;
      return;
    case 'node':
      state.nodes.delete(pk.node);
      return;
    case 'status':
      state.statuses.delete(pk.node);
      return;
    case 'member':
      state.members.delete(pk.node);
      return;
    case 'event':
      state.events.delete(pk.seq);
      return;
    case 'assign':
      state.assignments.delete(pk.vip);
      return;
    case 'claim': {
      const m = state.claims.get(pk.vip);
      m?.delete(pk.bucket);
      if (m && m.size === 0) state.claims.delete(pk.vip);
      return;
    }
    case 'leader':
      state.candidates = state.candidates.filter((c) => c.key !== key);
      sortCandidates(state);
      return;
    case 'unknown':
      return;
  }
}

/** `<electionName>/<lease hex>` must be held under exactly that lease. */
export function candidateLeaseMatches(rest: string, lease: string): boolean {
  if (lease === '0' || !/^[0-9a-f]{1,16}$/.test(rest)) return false;
  try {
    return BigInt(`0x${rest}`) === BigInt(lease);
  } catch {
    return false;
  }
}

function removeBad(state: ClusterState, key: string): void {
  if (state.badValues.some((b) => b.key === key)) state.badValues = state.badValues.filter((b) => b.key !== key);
}

function sortCandidates(state: ClusterState): void {
  state.candidates.sort((a, b) => cmpRevision(a.createRevision, b.createRevision));
  state.leader = state.candidates[0]?.node ?? null;
}

/** Compare two etcd revisions (decimal int64 strings). */
export function cmpRevision(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Keys per page of a full read (halved while etcd's answer would exceed the client's 4 MiB message limit). */
export const READ_PAGE_KEYS = 256;
const READ_ATTEMPTS = 5;

/**
 * Read the whole prefix once and decode it. Throws EtcdUnavailableError when etcd does not answer.
 *
 * The read is paginated (limit + continue after the last key), every page at the first page's revision, so the
 * picture is one consistent revision however much lies under the prefix; the watch then starts right after it.
 * A single answer larger than grpc's 4 MiB receive limit (a large cluster, or junk values of a MiB each) would
 * otherwise fail the read forever: a page that is too large is asked again with half the keys.
 */
export async function loadClusterState(etcd: Etcd3, keys: Keys, pageKeys = READ_PAGE_KEYS): Promise<ClusterState> {
  const range = Range.prefix(keys.prefix);
  let lastError: unknown;
  for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    try {
      return await readPages(etcd, keys, range, pageKeys);
    } catch (err) {
      // Refused (role, credentials) is not unreachable: the caller says so in words.
      if (err instanceof EtcdPermissionDeniedError || err instanceof EtcdAuthenticationFailedError) throw err;
      lastError = err;
      // The revision we were reading at was compacted between pages: start over at a new one.
      if (!/compacted/i.test((err as Error).message)) break;
    }
  }
  throw new EtcdUnavailableError(`reading ${keys.prefix}: ${(lastError as Error).message}`, { cause: lastError });
}

async function readPages(etcd: Etcd3, keys: Keys, range: Range, pageKeys: number): Promise<ClusterState> {
  const state = emptyClusterState();
  let from = range.start;
  let revision: string | undefined;
  let limit = Math.max(1, pageKeys);
  // Bounded: every page either makes progress (at least one key) or halves the limit.
  for (let pages = 0; pages < 1_000_000; pages++) {
    let res;
    try {
      res = await etcd.kv.range({
        key: from,
        range_end: range.end,
        limit,
        ...(revision !== undefined ? { revision } : {}),
      });
    } catch (err) {
      if (limit > 1 && isTooLarge(err)) {
        limit = Math.max(1, Math.floor(limit / 2));
        continue;
      }
      throw err;
    }
    revision ??= res.header.revision;
    for (const kv of res.kvs) applyPut(state, keys, kv);
    const last = res.kvs[res.kvs.length - 1];
    if (!res.more || !last) break;
    // The next key after `last`: the key itself with a zero byte appended.
    from = Buffer.concat([last.key, Buffer.from([0])]);
    if (limit < pageKeys) limit = Math.min(pageKeys, limit * 2);
  }
  state.revision = revision ?? '0';
  return state;
}

/** grpc's RESOURCE_EXHAUSTED for an answer over the receive limit ("Received message larger than max"). */
function isTooLarge(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return e.code === 8 || /larger than max|RESOURCE_EXHAUSTED/i.test(String(e.message ?? ''));
}

/**
 * Make a watcher resume, after a reconnect, right after the last revision the caller applied. etcd3 itself resumes
 * from the header revision of the last answer, and the "created" answer of a reconnect carries etcd's current
 * revision, not the last event sent: a stream that drops again before the catch-up arrives skips it for good
 * (test/integration/store-watch.test.ts). etcd3 re-sends `request` on every reattach, after 'disconnected'.
 */
export function resumeAfterApplied(w: Watcher, lastApplied: () => string): void {
  w.on('disconnected', () => {
    (w.request as { start_revision?: string | number }).start_revision = (BigInt(lastApplied()) + 1n).toString();
  });
}

/** One batch of watch events, already folded into the state. */
export interface StateChange {
  revision: string;
  puts: string[];
  deletes: string[];
  /** Values in this batch that failed validation. */
  bad: BadValue[];
}

export interface ClusterWatch {
  readonly state: ClusterState;
  /** Drop the stream and start over from a fresh read (a stream that went silent on a dead connection). */
  reload(): Promise<void>;
  close(): Promise<void>;
}

export interface WatchClusterOptions {
  /**
   * Called after each batch was folded into `state`: one etcd watch response, or with `everyRevision` one
   * revision of it.
   */
  onChange: (change: StateChange) => void;
  /**
   * Call onChange once per etcd revision, so every state etcd passed through is seen (the invariant observer: a
   * claim taken and handed on within one response must not vanish). Off, a response is one change: an agent acts
   * on the newest picture only.
   */
  everyRevision?: boolean;
  /** Watch errors and reloads, for an `etcdError` event. Never fatal: the watch reloads and resumes. */
  onError?: (error: Error) => void;
  /** Start from this picture (must come from loadClusterState); loads one otherwise. */
  initial?: ClusterState;
  /** The stream was down during [fromMs, toMs] and has resumed: events of that time arrived late (if at all). */
  onStale?: (fromMs: number, toMs: number) => void;
  /**
   * Fault injection (tests, chaos): fold every batch in this long after it arrived, in order, so the picture lags
   * etcd while writes do not (a slow watch). 0 or absent: at once.
   */
  applyDelayMs?: number;
}

/** Environment variable the agent reads `applyDelayMs` from (fault injection only; unset in production). */
export const WATCH_LAG_ENV = 'CLUSTERIP_HA_WATCH_LAG_MS';

/** The injected watch lag from the environment: a whole number of ms up to a minute, else none. */
export function watchLagFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const ms = Number(env[WATCH_LAG_ENV] ?? 0);
  return Number.isInteger(ms) && ms > 0 && ms <= 60_000 ? ms : 0;
}

/**
 * Keep a ClusterState current from one prefix watch starting right after the snapshot's revision. After a
 * reconnect the watch resumes right after the last event applied; if the watch fails for good (compaction), the
 * picture is reloaded and the watch restarted, and the reload is reported as one change touching every key.
 */
export async function watchCluster(etcd: Etcd3, keys: Keys, opts: WatchClusterOptions): Promise<ClusterWatch> {
  let state = opts.initial ?? (await loadClusterState(etcd, keys));
  let watcher: Watcher | undefined;
  let closed = false;
  // Since when the stream has been down (null: up), for onStale.
  let downSince: number | null = null;

  const start = async (): Promise<void> => {
    const w = await etcd
      .watch()
      .prefix(keys.prefix)
      .startRevision((BigInt(state.revision) + 1n).toString())
      .create();
    if (closed) {
      await w.cancel().catch(() => undefined);
      return;
    }
    watcher = w;
    const fold = (res: IWatchResponse): void => {
      if (closed) return;
      let change: StateChange = { revision: state.revision, puts: [], deletes: [], bad: [] };
      // The picture's revision is the last event's: a pure progress header must not run ahead of events.
      let rev = BigInt(state.revision);
      const emit = (): void => {
        state.revision = rev.toString();
        change.revision = state.revision;
        if (change.puts.length + change.deletes.length > 0) opts.onChange(change);
        change = { revision: state.revision, puts: [], deletes: [], bad: [] };
      };
      for (const ev of res.events) {
        const r = BigInt(ev.kv.mod_revision);
        // One response may carry many revisions (a catch-up, a slow reader): folded together, a claim that lived
        // for one of them would never be seen. Each revision (one txn) is one change for whoever needs them all.
        if (opts.everyRevision && r > rev && change.puts.length + change.deletes.length > 0) emit();
        if (r > rev) rev = r;
        const key = ev.kv.key.toString();
        if (ev.type === 'Put') {
          const o = applyPut(state, keys, ev.kv);
          change.puts.push(key);
          if (!o.ok) change.bad.push({ key: o.key, error: o.error });
        } else {
          applyDelete(state, keys, key);
          change.deletes.push(key);
        }
      }
      emit();
    };
    const lag = opts.applyDelayMs ?? 0;
    // Timers of one delay fire in the order they were set: the lagging picture still folds in revision order.
    w.on('data', (res) => (lag > 0 ? void setTimeout(() => fold(res), lag) : fold(res)));
    resumeAfterApplied(w, () => state.revision);
    w.on('disconnected', (err: Error) => {
      downSince ??= Date.now();
      opts.onError?.(err);
    });
    w.on('connected', () => {
      if (downSince === null) return;
      const from = downSince;
      downSince = null;
      opts.onStale?.(from, Date.now());
    });
    w.on('error', (err: Error) => {
      opts.onError?.(err);
      void restart();
    });
  };

  let restarting = false;
  const restart = async (): Promise<void> => {
    if (restarting || closed) return;
    restarting = true;
    downSince ??= Date.now();
    try {
      await watcher?.cancel().catch(() => undefined);
      watcher = undefined;
      for (let attempt = 0; !closed; attempt++) {
        try {
          const fresh = await loadClusterState(etcd, keys);
          state = fresh;
          watchHandle.state = fresh;
          opts.onChange({ revision: fresh.revision, puts: [keys.prefix], deletes: [], bad: fresh.badValues });
          await start();
          const from = downSince ?? Date.now();
          downSince = null;
          opts.onStale?.(from, Date.now());
          return;
        } catch (err) {
          opts.onError?.(err as Error);
          await new Promise((r) => setTimeout(r, backoffMs(attempt)));
        }
      }
    } finally {
      restarting = false;
    }
  };

  const watchHandle = {
    state,
    reload: () => restart(),
    async close() {
      closed = true;
      await watcher?.cancel().catch(() => undefined);
    },
  };
  await start();
  return watchHandle;
}
