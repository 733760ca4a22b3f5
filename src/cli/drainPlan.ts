import type { ClusterState } from '../etcd/store.js';
import { takesBuckets } from '../etcd/values.js';

// drain/undrain decisions and `--wait` progress, pure over a ClusterState.

export type DrainProgress =
  | { state: 'done'; reason: 'ownsNothing' | 'nodeGone' }
  | { state: 'waiting'; owned: number; byVip: Record<string, number> }
  | { state: 'stuck'; owned: number; reason: 'noOtherNode' };

export function drainProgress(state: ClusterState, node: string): DrainProgress {
  const byVip: Record<string, number> = {};
  let owned = 0;
  for (const [vip, m] of state.claims) {
    for (const c of m.values()) {
      if (c.owner !== node) continue;
      owned++;
      byVip[vip] = (byVip[vip] ?? 0) + 1;
    }
  }
  if (owned === 0) return { state: 'done', reason: state.nodes.has(node) ? 'ownsNothing' : 'nodeGone' };
  const others = [...state.nodes.entries()].filter(
    ([id, n]) => id !== node && takesBuckets(n.value) && n.value.weight > 0,
  );
  if (others.length === 0) return { state: 'stuck', owned, reason: 'noOtherNode' };
  return { state: 'waiting', owned, byVip };
}

export function describeProgress(node: string, p: DrainProgress): string {
  switch (p.state) {
    case 'done':
      return p.reason === 'ownsNothing' ? `${node} owns nothing: drained` : `${node} left the cluster: it owns nothing`;
    case 'waiting':
      return `${node} still owns ${p.owned} bucket(s): ${Object.entries(p.byVip)
        .map(([v, n]) => `${v} ${n}`)
        .join(', ')}`;
    case 'stuck':
      return `${node} still owns ${p.owned} bucket(s) and no other live, undrained node with weight > 0 can take them`;
  }
}

export type DrainVerdict = { ok: true } | { ok: false; reason: 'lastNode'; vips: number };

/** Draining `node` would leave no node that can take buckets while the spec has VIPs: the VIPs go dark. */
export function drainVerdict(state: ClusterState, node: string): DrainVerdict {
  const vips = state.spec?.spec.vips.length ?? 0;
  if (vips === 0) return { ok: true };
  const others = [...state.nodes.entries()].filter(
    ([id, n]) => id !== node && takesBuckets(n.value) && n.value.weight > 0,
  );
  return others.length > 0 ? { ok: true } : { ok: false, reason: 'lastNode', vips };
}
