import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { NetnsError } from './run.js';

// A long-lived process inside a namespace. `ip netns exec` execs the command in place, so the child's pid is
// the program's own pid: we kill it by that pid before the namespace is deleted (a survivor would keep the
// deleted namespace alive). Its stdin is a pipe, so the programs of programs.ts exit when we go away too.

export interface NsProcess {
  readonly ns: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves with the first stdout line matching `pred`, rejects after `timeoutMs` or when the process exits. */
  waitLine(pred: (line: string) => boolean, timeoutMs: number): Promise<string>;
  onLine(listener: (line: string) => void): void;
  exited(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone (bounded by graceMs + 2 s). */
  stop(graceMs?: number): Promise<void>;
  stderrTail(): string;
}

export function spawnInNs(
  ns: string,
  cmd: string,
  args: readonly string[],
  env?: NodeJS.ProcessEnv,
  cwd?: string,
): NsProcess {
  const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: env ?? process.env,
    ...(cwd !== undefined ? { cwd } : {}),
  });
  if (child.pid === undefined) throw new NetnsError(`could not spawn ${cmd} in ${ns}`);
  const pid = child.pid;
  child.on('error', () => undefined);
  child.stdin?.on('error', () => undefined);
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    stderr = (stderr + d).slice(-8000);
  });
  const listeners: ((l: string) => void)[] = [];
  const rl = createInterface({ input: child.stdout! });
  rl.on('line', (l) => listeners.forEach((f) => f(l)));
  let exitedFlag = false;
  const exitP = new Promise<void>((resolve) => child.once('exit', () => ((exitedFlag = true), resolve())));

  return {
    ns,
    pid,
    child,
    onLine: (f) => void listeners.push(f),
    exited: () => exitedFlag,
    stderrTail: () => stderr,
    waitLine(pred, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          done();
          reject(new NetnsError(`${cmd} in ${ns}: no expected output after ${timeoutMs} ms; stderr: ${stderr}`));
        }, timeoutMs);
        const onLine = (l: string): void => {
          if (pred(l)) {
            done();
            resolve(l);
          }
        };
        const onExit = (): void => {
          done();
          reject(new NetnsError(`${cmd} in ${ns} exited before it was ready; stderr: ${stderr}`));
        };
        const done = (): void => {
          clearTimeout(timer);
          const i = listeners.indexOf(onLine);
          if (i >= 0) listeners.splice(i, 1);
          child.off('exit', onExit);
        };
        listeners.push(onLine);
        child.once('exit', onExit);
        if (exitedFlag) onExit();
      });
    },
    async stop(graceMs = 1000) {
      if (exitedFlag) return;
      child.stdin?.end();
      signal(pid, 'SIGTERM');
      const killer = setTimeout(() => signal(pid, 'SIGKILL'), graceMs);
      await Promise.race([exitP, new Promise((r) => setTimeout(r, graceMs + 2000))]);
      clearTimeout(killer);
    },
  };
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}
