// Messages and shared-memory layout between the main thread (fence.ts) and the fence worker (fenceWorker.ts).
// Shared buffer: Float64 deadline (monotonic ms, 0 = disarmed) at byte 0; Int32 flags at byte 8.

import type { BackendConfig } from '../config/types.js';

export const FENCED = 0; // Int32 index: 1 once the worker fired, until the main thread re-arms

export interface FenceWorkerData {
  sab: SharedArrayBuffer;
  backend: BackendConfig;
  nodeId: string;
  stateDir?: string;
}

export type ToWorker = { type: 'arm' } | { type: 'fenceNow'; reason: 'leaseLost' | 'shutdown' } | { type: 'stop' };

export type FromWorker =
  | { type: 'ready' }
  | {
      type: 'fenced';
      reason: 'deadlinePassed' | 'leaseLost' | 'shutdown';
      deadline: number;
      firedAt: number;
      clearedAt: number;
      /** Set when the last of `attempts` clears failed: the kernel may still hold buckets. */
      error: string | undefined;
      attempts: number;
    };
