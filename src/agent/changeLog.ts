import type { ClusterState } from '../etcd/store.js';
import type { ClusterEventKind } from '../etcd/values.js';

// The cluster's change log as a pure fold over successive pictures: every agent folds every picture it sees (so
// a new leader knows what happened while the old one died), and the leader writes what it folded (recorder.ts).
// Bucket moves are grouped per VIP and source node and written once the group is quiet, so a failover of five
// buckets is one line with its failover time, not five.

/** A change before the leader gave it a sequence number. */
export interface ChangeDraft {
  kind: ClusterEventKind;
  /** Wall clock (ms) when seen. */
  atMs: number;
  revision: string;
  node?: string;
  vip?: string;
  buckets?: number;
  from?: string | null;
  to?: Record<string, number>;
  failoverMs?: number;
  detail: string;
}

interface NodeSeen {
  lease: string;
  draining: boolean;
}

interface MoveGroup {
  vip: string;
  from: string | null;
  to: Map<string, number>;
  buckets: number;
  failoverMs: number;
  lastAtMs: number;
}

export interface ChangeTracker {
  /** Null until the first picture: the first one is the baseline, nothing in it is a change. */
  nodes: Map<string, NodeSeen> | null;
  fenced: Map<string, boolean>;
  lastAckAt: Map<string, string | null>;
  claims: Map<string, string>;
  leader: string | null;
  /** `vip#bucket` → who owned it last and when it became unowned. */
  unownedSince: Map<string, { from: string; atMs: number }>;
  groups: Map<string, MoveGroup>;
}

/** A move group is written once no move joined it for this long and none of its source's buckets is unowned. */
export const MOVE_QUIET_MS = 300;
/** A group is written after this long even when buckets stay unowned (nobody can take them). */
export const MOVE_MAX_WAIT_MS = 10_000;

export function newChangeTracker(): ChangeTracker {
  return {
    nodes: null,
    fenced: new Map(),
    lastAckAt: new Map(),
    claims: new Map(),
    leader: null,
    unownedSince: new Map(),
    groups: new Map(),
  };
}

/** Fold one picture into the tracker; returns the changes it completes (moves come later, from flushMoves). */
export function foldPicture(t: ChangeTracker, state: ClusterState, nowMs: number): ChangeDraft[] {
  const out: ChangeDraft[] = [];
  const rev = state.revision;
  const draft = (d: Omit<ChangeDraft, 'atMs' | 'revision'>) => out.push({ ...d, atMs: nowMs, revision: rev });
  const baseline = t.nodes === null;
  const prevNodes = t.nodes ?? new Map<string, NodeSeen>();

  const nodes = new Map<string, NodeSeen>();
  for (const [id, n] of state.nodes) nodes.set(id, { lease: n.lease, draining: n.value.draining });
  // A node without a member record has joined: the recorder writes nodeJoined with the record, exactly once.
  if (!baseline) {
    for (const [id, n] of nodes) {
      const p = prevNodes.get(id);
      if (!p || p.lease !== n.lease) {
        if (state.members.has(id) || p !== undefined)
          draft({ kind: 'nodeBack', node: id, detail: `${id} registered again (new lease)` });
      } else if (p.draining !== n.draining) {
        draft({
          kind: n.draining ? 'nodeDraining' : 'nodeUndrained',
          node: id,
          detail: n.draining ? `${id} is draining` : `${id} was undrained`,
        });
      }
    }
    for (const id of prevNodes.keys()) {
      if (nodes.has(id)) continue;
      const ack = t.lastAckAt.get(id);
      draft({
        kind: 'nodeLost',
        node: id,
        detail: `${id} lost its lease${ack ? ` (last keepalive ack it published: ${ack})` : ''}`,
      });
    }
  }
  t.nodes = nodes;

  for (const [id, s] of state.statuses) {
    const was = t.fenced.get(id);
    if (!baseline && was !== undefined && was !== s.fenced)
      draft({
        kind: s.fenced ? 'nodeFenced' : 'nodeUnfenced',
        node: id,
        detail: s.fenced ? `${id} fenced itself: it holds nothing` : `${id} is serving again`,
      });
    t.fenced.set(id, s.fenced);
    t.lastAckAt.set(id, s.lastAckAt);
  }
  for (const id of [...t.fenced.keys()]) if (!state.statuses.has(id) && !nodes.has(id)) t.fenced.delete(id);
  for (const id of [...t.lastAckAt.keys()]) if (!state.statuses.has(id) && !nodes.has(id)) t.lastAckAt.delete(id);

  if (!baseline && state.leader !== null && state.leader !== t.leader)
    draft({ kind: 'leaderChanged', node: state.leader, detail: `${state.leader} leads` });
  t.leader = state.leader;

  const claims = new Map<string, string>();
  for (const [vip, m] of state.claims) for (const [b, c] of m) claims.set(`${vip}#${b}`, c.owner);
  if (!baseline) {
    for (const [k, prev] of t.claims) if (!claims.has(k)) t.unownedSince.set(k, { from: prev, atMs: nowMs });
    for (const [k, owner] of claims) {
      const prev = t.claims.get(k);
      if (prev === owner) continue;
      const u = t.unownedSince.get(k);
      t.unownedSince.delete(k);
      const from = u?.from ?? prev ?? null;
      if (from === owner) continue; // back to the same owner (a restart): not a move
      const vip = k.slice(0, k.lastIndexOf('#'));
      const gk = `${vip}#${from ?? ''}`;
      let g = t.groups.get(gk);
      if (!g) t.groups.set(gk, (g = { vip, from, to: new Map(), buckets: 0, failoverMs: 0, lastAtMs: nowMs }));
      g.to.set(owner, (g.to.get(owner) ?? 0) + 1);
      g.buckets++;
      g.failoverMs = Math.max(g.failoverMs, u ? nowMs - u.atMs : 0);
      g.lastAtMs = nowMs;
    }
  }
  // A bucket of a VIP that left the spec is not waiting for anyone.
  const vips = new Set(state.spec?.spec.vips.map((v) => v.address) ?? []);
  for (const k of [...t.unownedSince.keys()]) if (!vips.has(k.slice(0, k.lastIndexOf('#')))) t.unownedSince.delete(k);
  t.claims = claims;
  return out;
}

/** Move groups that are complete at `nowMs`, as changes; they leave the tracker. */
export function flushMoves(t: ChangeTracker, nowMs: number, revision: string): ChangeDraft[] {
  const out: ChangeDraft[] = [];
  for (const [gk, g] of t.groups) {
    const waiting = [...t.unownedSince.entries()].some(
      ([k, u]) => u.from === g.from && k.slice(0, k.lastIndexOf('#')) === g.vip,
    );
    const quiet = nowMs - g.lastAtMs >= MOVE_QUIET_MS;
    if (!(quiet && !waiting) && nowMs - g.lastAtMs < MOVE_MAX_WAIT_MS) continue;
    t.groups.delete(gk);
    const to = Object.fromEntries([...g.to].sort(([a], [b]) => (a < b ? -1 : 1)));
    const targets = Object.entries(to)
      .map(([n, c]) => `${n} (${c})`)
      .join(', ');
    const source = g.from === null ? 'unowned buckets' : `buckets of ${g.from}`;
    out.push({
      kind: 'bucketsMoved',
      atMs: nowMs,
      revision,
      vip: g.vip,
      buckets: g.buckets,
      from: g.from,
      to,
      failoverMs: g.failoverMs,
      detail: `${g.vip}: ${g.buckets} ${source} moved to ${targets}; longest unowned ${formatMs(g.failoverMs)}`,
      ...(g.from !== null ? { node: g.from } : {}),
    });
  }
  return out;
}

/** When flushMoves may next have something to write (ms from now), or null when no group is open. */
export function nextFlushInMs(t: ChangeTracker, nowMs: number): number | null {
  let best: number | null = null;
  for (const g of t.groups.values()) {
    const due = Math.max(0, g.lastAtMs + MOVE_QUIET_MS - nowMs);
    best = best === null ? due : Math.min(best, due);
  }
  return best;
}

export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}
