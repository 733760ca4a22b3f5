import { spawnInNs, type NsProcess } from './nsProcess.js';
import { PROBER_PROGRAM } from './programs.js';
import { NetnsError } from './run.js';

// The harness side of the long-lived prober in the client namespace (programs.ts): one request at a time over
// stdin, one JSON answer line per request.

export interface SourceAnswer {
  source: string;
  /** Every node that answered this source's UDP request within the window (duplicates kept). */
  udp: string[];
  /** Node named by the TCP connection, or null (see tcpError). Only when the probe asked for TCP. */
  tcp: string | null;
  tcpError: string | null;
}

export interface ProbeResult {
  id: number;
  /** Wall-clock ms (Date.now() in the prober) when the requests went out / the window closed. */
  t0: number;
  t1: number;
  /** Whether UDP requests were sent (otherwise `udp` lists are empty by construction). */
  udpProbed: boolean;
  /** Whether TCP connects were made. */
  tcpProbed: boolean;
  answers: SourceAnswer[];
  /** Replies that arrived after their probe's window closed (attributed to that probe id). */
  late: { id: number; source: string; node: string }[];
}

export interface ProbeOptions {
  /** How long to collect UDP replies; default 40 ms. */
  windowMs?: number;
  udp?: boolean;
  tcp?: boolean;
  tcpTimeoutMs?: number;
}

interface RawAnswer {
  id: number;
  t0: number;
  t1: number;
  udp: string[][] | null;
  tcp: (string | null)[] | null;
  tcpErr: (string | null)[] | null;
  late: { id: number; i: number; node: string }[];
  error?: string;
  fatal?: string;
}

export interface Prober {
  readonly sources: readonly string[];
  readonly pid: number;
  probe(opts?: ProbeOptions): Promise<ProbeResult>;
  stop(): Promise<void>;
}

export async function startProber(opts: {
  ns: string;
  sources: readonly string[];
  vip: string;
  udpPort: number;
  tcpPort: number;
  readyTimeoutMs?: number;
}): Promise<Prober> {
  const cfg = JSON.stringify({ sources: opts.sources, vip: opts.vip, udpPort: opts.udpPort, tcpPort: opts.tcpPort });
  const proc: NsProcess = spawnInNs(opts.ns, process.execPath, ['-e', PROBER_PROGRAM, '--', cfg]);
  try {
    await proc
      .waitLine((l) => l.includes('"ready"') || l.includes('"fatal"'), opts.readyTimeoutMs ?? 15_000)
      .then((l) => {
        if (l.includes('"fatal"')) throw new NetnsError(`prober in ${opts.ns}: ${l}`);
      });
  } catch (err) {
    await proc.stop(200);
    throw err;
  }

  let nextId = 1;
  let chain: Promise<unknown> = Promise.resolve();
  const sources = [...opts.sources];

  const one = async (p: ProbeOptions): Promise<ProbeResult> => {
    const id = nextId++;
    const windowMs = p.windowMs ?? 40;
    const tcpTimeoutMs = p.tcpTimeoutMs ?? 500;
    const line = proc.waitLine(
      (l) => l.startsWith(`{"id":${id},`) || l.includes('"fatal"'),
      windowMs + (p.tcp ? tcpTimeoutMs : 0) + 10_000,
    );
    proc.child.stdin!.write(
      JSON.stringify({ id, windowMs, udp: p.udp ?? true, tcp: p.tcp ?? false, tcpTimeoutMs }) + '\n',
    );
    const raw = JSON.parse(await line) as RawAnswer;
    if (raw.fatal !== undefined || raw.error !== undefined) {
      throw new NetnsError(`prober in ${opts.ns}: ${raw.fatal ?? raw.error}`);
    }
    return {
      id,
      t0: raw.t0,
      t1: raw.t1,
      udpProbed: raw.udp !== null,
      tcpProbed: raw.tcp !== null,
      answers: sources.map((source, i) => ({
        source,
        udp: raw.udp?.[i] ?? [],
        tcp: raw.tcp?.[i] ?? null,
        tcpError: raw.tcpErr?.[i] ?? null,
      })),
      late: raw.late.map((x) => ({ id: x.id, source: sources[x.i] ?? '?', node: x.node })),
    };
  };

  return {
    sources,
    pid: proc.pid,
    probe(p = {}) {
      // Serialize: the prober answers one request at a time and ids must match up.
      const r = chain.then(() => one(p));
      chain = r.catch(() => undefined);
      return r;
    },
    stop: () => proc.stop(500),
  };
}
