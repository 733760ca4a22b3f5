import type { ClusterState } from '../etcd/store.js';
import { takesBuckets } from '../etcd/values.js';

// The cluster as one agent's picture shows it, for alerting that does not depend on which agents are scraped:
// every agent exports the same numbers (take `max` over them). Pure over a ClusterState.

export interface ClusterView {
  /** Known members with a live lease (and live nodes not yet recorded as members). */
  up: number;
  /** Known members without a lease: capacity lost until they come back or are forgotten. */
  down: number;
  /** Live nodes the leader may give buckets (not draining, ready, weight > 0). */
  eligible: number;
  /** Live nodes whose status says fenced. */
  fenced: number;
  leader: boolean;
  /** Per VIP of the spec: buckets without a claim. */
  unowned: Map<string, number>;
}

export function clusterView(state: ClusterState): ClusterView {
  let down = 0;
  for (const id of state.members.keys()) if (!state.nodes.has(id)) down++;
  let eligible = 0;
  for (const n of state.nodes.values()) if (takesBuckets(n.value) && n.value.weight > 0) eligible++;
  let fenced = 0;
  for (const [id, s] of state.statuses) if (s.fenced && state.nodes.has(id)) fenced++;
  const unowned = new Map<string, number>();
  for (const v of state.spec?.spec.vips ?? []) {
    const claims = state.claims.get(v.address);
    let n = 0;
    for (let b = 1; b <= v.buckets; b++) if (!claims?.has(b)) n++;
    unowned.set(v.address, n);
  }
  return { up: state.nodes.size, down, eligible, fenced, leader: state.leader !== null, unowned };
}
