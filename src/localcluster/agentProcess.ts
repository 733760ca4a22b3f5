import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

// One agent as a real OS process (`node dist/cli/main.js agent ...`, file backend), for tests, the demo, chaos
// and the benchmark. Its JSON log lines (stderr) are parsed and kept, so callers can wait for an event.

export interface SpawnAgentOptions {
  nodeId: string;
  endpoints: string[];
  cluster: string;
  /** Default 'file'. nftables takes its options from extraArgs/env (no --backend-dir: the config rejects it). */
  backend?: 'file' | 'nftables' | 'exec';
  /** Required for the file backend. */
  backendDir?: string;
  leaseTtlSeconds?: number;
  /** --state-dir (the lease record, DESIGN §13); default: beside the file backend's directory. */
  stateDir?: string;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** Run inside this network namespace (`ip netns exec <ns> node ...`). */
  netns?: string;
  /** Also append every output line here. */
  logFile?: string;
}

/** One parsed log line, plus `rxAt`: Date.now() when this process read it. */
export interface AgentLogLine {
  rxAt: number;
  level?: number;
  time?: string;
  msg?: string;
  op?: string;
  event?: string;
  vip?: string;
  bucket?: number;
  node?: string;
  reason?: string;
  [k: string]: unknown;
}

export interface AgentExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface AgentProcess {
  readonly nodeId: string;
  readonly pid: number;
  readonly backendDir: string;
  signal(sig: NodeJS.Signals): void;
  /** Resolves with the exit; rejects after timeoutMs. */
  waitExit(timeoutMs: number): Promise<AgentExit>;
  /** The first line (already seen or future) matching pred; rejects after timeoutMs. */
  waitForLog(pred: (l: AgentLogLine) => boolean, timeoutMs: number): Promise<AgentLogLine>;
  /** Every parsed line so far. */
  logs(): AgentLogLine[];
  /** Lines that were not JSON (stack traces, node warnings). */
  rawLines(): string[];
  exited(): AgentExit | null;
}

/** dist/cli/main.js of this checkout (found from this file in src/ or dist/), or CLUSTERIP_HA_MAIN. */
export function agentMainPath(): string {
  if (process.env.CLUSTERIP_HA_MAIN) return process.env.CLUSTERIP_HA_MAIN;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'dist', 'cli', 'main.js');
    dir = resolve(dir, '..');
  }
  throw new Error('cannot find the clusterip-ha checkout (package.json) above ' + import.meta.url);
}

export function spawnAgent(opts: SpawnAgentOptions): AgentProcess {
  const main = agentMainPath();
  const backend = opts.backend ?? 'file';
  if (backend === 'file' && !opts.backendDir) throw new Error('spawnAgent: the file backend needs backendDir');
  const stateDir = opts.stateDir ?? (opts.backendDir ? `${opts.backendDir.replace(/\/+$/, '')}.state` : undefined);
  const args = [
    main,
    'agent',
    '--node-id',
    opts.nodeId,
    '--etcd-endpoints',
    opts.endpoints.join(','),
    '--cluster',
    opts.cluster,
    '--backend',
    backend,
    ...(backend === 'file' ? ['--backend-dir', opts.backendDir ?? ''] : []),
    ...(stateDir ? ['--state-dir', stateDir] : []),
    '--metrics-listen',
    'off',
    '--log-level',
    'debug',
    ...(opts.leaseTtlSeconds !== undefined ? ['--lease-ttl', String(opts.leaseTtlSeconds)] : []),
    ...(opts.extraArgs ?? []),
  ];
  const [cmd, argv] = opts.netns
    ? ['ip', ['netns', 'exec', opts.netns, process.execPath, ...args]]
    : [process.execPath, args];
  const child: ChildProcess = spawn(cmd, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
  });
  child.on('error', () => undefined);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start agent ${opts.nodeId}`);

  const lines: AgentLogLine[] = [];
  const raw: string[] = [];
  const waiters = new Set<{ pred: (l: AgentLogLine) => boolean; resolve: (l: AgentLogLine) => void }>();
  let exit: AgentExit | null = null;
  const exitWaiters: ((e: AgentExit) => void)[] = [];
  let logStream: WriteStream | undefined;
  if (opts.logFile) {
    logStream = createWriteStream(opts.logFile, { flags: 'a' });
    logStream.on('error', () => undefined);
  }

  const onLine = (text: string): void => {
    logStream?.write(text + '\n');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      raw.push(text);
      return;
    }
    if (typeof parsed !== 'object' || parsed === null) {
      raw.push(text);
      return;
    }
    const line = { ...(parsed as Record<string, unknown>), rxAt: Date.now() } as AgentLogLine;
    lines.push(line);
    for (const w of [...waiters]) {
      if (w.pred(line)) {
        waiters.delete(w);
        w.resolve(line);
      }
    }
  };
  for (const s of [child.stdout, child.stderr]) {
    if (s) createInterface({ input: s }).on('line', onLine);
  }
  child.on('exit', (code, signal) => {
    exit = { code, signal };
    for (const w of exitWaiters.splice(0)) w(exit);
    logStream?.end();
  });

  return {
    nodeId: opts.nodeId,
    pid,
    backendDir: opts.backendDir ?? '',
    signal(sig) {
      if (exit) return;
      try {
        // Under `ip netns exec`, the exec'd node keeps the pid ip started with.
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    },
    waitExit(timeoutMs) {
      if (exit) return Promise.resolve(exit);
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`agent ${opts.nodeId} did not exit within ${timeoutMs} ms`)),
          timeoutMs,
        );
        exitWaiters.push((e) => {
          clearTimeout(t);
          resolve(e);
        });
      });
    },
    waitForLog(pred, timeoutMs) {
      const seen = lines.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = {
          pred,
          resolve: (l: AgentLogLine) => {
            clearTimeout(t);
            resolve(l);
          },
        };
        const t = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`agent ${opts.nodeId}: no matching log line within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(w);
      });
    },
    logs: () => lines,
    rawLines: () => raw,
    exited: () => exit,
  };
}
