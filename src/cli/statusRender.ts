import { paint, type CliIo } from './io.js';
import type { StatusReport } from './statusModel.js';
import { formatTable, ranges } from './table.js';

// The human form of `status`: anomalies first (what needs attention), then leader and nodes, then per VIP the
// buckets grouped by owner. Every bucket that has an anomaly is listed on its own line; healthy buckets are
// summarised as ranges so a 4,096-bucket VIP stays readable.

const MAX_ANOMALY_LINES = 40;

export function renderStatus(r: StatusReport, io: Pick<CliIo, 'color' | 'isTTY'>): string {
  const out: string[] = [];
  const errors = r.anomalies.filter((a) => a.severity === 'error').length;
  const headline = r.healthy
    ? paint(io, 'green', 'HEALTHY')
    : paint(io, 'red', `UNHEALTHY (${errors} problem${errors === 1 ? '' : 's'})`);
  out.push(`cluster ${r.cluster}  ${headline}  revision ${r.revision}  spec generation ${r.specGeneration ?? '-'}`);
  if (r.anomalies.length > 0) {
    out.push('', paint(io, 'bold', 'ANOMALIES'));
    for (const a of r.anomalies.slice(0, MAX_ANOMALY_LINES)) {
      const tag = a.severity === 'error' ? paint(io, 'red', 'error  ') : paint(io, 'yellow', 'warning');
      out.push(`  ${tag} ${a.kind}: ${a.detail}`);
    }
    if (r.anomalies.length > MAX_ANOMALY_LINES)
      out.push(`  … ${r.anomalies.length - MAX_ANOMALY_LINES} more (see --json)`);
  }
  out.push('', `${paint(io, 'bold', 'LEADER')} ${r.leader ?? paint(io, 'red', 'none')}`, '');
  const rows: string[][] = [
    ['NODE', 'ALIVE', 'WEIGHT', 'DRAINING', 'LEASE', 'FENCED', 'BUCKETS', 'BACKEND', 'VERSION', 'LAST ERROR'],
  ];
  for (const n of r.nodes) {
    rows.push([
      n.leader ? `${n.id}*` : n.id,
      n.alive ? paint(io, 'green', 'yes') : paint(io, 'red', 'no'),
      n.weight === null ? '-' : String(n.weight),
      n.draining
        ? paint(io, 'yellow', 'yes')
        : n.notReady !== null
          ? paint(io, 'red', 'not ready')
          : n.health !== null
            ? paint(io, n.panicKept ? 'red' : 'yellow', n.panicKept ? `panic-kept (${n.health})` : n.health)
            : 'no',
      n.leaseTtlLeft === null ? '-' : `${n.leaseTtlLeft}s`,
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

const truncate = (s: string, n: number) => (s.length <= n ? s : `${s.slice(0, n - 1)}…`);
