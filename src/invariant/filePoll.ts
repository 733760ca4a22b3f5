import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { parseFileBackendHeld } from '../backends/fileFormat.js';
import type { OwnershipSample } from './types.js';
import type { ToPollWorker } from './filePollWorker.js';

// Reads every node's file backend for every VIP, synchronously so all nodes are read within the same instant, and
// reports the buckets whose holders changed (expiry applied at read time). Runs in the observer's poll worker
// (filePollWorker.ts), so a busy harness event loop cannot stretch the gaps between reads.

export interface PollVip {
  address: string;
  buckets: number;
}

export interface PollResult {
  /** When the round started: every file was read at or after it. */
  roundT: number;
  samples: OwnershipSample[];
  /** vip → bucket → holders, as read in this round. */
  holders: [string, [number, string[]][]][];
  /** Files that could not be read (path, error); their last good state stands. */
  unreadable: [string, string][];
}

export class FilePoller {
  private dirs = new Map<string, string>();
  private vips: PollVip[] = [];
  private readonly lastBackend = new Map<string, string[]>();
  private readonly lastFileEntries = new Map<string, Set<number>>();
  private readonly unreadable = new Map<string, string>();
  private lastPollAt = Date.now();

  setDirs(dirs: Iterable<[string, string]>): void {
    this.dirs = new Map(dirs);
  }

  setVips(vips: readonly PollVip[]): void {
    this.vips = [...vips];
  }

  /** One round, or null when there is nothing to read yet. */
  poll(): PollResult | null {
    if (this.vips.length === 0) return null;
    const roundT = Date.now();
    const samples: OwnershipSample[] = [];
    const holders: PollResult['holders'] = [];
    for (const vip of this.vips) {
      const perBucket = new Map<number, string[]>();
      for (let b = 1; b <= vip.buckets; b++) perBucket.set(b, []);
      // bucket → node → expiry, for entries that expired since the previous poll.
      const expiredAt = new Map<number, Map<string, number>>();
      for (const [node, dir] of this.dirs) {
        for (const b of this.readHeld(node, join(dir, vip.address), expiredAt)) perBucket.get(b)?.push(node);
      }
      // Stamped when the round began, as the round fact that follows them is: the checker takes facts in stamp
      // order, and a round must be checked against the holders its own reads found.
      const t = roundT;
      for (const [b, hs] of perBucket) {
        hs.sort();
        const k = `${vip.address}#${b}`;
        const prev = this.lastBackend.get(k);
        if (prev !== undefined && prev.join(',') === hs.join(',')) continue;
        this.lastBackend.set(k, hs);
        // A bucket its previous holders lost by expiry went unowned at that expiry, not when we read it.
        const exps = (prev ?? []).map((n) => expiredAt.get(b)?.get(n));
        const byExpiry = hs.length === 0 && exps.length > 0 && exps.every((e) => e !== undefined);
        const when = byExpiry ? Math.max(...(exps as number[])) : t;
        samples.push({ t: when, source: 'backend', vip: vip.address, bucket: b, holders: hs });
      }
      holders.push([vip.address, [...perBucket]]);
    }
    this.lastPollAt = roundT;
    return { roundT, samples, holders, unreadable: [...this.unreadable] };
  }

  private readHeld(node: string, path: string, expiredAt: Map<number, Map<string, number>>): Set<number> {
    const now = Date.now();
    let held: Set<number>;
    try {
      const text = readFileSync(path, 'utf8');
      held = parseFileBackendHeld(text, now, path);
      // Expiry times of entries that just expired: the precise moment the bucket stopped being held.
      for (const m of text.matchAll(/(\d+)=(\d+)/g)) {
        const bucket = Number(m[1]);
        const exp = Number(m[2]);
        if (exp <= now && exp > this.lastPollAt) {
          if (!expiredAt.has(bucket)) expiredAt.set(bucket, new Map());
          expiredAt.get(bucket)!.set(node, exp);
        }
      }
      this.unreadable.delete(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') held = new Set();
      else {
        // Keep the last good state of this file; files are replaced by rename, so this should not happen.
        this.unreadable.set(path, (err as Error).message);
        held = this.lastFileEntries.get(path) ?? new Set();
      }
    }
    this.lastFileEntries.set(path, held);
    return held;
  }
}

export interface FilePoll {
  setDirs(dirs: Iterable<[string, string]>): void;
  setVips(vips: readonly PollVip[]): void;
  stop(): Promise<void>;
}

function workerUrl(): URL | null {
  const here = new URL('./filePollWorker.js', import.meta.url);
  if (existsSync(fileURLToPath(here))) return here;
  // Running from sources (vitest): the worker runs from the build, if there is one.
  const built = new URL('../../dist/invariant/filePollWorker.js', import.meta.url);
  return existsSync(fileURLToPath(built)) ? built : null;
}

/** Poll every `pollMs` on a worker thread (on this thread when no built worker exists), results to `onResult`. */
export function startFilePoll(pollMs: number, onResult: (r: PollResult) => void): FilePoll {
  const url = workerUrl();
  if (!url) {
    const poller = new FilePoller();
    const timer = setInterval(() => {
      const r = poller.poll();
      if (r) onResult(r);
    }, pollMs);
    return {
      setDirs: (d) => poller.setDirs(d),
      setVips: (v) => poller.setVips(v),
      stop: async () => clearInterval(timer),
    };
  }
  const worker = new Worker(url, {
    workerData: { pollMs },
    resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8 },
  });
  worker.on('message', (r: PollResult) => onResult(r));
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  worker.on('error', () => undefined); // a dead poller shows as a stale backend view (and no rounds)
  const post = (m: ToPollWorker): void => worker.postMessage(m);
  return {
    setDirs: (d) => post({ type: 'dirs', dirs: [...d] }),
    setVips: (v) => post({ type: 'vips', vips: [...v] }),
    async stop() {
      post({ type: 'stop' });
      const t = setTimeout(() => void worker.terminate(), 2000);
      await exited;
      clearTimeout(t);
    },
  };
}
