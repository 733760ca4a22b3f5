import type { Backend } from '../backends/backend.js';
import type { BackendConfig } from '../config/types.js';

// Builds the node's Backend through the backends area's factory (src/backends/index.ts). Loaded lazily so the
// fence worker and the daemon share one path.
// stateDir lets the exec backend persist what it told its command, so `clusterip-ha fence` finds it.
export async function makeBackend(cfg: BackendConfig, nodeId: string, stateDir?: string): Promise<Backend> {
  const mod = (await import('../backends/index.js')) as {
    createBackend: (cfg: BackendConfig, ctx: { nodeId: string; stateDir?: string }) => Backend;
  };
  return mod.createBackend(cfg, { nodeId, ...(stateDir ? { stateDir } : {}) });
}
