import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Runs the built CLI (`node dist/cli/main.js`) as a real process: what operators and scripts run.

export const CLI_MAIN = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export function requireBuilt(): void {
  if (!existsSync(CLI_MAIN)) throw new Error(`${CLI_MAIN} is missing: run \`npm run build\` first (npm test does)`);
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** The environment without the caller's CLUSTERIP_HA_* settings, so a test sees only what it sets. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('CLUSTERIP_HA_') || k === 'CLUSTERIP_HA_ETCD_BIN') env[k] = v;
  return { ...env, NO_COLOR: '1', ...extra };
}

export function runCli(
  args: string[],
  opts: { env?: Record<string, string>; timeoutMs?: number; input?: string } = {},
): Promise<CliResult> {
  requireBuilt();
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_MAIN, ...args], {
      env: cleanEnv(opts.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(opts.input ?? '');
    const limit = opts.timeoutMs ?? 30_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`clusterip-ha ${args.join(' ')} did not finish within ${limit} ms; stderr: ${stderr}`));
    }, limit);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

export interface LiveCli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves once `pred(stdout, stderr)` holds; rejects after timeoutMs or if the process exits first. */
  waitFor(pred: (out: string, err: string) => boolean, timeoutMs: number): Promise<void>;
  exit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A long-running command (status --watch, demo) the test drives with signals. */
export function startCli(args: string[], opts: { env?: Record<string, string> } = {}): LiveCli {
  requireBuilt();
  const child = spawn(process.execPath, [CLI_MAIN, ...args], {
    env: cleanEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const listeners = new Set<() => void>();
  const poke = () => listeners.forEach((l) => l());
  child.stdout!.on('data', (d: Buffer) => ((out += d.toString()), poke()));
  child.stderr!.on('data', (d: Buffer) => ((err += d.toString()), poke()));
  child.on('close', (code, signal) => ((exited = { code, signal }), poke()));
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitFor(pred, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (pred(out, err)) done(undefined);
          else if (exited)
            done(
              new Error(`exited (${exited.code ?? exited.signal}) before the condition; stderr: ${err.slice(-2000)}`),
            );
        };
        const t = setTimeout(
          () =>
            done(
              new Error(
                `condition not met within ${timeoutMs} ms; stdout tail: ${out.slice(-1500)}; stderr tail: ${err.slice(-1500)}`,
              ),
            ),
          timeoutMs,
        );
        const done = (e: Error | undefined) => {
          clearTimeout(t);
          listeners.delete(check);
          if (e) reject(e);
          else resolve();
        };
        listeners.add(check);
        check();
      });
    },
    exit(timeoutMs) {
      if (exited) return Promise.resolve(exited);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`did not exit within ${timeoutMs} ms`)), timeoutMs);
        child.on('close', (code, signal) => {
          clearTimeout(t);
          resolve({ code, signal });
        });
      });
    },
  };
}
