import { spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { agentMainPath, type AgentExit, type AgentLogLine, type AgentProcess } from '../localcluster/agentProcess.js';

// A real agent (`node dist/cli/main.js agent --backend nftables …`) inside a node namespace. The shared
// spawnAgent (src/localcluster/agentProcess.ts) always passes `--backend-dir`, which the config rejects for the
// nftables backend, so this is the same process handle with nftables flags. Same AgentProcess interface.

export interface NsAgentOptions {
  nodeId: string;
  netns: string;
  endpoints: string[];
  cluster: string;
  leaseTtlSeconds: number;
  nftTable: string;
  stateDir: string;
  logFile?: string;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
}

export function spawnNsAgent(opts: NsAgentOptions): AgentProcess {
  const args = [
    'netns',
    'exec',
    opts.netns,
    process.execPath,
    agentMainPath(),
    'agent',
    '--node-id',
    opts.nodeId,
    '--etcd-endpoints',
    opts.endpoints.join(','),
    '--cluster',
    opts.cluster,
    '--backend',
    'nftables',
    '--nft-table',
    opts.nftTable,
    '--state-dir',
    opts.stateDir,
    '--lease-ttl',
    String(opts.leaseTtlSeconds),
    '--metrics-listen',
    'off',
    '--log-level',
    'debug',
    ...(opts.extraArgs ?? []),
  ];
  // `ip netns exec` execs node in place: the pid we get is the agent's own.
  const child = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  child.on('error', () => undefined);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start agent ${opts.nodeId} in ${opts.netns}`);

  const lines: AgentLogLine[] = [];
  const raw: string[] = [];
  const waiters = new Set<{ pred: (l: AgentLogLine) => boolean; resolve: (l: AgentLogLine) => void }>();
  const exitWaiters: ((e: AgentExit) => void)[] = [];
  let exit: AgentExit | null = null;
  let log: WriteStream | undefined;
  if (opts.logFile) {
    log = createWriteStream(opts.logFile, { flags: 'a' });
    log.on('error', () => undefined);
  }
  const onLine = (text: string): void => {
    log?.write(text + '\n');
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
  for (const s of [child.stdout, child.stderr]) if (s) createInterface({ input: s }).on('line', onLine);
  child.on('exit', (code, signal) => {
    exit = { code, signal };
    for (const w of exitWaiters.splice(0)) w(exit);
    log?.end();
  });

  return {
    nodeId: opts.nodeId,
    pid,
    backendDir: '',
    signal(sig) {
      if (exit) return;
      try {
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
