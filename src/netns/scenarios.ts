import { execa } from 'execa';
import { agentMainPath } from '../localcluster/agentProcess.js';
import {
  doubleAnswers,
  foldLateReplies,
  handoffOf,
  verdictOf,
  type DoubleAnswer,
  type HandoffVerdict,
} from './analysis.js';
import { SERVER_TCP_PORT } from './addressing.js';
import type { Dataplane } from './dataplane.js';
import { startMonitor, type MonitorEnd } from './monitor.js';
import type { ProbeOptions, ProbeResult } from './prober.js';
import { NetnsError } from './run.js';

// "Take a node out, watch its clients move": the SIGKILL, control-cut and drain stories of DESIGN §9 on the
// real dataplane, probed continuously from before the fault until the survivors have served every one of the
// victim's sources for a while. Returns measurements; tests assert on them, the benchmark reports them.

/** `service`: kill the node's server only; its agent's checks must drain it (DESIGN §14). */
export type TakeoverKind = 'kill' | 'cut' | 'drain' | 'service';

export interface TakeoverOptions {
  kind: TakeoverKind;
  victim: string;
  /** Probing before the fault (ms); default 500. */
  leadMs?: number;
  /** Keep probing this long after the takeover, to catch late double answers; default 1000. */
  tailMs?: number;
  /** Hard bound on the whole probing; default 30 s. */
  maxMs?: number;
  probe?: ProbeOptions;
  onResult?: (r: ProbeResult) => void;
}

export interface TakeoverResult {
  kind: TakeoverKind;
  victim: string;
  /** The victim's sources before the fault. */
  victimSources: string[];
  /** Wall-clock ms when the fault was injected (just before the signal / cut / drain command). */
  faultAt: number;
  ended: MonitorEnd;
  /** All probes, late replies folded in. */
  results: ProbeResult[];
  doubles: DoubleAnswer[];
  /** Fault → first probe from which on every victim source is answered by exactly one survivor; null: never. */
  takeoverMs: number | null;
  /** Fault → last probe the victim answered any of its sources. */
  victimLastMs: number | null;
  /** Fault → first probe a survivor answered any of the victim's sources. */
  survivorFirstMs: number | null;
  handoffs: Map<string, HandoffVerdict>;
  /** Sources of other nodes that were not answered by exactly their old owner in some probe. */
  othersDisturbed: { probeId: number; source: string; expected: string; got: string[] }[];
}

export async function runTakeover(dp: Dataplane, o: TakeoverOptions): Promise<TakeoverResult> {
  const before = await dp.expectedOwners();
  if (before.size !== dp.sources.length) {
    throw new NetnsError(`only ${before.size} of ${dp.sources.length} sources have a claimed bucket: not settled`);
  }
  const victimSources = [...before].filter(([, n]) => n === o.victim).map(([s]) => s);
  const victims = new Set(victimSources);
  if (victims.size === 0) throw new NetnsError(`${o.victim} serves no source: nothing to observe`);
  const tailMs = o.tailMs ?? 1000;
  let faultAt = Infinity;
  const takenOver = (r: ProbeResult): boolean =>
    r.answers.every((a) => {
      if (!victims.has(a.source)) return true;
      const v = verdictOf(a.udp);
      return v.kind === 'one' && v.node !== o.victim;
    });

  const mon = startMonitor({
    probe: dp.probe,
    probeOptions: o.probe ?? { windowMs: 30 },
    maxMs: o.maxMs ?? 30_000,
    maxProbes: 5000,
    ...(o.onResult ? { onResult: o.onResult } : {}),
    until: (rs) => {
      const first = firstStable(rs, faultAt, takenOver);
      return first !== undefined && rs[rs.length - 1]!.t0 - first.t0 >= tailMs;
    },
  });
  try {
    await new Promise((r) => setTimeout(r, o.leadMs ?? 500));
    faultAt = Date.now();
    await inject(dp, o.kind, o.victim);
  } catch (err) {
    mon.stop();
    await mon.done;
    throw err;
  }
  const run = await mon.done;
  const results = foldLateReplies(run.results);

  const first = firstStable(results, faultAt, takenOver);
  let victimLast: number | null = null;
  let survivorFirst: number | null = null;
  const othersDisturbed: TakeoverResult['othersDisturbed'] = [];
  for (const r of results) {
    for (const a of r.answers) {
      if (victims.has(a.source)) {
        if (a.udp.includes(o.victim)) victimLast = Math.max(victimLast ?? -Infinity, r.t0);
        if (r.t0 >= faultAt && a.udp.some((n) => n !== o.victim))
          survivorFirst = Math.min(survivorFirst ?? Infinity, r.t0);
      } else {
        const want = before.get(a.source)!;
        if (a.udp.length !== 1 || a.udp[0] !== want) {
          othersDisturbed.push({ probeId: r.id, source: a.source, expected: want, got: a.udp });
        }
      }
    }
  }
  return {
    kind: o.kind,
    victim: o.victim,
    victimSources,
    faultAt,
    ended: run.ended,
    results,
    doubles: doubleAnswers(results),
    takeoverMs: first ? first.t0 - faultAt : null,
    victimLastMs: victimLast === null ? null : victimLast - faultAt,
    survivorFirstMs: survivorFirst === null ? null : survivorFirst - faultAt,
    handoffs: new Map(victimSources.map((s) => [s, handoffOf(results, s)])),
    othersDisturbed,
  };
}

async function inject(dp: Dataplane, kind: TakeoverKind, victim: string): Promise<void> {
  switch (kind) {
    case 'kill': {
      const exit = await dp.stopAgent(victim, 'SIGKILL', 10_000);
      if (exit.signal !== 'SIGKILL') throw new NetnsError(`agent ${victim} exited with ${JSON.stringify(exit)}`);
      return;
    }
    case 'cut':
      return dp.cutControl(victim, 'blackhole');
    case 'service':
      return dp.stopServer(victim);
    case 'drain': {
      const r = await execa(
        process.execPath,
        [agentMainPath(), 'drain', victim, '--etcd-endpoints', dp.etcdEndpoint, '--cluster', dp.cluster],
        { timeout: 20_000, reject: false },
      );
      if (r.exitCode !== 0) throw new NetnsError(`clusterip-ha drain ${victim}: exit ${r.exitCode}: ${r.stderr}`);
      return;
    }
  }
}

/** The first probe at or after `from` from which on `pred` holds in every probe. */
export function firstStable(
  results: readonly ProbeResult[],
  from: number,
  pred: (r: ProbeResult) => boolean,
): ProbeResult | undefined {
  let first: ProbeResult | undefined;
  for (const r of results) {
    if (r.t0 < from) continue;
    if (pred(r)) first ??= r;
    else first = undefined;
  }
  return first;
}

/** Agent flags for a TCP check of the node's own server on the VIP (the `service` takeover, DESIGN §14). */
export function serviceCheckArgs(o: {
  vip: string;
  intervalMs: number;
  fall: number;
  rise?: number;
  holdMs: number;
}): string[] {
  const check = {
    name: 'echo',
    type: 'tcp',
    target: `${o.vip}:${SERVER_TCP_PORT}`,
    intervalMs: o.intervalMs,
    timeoutMs: Math.min(150, o.intervalMs),
    rise: o.rise ?? 2,
    fall: o.fall,
  };
  return ['--checks', JSON.stringify([check]), '--health-hold', String(o.holdMs)];
}
