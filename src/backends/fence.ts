import type { NodeConfig } from '../config/types.js';
import type { BackendDescription, HeldBuckets } from './backend.js';
import { createBackend } from './index.js';

export interface FenceResult {
  backend: BackendDescription;
  /** What the kernel held before the fence, per VIP (only VIPs with buckets). */
  removed: HeldBuckets;
  /** What a read-back shows afterwards (empty on success). */
  remaining: HeldBuckets;
}

/**
 * Drops every bucket this node's backend holds, without etcd (systemd ExecStopPost=, `clusterip-ha fence`).
 * Uses no spec: each backend finds its VIPs itself (proc dir entries, nft owned sets, files, exec state).
 */
export async function fenceNode(cfg: NodeConfig): Promise<FenceResult> {
  const backend = createBackend(cfg.backend, { nodeId: cfg.nodeId, stateDir: cfg.stateDir });
  try {
    const before = await backend.read();
    await backend.clear();
    const after = await backend.read();
    return {
      backend: backend.describe(),
      removed: nonEmpty(before),
      remaining: nonEmpty(after),
    };
  } finally {
    await backend.close();
  }
}

function nonEmpty(held: HeldBuckets): HeldBuckets {
  return new Map([...held].filter(([, b]) => b.size > 0));
}
