// The fence timer's thread. It owns its own Backend, so when the deadline passes it drops every bucket itself,
// however stalled the main thread is (GC, CPU starvation, a blocked event loop). It reads the deadline from
// shared memory at the moment its timer fires, so the main thread moves it forward without waking the worker.
import { parentPort, workerData } from 'node:worker_threads';
import { makeBackend } from './backendFactory.js';
import { monoNow } from './clock.js';
import { FENCED, type FenceWorkerData, type FromWorker, type ToWorker } from './fenceShared.js';

const data = workerData as FenceWorkerData;
const deadline = new Float64Array(data.sab, 0, 1);
const flags = new Int32Array(data.sab, 8, 2);
// libnftables keeps process-wide state (its interface cache) that two threads must not share: the main thread's
// backend may use it, so this one spawns `nft`. It runs only when the main loop missed its deadline.
const backend = makeBackend(
  data.backend.kind === 'nftables' ? { ...data.backend, transport: 'nft' } : data.backend,
  data.nodeId,
  data.stateDir,
);
const port = parentPort;
if (!port) throw new Error('fenceWorker must run as a worker thread');

let timer: NodeJS.Timeout | undefined;
const CLEAR_ATTEMPTS = 5;

function post(m: FromWorker): void {
  port!.postMessage(m);
}

function schedule(): void {
  if (timer) clearTimeout(timer);
  timer = undefined;
  const d = deadline[0]!;
  if (d === 0 || Atomics.load(flags, FENCED) === 1) return;
  const wait = d - monoNow();
  if (wait <= 0) {
    void fire('deadlinePassed');
    return;
  }
  timer = setTimeout(schedule, Math.max(1, Math.ceil(wait)));
}

async function fire(reason: 'deadlinePassed' | 'leaseLost' | 'shutdown'): Promise<void> {
  // Raise the flag first: the main thread checks it after every kernel write and undoes what raced with us.
  if (Atomics.compareExchange(flags, FENCED, 0, 1) !== 0 && reason === 'deadlinePassed') return;
  const firedAt = monoNow();
  const d = deadline[0]!;
  let error: string | undefined;
  let attempts = 0;
  for (let attempt = 1; attempt <= CLEAR_ATTEMPTS; attempt++) {
    attempts = attempt;
    try {
      await backend.clear();
      error = undefined;
      break;
    } catch (err) {
      error = (err as Error).message;
      await new Promise((r) => setTimeout(r, 10 * attempt));
    }
  }
  post({ type: 'fenced', reason, deadline: d, firedAt, clearedAt: monoNow(), error, attempts });
}

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'arm':
      schedule();
      return;
    case 'fenceNow':
      void fire(m.reason);
      return;
    case 'stop':
      if (timer) clearTimeout(timer);
      void backend
        .close()
        .catch(() => undefined)
        .finally(() => port.close());
      return;
  }
});
post({ type: 'ready' });
schedule();
