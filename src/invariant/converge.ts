import type { FullObserver } from './observer.js';

/**
 * Wait until the observer sees claims == assignment == backend and exactly the running nodes registered (and,
 * with `current`, each registration made by the node's current process). False on timeout.
 */
export async function waitObserverConverged(
  obs: FullObserver,
  running: () => Set<string>,
  timeoutMs: number,
  current: (id: string) => boolean = () => true,
): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const run = running();
    const live = [...obs.cluster().nodes.keys()];
    const nodesOk = live.length === run.size && live.every((id) => run.has(id) && current(id));
    if (nodesOk && obs.convergence().converged) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
