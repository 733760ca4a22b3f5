import { execa } from 'execa';

// Every external command of the backends goes through here: argument arrays only (never a shell string),
// a timeout, and a plain result instead of an exception so callers classify failures themselves.

export interface RunResult {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Set when the command could not be started (ENOENT: not installed, EACCES). */
  spawnError?: string;
  durationMs: number;
}

export interface RunOptions {
  input?: string;
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
}

export type Runner = (file: string, args: readonly string[], opts: RunOptions) => Promise<RunResult>;

export const execaRunner: Runner = async (file, args, opts) => {
  const started = performance.now();
  const r = await execa(file, [...args], {
    input: opts.input,
    stdin: opts.input === undefined ? 'ignore' : undefined,
    timeout: opts.timeoutMs,
    env: opts.env,
    extendEnv: true,
    reject: false,
    stripFinalNewline: false,
    forceKillAfterDelay: 1000,
  });
  const code = (r.cause as NodeJS.ErrnoException | undefined)?.code;
  const spawnFailed = r.exitCode === undefined && !r.timedOut && r.signal === undefined;
  return {
    exitCode: r.exitCode,
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
    timedOut: r.timedOut,
    ...(spawnFailed ? { spawnError: code ?? r.shortMessage } : {}),
    durationMs: performance.now() - started,
  };
};

/** The last `max` characters of a command's stderr, on one line, for error messages. */
export function tail(text: string, max = 400): string {
  const t = text.trim().replace(/\s*\n\s*/g, ' | ');
  return t.length > max ? `…${t.slice(-max)}` : t;
}
