import { join } from 'node:path';
import type { BackendConfig } from '../config/types.js';
import type { Backend } from './backend.js';
import { ClusteripBackend } from './clusterip.js';
import { ExecBackend } from './exec.js';
import { FileBackend } from './file.js';
import { NftablesBackend } from './nftables.js';

export type { Backend, BackendDescription, BucketChange, HeldBuckets, ApplyOptions } from './backend.js';
export { ClusteripBackend, ProcFile, DEFAULT_PROC_DIR, type ClusteripBackendOptions } from './clusterip.js';
export { ExecBackend, type ExecBackendOptions, type ExecEnv } from './exec.js';
export { FileBackend, type FileBackendOptions } from './file.js';
export {
  readFileBackendDir,
  readFileBackendDirSync,
  parseFileBackendHeld,
  parseFileBackendText,
} from './fileFormat.js';
export { NftablesBackend, type NftablesBackendOptions } from './nftables.js';

export interface BackendContext {
  nodeId: string;
  /** The node's state dir; the exec backend keeps what it told the command there (exec-backend-held.json). */
  stateDir?: string;
  /** Run nft inside this network namespace (tests, benchmarks). */
  netns?: string;
}

/** The exec backend's state file under a node's state dir. */
export function execStateFile(stateDir: string): string {
  return join(stateDir, 'exec-backend-held.json');
}

export function createBackend(cfg: BackendConfig, ctx: BackendContext): Backend {
  switch (cfg.kind) {
    case 'file':
      return new FileBackend({ dir: cfg.dir });
    case 'nftables':
      return new NftablesBackend({
        table: cfg.table,
        nftPath: cfg.nftPath,
        arpMangle: cfg.arpMangle,
        multicastSubscribe: cfg.multicastSubscribe,
        transport: cfg.transport,
        ...(ctx.netns ? { netns: ctx.netns } : {}),
      });
    case 'clusterip':
      return new ClusteripBackend({ procDir: cfg.procDir, manageRule: cfg.manageRule, iptablesPath: cfg.iptablesPath });
    case 'exec':
      return new ExecBackend({
        command: cfg.command,
        timeoutMs: cfg.timeoutMs,
        nodeId: ctx.nodeId,
        ...(ctx.stateDir ? { stateFile: execStateFile(ctx.stateDir) } : {}),
      });
  }
}
