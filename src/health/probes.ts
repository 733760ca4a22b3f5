import { spawn } from 'node:child_process';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import type { CheckConfig } from '../config/types.js';
import type { CheckFailure, ProbeResult } from './state.js';

// The I/O half of service health: one probe of one check, bounded in time and output. Everything is async
// (child processes, sockets), so a hanging service never blocks the event loop that keeps the lease.

/** Most bytes of a probe's output kept; the rest is read and dropped. */
export const MAX_OUTPUT_BYTES = 4096;
/** Most characters of the output line shown in status. */
export const MAX_LINE_CHARS = 200;

/** Where exec checks find their programs: the only variable they inherit (no etcd credentials, no secrets). */
const CHECK_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface ProbeOptions {
  /** https: the CA bundle's contents, read once when the monitor starts. */
  ca?: string;
  /** Aborted when the agent stops: an exec probe's process group is killed at once. */
  signal?: AbortSignal;
}

/** The last non-empty line of a probe's output, cut for status and logs. */
export function lastLine(output: string): string {
  const lines = output.split(/\r?\n/).map((l) => l.trim());
  const l = lines.filter((x) => x !== '').pop() ?? '';
  return l.length > MAX_LINE_CHARS ? `${l.slice(0, MAX_LINE_CHARS - 3)}...` : l;
}

class Bounded {
  private chunks: Buffer[] = [];
  private size = 0;
  add(b: Buffer): void {
    if (this.size >= MAX_OUTPUT_BYTES) return;
    const part = b.subarray(0, MAX_OUTPUT_BYTES - this.size);
    this.chunks.push(part);
    this.size += part.length;
  }
  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

const since = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const fail = (t0: bigint, failure: CheckFailure, output: string): ProbeResult => ({
  ok: false,
  durationMs: since(t0),
  failure,
  output: lastLine(output),
});
const pass = (t0: bigint, output: string): ProbeResult => ({
  ok: true,
  durationMs: since(t0),
  output: lastLine(output),
});

/** `what` (exit 3, timed out...) and the last line the command printed. */
function withTail(what: string, out: Bounded): string {
  const tail = lastLine(out.text());
  return tail === '' ? what : lastLine(`${what}; ${tail}`);
}

/** Run argv without a shell in its own process group; SIGKILL the group at the timeout. */
export function execProbe(argv: readonly string[], timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    const out = new Bounded();
    let done = false;
    let closeTimer: NodeJS.Timeout | undefined;
    const finish = (failure: CheckFailure | null, what: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(closeTimer);
      signal?.removeEventListener('abort', onAbort);
      child.stdout?.destroy();
      child.stderr?.destroy();
      const output = failure === null ? lastLine(out.text()) : withTail(what, out);
      resolve(failure === null ? pass(t0, output) : fail(t0, failure, output));
    };
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: CHECK_PATH },
      detached: true,
      cwd: '/',
    });
    child.stdout?.on('data', (b: Buffer) => out.add(b));
    child.stderr?.on('data', (b: Buffer) => out.add(b));
    const killGroup = (): void => {
      // The group: `sh -c` and whatever it started die with it.
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const timer = setTimeout(() => {
      killGroup();
      finish('timeout', `timed out after ${timeoutMs} ms`);
    }, timeoutMs);
    const onAbort = (): void => {
      killGroup();
      finish('error', 'stopped');
    };
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => finish('error', err.message));
    child.on('exit', (code, signal) => {
      const [failure, what]: [CheckFailure | null, string] =
        code === 0 ? [null, ''] : signal !== null ? ['signal', `killed by ${signal}`] : ['exitCode', `exit ${code}`];
      // Let the pipes drain, but a grandchild that keeps them open must not hold the result back.
      child.on('close', () => finish(failure, what));
      closeTimer = setTimeout(() => finish(failure, what), 50);
    });
  });
}

export function tcpProbe(host: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(fail(t0, 'timeout', `connect ${host}:${port} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(pass(t0, `connected to ${host}:${port}`));
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(
        fail(
          t0,
          err.code === 'ECONNREFUSED' ? 'refused' : 'error',
          `connect ${host}:${port}: ${err.code ?? err.message}`,
        ),
      );
    });
  });
}

export function httpProbe(
  c: Extract<CheckConfig, { type: 'http' | 'https' }>,
  opts: ProbeOptions = {},
): Promise<ProbeResult> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: ProbeResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const request = c.type === 'https' ? httpsRequest : httpRequest;
    // No keep-alive agent: every probe opens its own connection, as a client would after a restart.
    const req = request(c.target, {
      method: c.method,
      agent: false,
      headers: { 'user-agent': 'clusterip-ha-check', connection: 'close' },
      ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
    });
    const timer = setTimeout(
      () => finish(fail(t0, 'timeout', `${c.method} ${c.target} timed out after ${c.timeoutMs} ms`)),
      c.timeoutMs,
    );
    req.on('error', (err: NodeJS.ErrnoException) =>
      finish(fail(t0, err.code === 'ECONNREFUSED' ? 'refused' : 'error', `${c.method} ${c.target}: ${err.message}`)),
    );
    req.on('response', (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      const good = c.expectStatus.length > 0 ? c.expectStatus.includes(status) : status >= 200 && status < 400;
      const line = `HTTP ${status} ${res.statusMessage ?? ''}`.trim();
      res.resume();
      finish(good ? pass(t0, line) : fail(t0, 'status', line));
    });
    req.end();
  });
}

/** One probe of `c`. */
export function probe(c: CheckConfig, opts: ProbeOptions = {}): Promise<ProbeResult> {
  switch (c.type) {
    case 'exec':
      return execProbe(c.target, c.timeoutMs, opts.signal);
    case 'tcp':
      return tcpProbe(c.target.host, c.target.port, c.timeoutMs);
    case 'http':
    case 'https':
      return httpProbe(c, opts);
  }
}
