import { SERVER_ECHO_PORT } from './addressing.js';
import { spawnInNs } from './nsProcess.js';
import { HOLD_PROGRAM } from './programs.js';
import { NetnsError } from './run.js';

// Long-lived TCP connections from the client namespace (HOLD_PROGRAM): the proof that a node's established
// connections survive what it goes through (a hitless restart must not reset one).

export interface HeldConnection {
  source: string;
  /** The node that accepted the connection (its greeting); null if it never connected. */
  node: string | null;
  sent: number;
  echoed: number;
  /** Echoes signed by another node than the one that accepted: another node's kernel took the flow. */
  wrongNode: number;
  /** The socket's first error (ECONNRESET: another node answered the flow with a reset). */
  error: string | null;
  closed: boolean;
  /** Time since the last echo (or the greeting) when the report was made. */
  silentMs: number | null;
}

export interface HeldConnections {
  readonly pid: number;
  report(timeoutMs?: number): Promise<HeldConnection[]>;
  stop(): Promise<void>;
}

export async function holdConnections(opts: {
  ns: string;
  sources: readonly string[];
  vip: string;
  port?: number;
  intervalMs?: number;
  /** How long to wait for every connection's greeting. */
  readyTimeoutMs?: number;
}): Promise<HeldConnections> {
  const cfg = JSON.stringify({
    sources: opts.sources,
    vip: opts.vip,
    port: opts.port ?? SERVER_ECHO_PORT,
    intervalMs: opts.intervalMs ?? 100,
  });
  const proc = spawnInNs(opts.ns, process.execPath, ['-e', HOLD_PROGRAM, '--', cfg]);
  const report = async (timeoutMs = 5000): Promise<HeldConnection[]> => {
    const line = proc.waitLine((l) => l.startsWith('{"report"'), timeoutMs);
    proc.child.stdin?.write('report\n');
    return (JSON.parse(await line) as { report: HeldConnection[] }).report;
  };
  const held: HeldConnections = { pid: proc.pid, report, stop: () => proc.stop(500) };
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 10_000);
  try {
    for (;;) {
      const r = await report();
      if (r.every((c) => c.node !== null)) return held;
      const bad = r.find((c) => c.error !== null || c.closed);
      if (bad) throw new NetnsError(`held connection from ${bad.source}: ${bad.error ?? 'closed'} before its greeting`);
      if (Date.now() > deadline) {
        throw new NetnsError(`held connections: ${r.filter((c) => c.node === null).length} not connected in time`);
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  } catch (err) {
    await proc.stop(200);
    throw err;
  }
}
