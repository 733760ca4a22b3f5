// The panic threshold (DESIGN §14, Envoy's convention): when the checks fail on so many nodes that fewer than
// `minHealthyNodes` could serve, draining them all turns a partial failure into a dark VIP. The leader then keeps
// some health-drained nodes assignable, chosen in the planner's order (ascending node id, weighted nodes first),
// so every leader picks the same ones. Operator drains, shutdowns and not-ready nodes are never kept.

export interface HealthNode {
  id: string;
  weight: number;
  /** Operator drain or shutdown: never assignable. */
  draining: boolean;
  /** The backend cannot serve (notReady): never assignable. */
  notReady: boolean;
  /** Drained by its own checks (`unhealthy:<check>` / `maintenance`); undefined = healthy. */
  health: string | undefined;
}

export type PanicDecision =
  | { panic: false; healthy: number }
  | {
      panic: true;
      healthy: number;
      /** Health-drained nodes kept serving, in the order chosen. */
      kept: string[];
      /** Nodes short of minHealthyNodes that no node could fill (every candidate taken). */
      short: number;
    };

const byPlannerOrder = (a: HealthNode, b: HealthNode): number =>
  (b.weight > 0 ? 1 : 0) - (a.weight > 0 ? 1 : 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Which health-drained nodes stay serving so that at least `minHealthy` nodes take buckets. */
export function decidePanic(nodes: readonly HealthNode[], minHealthy: number): PanicDecision {
  const seen = new Set<string>();
  const unique = nodes.filter((n) => !seen.has(n.id) && (seen.add(n.id), true));
  const healthy = unique.filter((n) => !n.draining && !n.notReady && n.health === undefined).length;
  if (healthy >= minHealthy) return { panic: false, healthy };
  const candidates = unique.filter((n) => !n.draining && !n.notReady && n.health !== undefined).sort(byPlannerOrder);
  const want = minHealthy - healthy;
  const kept = candidates.slice(0, want).map((n) => n.id);
  if (kept.length === 0) return { panic: false, healthy };
  return { panic: true, healthy, kept, short: want - kept.length };
}

/** Whether the leader may assign buckets to `n` under the decision. */
export function assignable(n: HealthNode, d: PanicDecision): boolean {
  if (n.draining || n.notReady) return false;
  return n.health === undefined || (d.panic && d.kept.includes(n.id));
}
