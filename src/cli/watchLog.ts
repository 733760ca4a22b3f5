import type { ClusterState } from '../etcd/store.js';
import { formatEvent, orderedEvents } from './eventsRender.js';
import type { CliIo } from './io.js';
import type { StatusReport } from './statusModel.js';
import { healthHeadline } from './statusRender.js';

// `status --watch` into a pipe or a file (`demo | tee`): a log, not frames. The first picture once, then one line
// per change — a new event, a change of the health verdict or of its anomaly kinds, etcd lost and back — so the
// file reads like `events --follow` and grows only when something happened.

export interface WatchLogView {
  /** The verdict line last printed (health and anomaly kinds, no revision: that moves on every status write). */
  verdict: string;
  /** Highest event sequence printed. */
  lastSeq: number;
  stale: boolean;
}

export interface WatchLogInput {
  report: StatusReport;
  state: ClusterState;
  /** Why etcd is unreachable, or null. */
  stale: string | null;
  /** The full picture, for the first print. */
  frame: string;
  now: Date;
}

export function watchLogStep(
  prev: WatchLogView | null,
  x: WatchLogInput,
  io: Pick<CliIo, 'color'>,
): { text: string; next: WatchLogView } {
  const events = orderedEvents(x.state);
  const kinds = [...new Set(x.report.anomalies.map((a) => a.kind))].sort();
  const verdict = `${healthHeadline(x.report, io)}${kinds.length > 0 ? `: ${kinds.join(', ')}` : ''}`;
  const next: WatchLogView = {
    verdict,
    lastSeq: Math.max(prev?.lastSeq ?? -1, ...events.map(([seq]) => seq)),
    stale: x.stale !== null,
  };
  if (prev === null) return { text: x.frame, next };
  const at = x.now.toISOString();
  const lines: string[] = [];
  if (x.stale !== null && !prev.stale) lines.push(`${at}  STALE: etcd unreachable for 0 s (${x.stale})`);
  if (x.stale === null && prev.stale) lines.push(`${at}  etcd reachable again`);
  for (const [seq, e] of events) if (seq > prev.lastSeq) lines.push(formatEvent(e, io));
  if (verdict !== prev.verdict) lines.push(`${at}  cluster ${x.report.cluster}  ${verdict}`);
  return { text: lines.map((l) => `${l}\n`).join(''), next };
}
