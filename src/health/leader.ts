import type { ClusterState } from '../etcd/store.js';
import type { PlannerNode } from '../planner/balance.js';
import type { HealthEvent } from './events.js';
import { assignable, decidePanic, type HealthNode } from './panic.js';

// The leader's view of node health: which nodes the planner may give buckets, with the panic threshold applied.
// Emits healthPanic whenever the set of failing nodes kept serving changes (and once when the panic ends).

function healthNodes(nodes: ClusterState['nodes']): HealthNode[] {
  return [...nodes].map(([id, n]) => ({
    id,
    weight: n.value.weight,
    draining: n.value.draining,
    notReady: n.value.notReady !== undefined,
    health: n.value.health,
  }));
}

/** Node id → whether the leader may give it buckets (the panic threshold applied), for handoff targets. */
export function assignableNodes(nodes: ClusterState['nodes'], minHealthyNodes: number): Map<string, boolean> {
  const hn = healthNodes(nodes);
  const d = decidePanic(hn, minHealthyNodes);
  return new Map(hn.map((n) => [n.id, assignable(n, d)]));
}

export class PanicTracker {
  private last = '[]';

  constructor(private readonly emit: (e: HealthEvent) => void) {}

  /** Leadership changed hands: the next plan reports the panic afresh. */
  forget(): void {
    this.last = '[]';
  }

  plannerNodes(nodes: ClusterState['nodes'], minHealthyNodes: number): PlannerNode[] {
    const hn = healthNodes(nodes);
    const d = decidePanic(hn, minHealthyNodes);
    const key = JSON.stringify(d.panic ? d.kept : []);
    if (key !== this.last) {
      this.last = key;
      this.emit({
        event: 'healthPanic',
        panic: d.panic,
        kept: d.panic ? d.kept : [],
        healthy: d.healthy,
        minHealthyNodes,
      });
    }
    return hn.map((n) => ({ id: n.id, weight: n.weight, draining: !assignable(n, d) }));
  }
}
