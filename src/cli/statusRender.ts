import { paint, type CliIo } from './io.js';
import type { NodeStatus, Severity, StatusReport } from './statusModel.js';
import { formatTable, ranges } from './table.js';

// The human form of `status`: anomalies first (what needs attention), then leader and nodes, then per VIP the
// buckets grouped by owner. Every bucket that has an anomaly is listed on its own line; healthy buckets are
// summarised as ranges so a 4,096-bucket VIP stays readable.

const MAX_ANOMALY_LINES = 40;

/** HEALTHY / DEGRADED (n nodes down) / UNHEALTHY (n problems), painted. */
export function healthHeadline(r: StatusReport, io: Pick<CliIo, 'color'>): string {
  const errors = r.anomalies.filter((a) => a.severity === 'error').length;
  const down = r.nodes.filter((n) => n.state === 'down').length;
  return r.health === 'healthy'
    ? paint(io, 'green', 'HEALTHY')
    : r.health === 'degraded'
      ? paint(io, 'yellow', `DEGRADED (${down} node${down === 1 ? '' : 's'} down)`)
      : paint(io, 'red', `UNHEALTHY (${errors} problem${errors === 1 ? '' : 's'})`);
}

export function renderStatus(r: StatusReport, io: Pick<CliIo, 'color' | 'isTTY'>): string {
  const out: string[] = [];
  const headline = healthHeadline(r, io);
  const settling = r.settling.length > 0 ? `  (${r.settling.length} settling)` : '';
  out.push(
    `cluster ${r.cluster}  ${headline}${settling}  revision ${r.revision}  spec generation ${r.specGeneration ?? '-'}`,
  );
  if (r.anomalies.length > 0) {
    out.push('', paint(io, 'bold', 'ANOMALIES'));
    for (const a of r.anomalies.slice(0, MAX_ANOMALY_LINES))
      out.push(`  ${SEVERITY_TAG[a.severity](io)} ${a.kind}: ${a.detail}`);
    if (r.anomalies.length > MAX_ANOMALY_LINES)
      out.push(`  … ${r.anomalies.length - MAX_ANOMALY_LINES} more (see --json)`);
  }
  if (r.settling.length > 0) {
    out.push('', `${paint(io, 'bold', 'SETTLING')} (within their grace: a move, start-up or failover in progress)`);
    for (const a of r.settling.slice(0, MAX_ANOMALY_LINES / 4))
      out.push(`  ${a.kind}: ${a.detail} (${a.seenForMs} of ${a.graceMs} ms)`);
    if (r.settling.length > MAX_ANOMALY_LINES / 4) out.push(`  … ${r.settling.length - MAX_ANOMALY_LINES / 4} more`);
  }
  out.push('', `${paint(io, 'bold', 'LEADER')} ${r.leader ?? paint(io, 'red', 'none')}`, '');
  const rows: string[][] = [
    ['NODE', 'STATE', 'WEIGHT', 'DRAINING', 'LEASE', 'FENCED', 'BUCKETS', 'BACKEND', 'VERSION', 'LAST ERROR'],
  ];
  for (const n of r.nodes) {
    rows.push([
      n.leader ? `${n.id}*` : n.id,
      n.state === 'up' ? paint(io, 'green', 'UP') : paint(io, 'red', n.member ? 'DOWN' : 'gone'),
      n.weight === null ? '-' : String(n.weight),
      n.draining
        ? paint(io, 'yellow', 'yes')
        : n.notReady !== null
          ? paint(io, 'red', 'not ready')
          : n.health !== null
            ? paint(io, n.panicKept ? 'red' : 'yellow', n.panicKept ? `panic-kept (${n.health})` : n.health)
            : 'no',
      `${n.leaseTtlLeft === null ? '-' : `${n.leaseTtlLeft}s`}${ttlNote(n)}`,
      n.fenced === null ? '-' : n.fenced ? paint(io, 'red', 'yes') : 'no',
      String(n.claims),
      n.backendKind ?? '-',
      n.version ?? '-',
      n.lastError === null ? '-' : truncate(n.lastError, 60),
    ]);
  }
  out.push(r.nodes.length === 0 ? 'no nodes' : formatTable(rows, io.isTTY).trimEnd());
  const checkRows: string[][] = [['NODE', 'CHECK', 'TYPE', 'STATE', 'SINCE', 'LAST', 'OUTPUT']];
  for (const n of r.nodes) {
    for (const c of n.checks ?? []) {
      checkRows.push([
        n.id,
        c.name,
        c.type,
        c.state === 'up' ? paint(io, 'green', 'up') : paint(io, 'red', 'down'),
        c.since,
        c.last === null ? '-' : `${c.last.ok ? 'ok' : (c.last.failure ?? 'failed')} ${c.last.durationMs}ms`,
        truncate(c.last?.output ?? '', 60) || '-',
      ]);
    }
  }
  if (checkRows.length > 1) out.push('', paint(io, 'bold', 'CHECKS'), formatTable(checkRows, io.isTTY).trimEnd());
  for (const v of r.vips) {
    out.push(
      '',
      `${paint(io, 'bold', 'VIP')} ${v.address}  ${v.interface ?? '-'}  ${v.bucketCount} buckets  ${v.hashMode ?? '-'}  epoch ${v.epoch ?? '-'}`,
    );
    const byOwner = new Map<string, number[]>();
    const odd: string[][] = [['BUCKET', 'OWNER', 'ASSIGNED', 'BACKEND']];
    for (const b of v.buckets) {
      if (b.owner !== null && b.owner === b.assigned && b.owner === b.backend) {
        byOwner.set(b.owner, [...(byOwner.get(b.owner) ?? []), b.bucket]);
      } else {
        odd.push([String(b.bucket), b.owner ?? paint(io, 'red', 'none'), b.assigned ?? '-', b.backend ?? '-']);
      }
    }
    for (const [owner, bs] of [...byOwner.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
      out.push(`  ${owner}: ${bs.length} bucket${bs.length === 1 ? '' : 's'} (${ranges(bs)})`);
    }
    if (odd.length > 1) out.push(formatTable(odd, io.isTTY).replace(/^/gm, '  ').trimEnd());
  }
  return out.join('\n') + '\n';
}

const SEVERITY_TAG: Record<Severity, (io: Pick<CliIo, 'color' | 'isTTY'>) => string> = {
  error: (io) => paint(io, 'red', 'error   '),
  degraded: (io) => paint(io, 'yellow', 'degraded'),
  warning: (io) => paint(io, 'yellow', 'warning '),
};

/** etcd raised the TTL the node asked for: show both, it changes the failover time. */
const ttlNote = (n: NodeStatus): string =>
  n.leaseTtlGranted !== null && n.leaseTtlRequested !== null && n.leaseTtlGranted !== n.leaseTtlRequested
    ? ` (TTL ${n.leaseTtlGranted}s, asked ${n.leaseTtlRequested}s)`
    : '';

const truncate = (s: string, n: number) => (s.length <= n ? s : `${s.slice(0, n - 1)}…`);
