import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { BackendConfig } from '../config/types.js';
import { FENCED, type FenceWorkerData, type FromWorker, type ToWorker } from './fenceShared.js';

// The main thread's handle on the fence worker: it publishes the deadline through shared memory and hears back
// when the worker fenced (after the worker's own backend dropped every bucket).

export type FencedMessage = Extract<FromWorker, { type: 'fenced' }>;

export interface FenceTimerOptions {
  backend: BackendConfig;
  nodeId: string;
  stateDir?: string;
  onFenced: (m: FencedMessage) => void;
  /** The worker died (a bug): the caller must fence on the main thread. */
  onWorkerError: (err: Error) => void;
}

function workerUrl(): URL {
  const here = new URL('./fenceWorker.js', import.meta.url);
  if (existsSync(fileURLToPath(here))) return here;
  // Running from sources (vitest): the worker runs from the build.
  return new URL('../../dist/agent/fenceWorker.js', import.meta.url);
}

export class FenceTimer {
  private readonly deadline: Float64Array;
  private readonly flags: Int32Array;
  private readonly waiters: ((m: FencedMessage) => void)[] = [];
  private stopped = false;

  private constructor(
    private readonly worker: Worker,
    sab: SharedArrayBuffer,
  ) {
    this.deadline = new Float64Array(sab, 0, 1);
    this.flags = new Int32Array(sab, 8, 2);
  }

  static async start(opts: FenceTimerOptions): Promise<FenceTimer> {
    const sab = new SharedArrayBuffer(16);
    const data: FenceWorkerData = {
      sab,
      backend: opts.backend,
      nodeId: opts.nodeId,
      ...(opts.stateDir ? { stateDir: opts.stateDir } : {}),
    };
    // A small heap: the worker only runs a timer and a backend clear.
    const worker = new Worker(workerUrl(), {
      workerData: data,
      resourceLimits: { maxOldGenerationSizeMb: 24, maxYoungGenerationSizeMb: 4 },
    });
    const ft = new FenceTimer(worker, sab);
    await new Promise<void>((resolve, reject) => {
      const onErr = (err: Error): void => reject(err);
      worker.once('error', onErr);
      worker.on('message', function ready(m: FromWorker) {
        if (m.type === 'ready') {
          worker.off('message', ready);
          worker.off('error', onErr);
          resolve();
        }
      });
    });
    worker.on('message', (m: FromWorker) => {
      if (m.type !== 'fenced') return;
      for (const w of ft.waiters.splice(0)) w(m);
      opts.onFenced(m);
    });
    worker.on('error', (err) => {
      if (!ft.stopped) opts.onWorkerError(err);
    });
    worker.unref();
    return ft;
  }

  /** Move the deadline (monotonic ms). Arms the worker's timer if it was disarmed. */
  setDeadline(mono: number): void {
    const prev = this.deadline[0]!;
    this.deadline[0] = mono;
    if (prev === 0 || mono < prev) this.post({ type: 'arm' });
  }

  /** After a fence: clear the flag and arm with a new deadline. */
  rearm(mono: number): void {
    this.deadline[0] = mono;
    Atomics.store(this.flags, FENCED, 0);
    this.post({ type: 'arm' });
  }

  currentDeadline(): number {
    return this.deadline[0]!;
  }

  /** True from the instant the worker decided to fence (before its clear finished) until rearm. */
  isFenced(): boolean {
    return Atomics.load(this.flags, FENCED) === 1;
  }

  /** Fence now from the worker (lease lost, shutdown); resolves once its backend cleared. */
  fenceNow(reason: 'leaseLost' | 'shutdown'): Promise<FencedMessage> {
    const p = new Promise<FencedMessage>((resolve) => this.waiters.push(resolve));
    Atomics.store(this.flags, FENCED, 1);
    this.post({ type: 'fenceNow', reason });
    return p;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.deadline[0] = 0;
    const exited = new Promise<void>((r) => this.worker.once('exit', () => r()));
    this.post({ type: 'stop' });
    await Promise.race([exited, new Promise((r) => setTimeout(r, 1000).unref())]);
    await this.worker.terminate().catch(() => undefined);
  }

  private post(m: ToWorker): void {
    if (!this.stopped || m.type === 'stop') this.worker.postMessage(m);
  }
}
