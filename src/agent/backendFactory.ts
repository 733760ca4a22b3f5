import type { Backend } from '../backends/backend.js';
import { createBackend } from '../backends/index.js';
import type { BackendConfig } from '../config/types.js';

// Builds the node's Backend through the backends area's factory (src/backends/index.ts): the daemon and the fence
// worker share this one path. stateDir lets the exec backend persist what it told its command, so `clusterip-ha
// fence` finds it.
export function makeBackend(cfg: BackendConfig, nodeId: string, stateDir?: string): Backend {
  return createBackend(cfg, { nodeId, ...(stateDir ? { stateDir } : {}) });
}
