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

/** One report of the prober's stream mode (see PROBER_PROGRAM). */
export interface StreamReport {
  /** Prober clock: the report covers the sends made in (from, to]. */
  t: number;
  from: number;
  to: number;
  sends: number;
  /** Per source (index into `sources`): the distinct nodes that alone answered one of those sends. */
  owners: string[][];
  /** Per source: how many of those sends got no answer at all. */
  silent: number[];
  /** Requests answered by two or more nodes: one packet accepted twice. */
  doubles: { seq: number; t: number; i: number; nodes: string[] }[];
  /** Gaps (ms) between successive sends (each send goes out from every source at once). */
  gaps: number[];
}

export interface StreamOptions {
  /** A request from every source every periodMs; default 5. */
  periodMs?: number;
  /** A report every reportMs; default 50. */
  reportMs?: number;
  /** A send is counted once it is this old (its replies are in); default 20. */
  settleMs?: number;
}

export interface Prober {
  readonly sources: readonly string[];
  readonly pid: number;
  probe(opts?: ProbeOptions): Promise<ProbeResult>;
  /** Probe continuously on the prober's own clock; `onReport` gets every report until stop(). */
  stream(opts: StreamOptions, onReport: (r: StreamReport) => void): { stop(): void };
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
  // Above the agents' priority (we run as root for the namespaces anyway): on a loaded machine the prober's send
  // gaps are the dataplane's resolution. `nice` execs node in place, so the pid stays the program's.
  const proc: NsProcess = spawnInNs(opts.ns, 'nice', ['-n', '-10', process.execPath, '-e', PROBER_PROGRAM, '--', cfg]);
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
    stream(so, onReport) {
      const id = nextId++;
      let on = true;
      proc.onLine((l) => {
        if (!on || !l.startsWith(`{"stream":${id},`)) return;
        onReport(JSON.parse(l) as StreamReport);
      });
      const req = { id, periodMs: so.periodMs ?? 5, reportMs: so.reportMs ?? 50, settleMs: so.settleMs ?? 20 };
      proc.child.stdin!.write(JSON.stringify({ stream: req }) + '\n');
      return {
        stop() {
          if (!on) return;
          proc.child.stdin!.write(JSON.stringify({ stream: null }) + '\n');
          // The final report arrives after this; later lines are ignored.
          setTimeout(() => (on = false), 500).unref();
        },
      };
    },
    stop: () => proc.stop(500),
  };
}
