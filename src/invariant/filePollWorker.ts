import { parentPort, workerData } from 'node:worker_threads';
import { FilePoller, type PollVip } from './filePoll.js';

// The observer's file-backend poll on its own thread: a round every `pollMs` whatever the harness's main loop is
// doing (it forwards every agent's etcd traffic), each round posted with its own timestamps.

export type ToPollWorker =
  { type: 'dirs'; dirs: [string, string][] } | { type: 'vips'; vips: PollVip[] } | { type: 'stop' };

const port = parentPort;
if (!port) throw new Error('filePollWorker must run as a worker thread');
const poller = new FilePoller();
const pollMs = (workerData as { pollMs: number }).pollMs;
const timer = setInterval(() => {
  const r = poller.poll();
  if (r) port.postMessage(r);
}, pollMs);
port.on('message', (m: ToPollWorker) => {
  if (m.type === 'dirs') poller.setDirs(m.dirs);
  else if (m.type === 'vips') poller.setVips(m.vips);
  else {
    clearInterval(timer);
    port.close();
  }
});
