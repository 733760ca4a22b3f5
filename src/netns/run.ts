import { execa } from 'execa';
import { ClusterIpHaError } from '../errors.js';

// Every `ip`/`nft`/`sysctl` call of the netns topologies goes through here: argument arrays (never a shell
// string), a timeout on each call, and an error that names the command and its stderr.

export class NetnsError extends ClusterIpHaError {
  readonly code = 'netns';
  readonly recoverable = false;
}

export const DEFAULT_CMD_TIMEOUT_MS = 10_000;

export interface RunOptions {
  input?: string;
  timeoutMs?: number;
  /** Do not throw when the command fails (teardown): returns the exit code. */
  allowFail?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await execa(cmd, args, {
    input: opts.input ?? '',
    timeout: opts.timeoutMs ?? DEFAULT_CMD_TIMEOUT_MS,
    reject: false,
    stripFinalNewline: true,
  });
  const exitCode = typeof r.exitCode === 'number' ? r.exitCode : -1;
  if (exitCode !== 0 && !opts.allowFail) {
    const what = [cmd, ...args].join(' ');
    const why = r.timedOut ? 'timed out' : `exit ${exitCode}`;
    throw new NetnsError(`${what}: ${why}: ${String(r.stderr).trim().slice(0, 2000)}`);
  }
  return { stdout: String(r.stdout), stderr: String(r.stderr), exitCode };
}

/** Run many `ip` commands in one process, inside namespace `ns` (`ip -n NS -batch -`). */
export async function ipBatch(ns: string | null, lines: readonly string[], opts: RunOptions = {}): Promise<void> {
  if (lines.length === 0) return;
  for (const l of lines) {
    // The batch format is whitespace-split words: a newline or quote in a value would change its meaning.
    if (/[\n"'\\#]/.test(l)) throw new NetnsError(`refusing ip batch line with special characters: ${l}`);
  }
  const args = ns === null ? ['-batch', '-'] : ['-n', ns, '-batch', '-'];
  await run('ip', args, { ...opts, input: lines.join('\n') + '\n' });
}

/** `ip netns exec NS cmd args...` */
export async function nsRun(
  ns: string,
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}
