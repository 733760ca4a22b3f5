import type { Command } from 'commander';
import { loadClusterState, watchCluster, type ClusterState } from '../../etcd/store.js';
import { addConnectionOptions, connect, resolveConnection, tidyGrpcMessage, type Connection } from '../connection.js';
import { UsageError, EXIT } from '../errors.js';
import { paint, type CliIo } from '../io.js';
import { renderEventLines } from '../eventsRender.js';
import { clusterHint } from './spec.js';
import { buildStatus, nextSettleInMs, settle, ANOMALY_GRACE_MS, type StatusReport } from '../statusModel.js';
import { renderStatus } from '../statusRender.js';
import { watchLogStep, type WatchLogView } from '../watchLog.js';

export function registerStatus(program: Command, io: CliIo): void {
  const cmd = program
    .command('status')
    .description('show the leader, every node and every bucket (claim, assignment, backend), anomalies first')
    .option('--json', 'print the documented JSON document (docs/status-json.md); with --watch one per line')
    .option('--watch', 'redraw on every etcd change (no polling) until Ctrl-C')
    .option('--check', 'exit 3 when unhealthy, 4 when degraded (for monitoring); prints nothing when healthy')
    .option('--no-settle', 'report at once: count anomalies still within their grace (docs/status-json.md)')
    .addHelpText(
      'after',
      `
Examples:
  clusterip-ha status
  clusterip-ha status --json | jq '.vips[].buckets[] | select(.owner == null)'
  clusterip-ha status --watch --etcd-endpoints http://10.0.0.1:2379,http://10.0.0.2:2379
  clusterip-ha status --check || page-oncall   # 3: unhealthy, 4: degraded (a node down), 1: etcd unreachable

An anomaly counts once it has lasted its grace (a handoff, start-up, a failover in progress are not problems
until they outlast it); a one-shot status watches for up to ${Math.max(...Object.values(ANOMALY_GRACE_MS)) / 1000} s to confirm what it sees.`,
    );
  addConnectionOptions(cmd);
  cmd.action(async (opts: Record<string, unknown>) => {
    if (opts.watch && opts.check)
      throw new UsageError('--check is a one-shot test; it cannot be combined with --watch');
    const c = connect(await resolveConnection(opts, io.env));
    try {
      if (opts.watch) {
        await watchStatus(c, io, opts.json === true);
        return;
      }
      const report = await settledSnapshot(c, !opts.json && !opts.check ? io : null, opts.settle !== false);
      // A cluster name with nothing under it is most often a typo: say which clusters exist.
      const noSpec = report.anomalies.find((a) => a.kind === 'noSpec');
      if (noSpec && report.nodes.length === 0)
        noSpec.detail = `cluster ${c.cluster} has no spec; ${await clusterHint(c)}`;
      if (opts.check) {
        if (report.health !== 'healthy') {
          const counted = report.anomalies.filter(
            (a) => a.severity === (report.health === 'unhealthy' ? 'error' : 'degraded'),
          );
          io.err(`${report.health}: ${counted.length} problem(s); first: ${counted[0]?.kind}: ${counted[0]?.detail}\n`);
          io.exitCode = report.health === 'unhealthy' ? EXIT.unhealthy : EXIT.degraded;
        }
        if (opts.json) io.out(`${JSON.stringify(report)}\n`);
        return;
      }
      io.out(opts.json ? `${JSON.stringify(report, null, io.isTTY ? 2 : undefined)}\n` : renderStatus(report, io));
    } finally {
      await c.close();
    }
  });
}

const LEASE_BATCH = 32;

/** Lease time left for each live node, asked of etcd (bounded by the command's deadline). */
async function leaseTtls(c: Connection, state: ClusterState): Promise<Map<string, number>> {
  const leases = [...new Set([...state.nodes.values()].map((n) => n.lease).filter((l) => l !== '0'))];
  const out = new Map<string, number>();
  // In batches, so a thousand-node cluster does not open a thousand calls at once.
  for (let i = 0; i < leases.length; i += LEASE_BATCH) {
    await Promise.all(
      leases.slice(i, i + LEASE_BATCH).map(async (id) => {
        try {
          const r = await c.call('lease time-to-live', () => c.etcd.leaseClient.leaseTimeToLive({ ID: id }));
          out.set(id, Number(r.TTL));
        } catch {
          // Unknown is shown as '-': status must still render when one lease call fails.
        }
      }),
    );
  }
  return out;
}

async function snapshot(c: Connection, state: ClusterState): Promise<StatusReport> {
  return buildStatus({ cluster: c.cluster, state, leaseTtls: await leaseTtls(c, state) });
}

const SETTLE_POLL_MS = 250;
const MAX_GRACE_MS = Math.max(...Object.values(ANOMALY_GRACE_MS));

/**
 * One picture whose anomalies have each lasted their grace: re-read while any is settling, until each either
 * went away or outlasted its grace (bounded by the largest grace). A healthy cluster answers at once.
 */
export async function settledSnapshot(c: Connection, note: CliIo | null, settling: boolean): Promise<StatusReport> {
  const read = () => c.call('reading the cluster', () => loadClusterState(c.etcd, c.keys));
  const firstSeen = new Map<string, number>();
  let state = await read();
  if (!settling) return snapshot(c, state);
  let report = settle(buildStatus({ cluster: c.cluster, state }), firstSeen, Date.now());
  const deadline = Date.now() + MAX_GRACE_MS + 1000;
  if (report.settling.length > 0 && note?.isTTY)
    note.err(
      `confirming ${report.settling.length} transient anomalies (up to ${MAX_GRACE_MS / 1000} s; --no-settle skips)\n`,
    );
  for (let i = 0; report.settling.length > 0 && Date.now() < deadline && i < 1000; i++) {
    await sleep(Math.max(20, Math.min(SETTLE_POLL_MS, nextSettleInMs(report) ?? SETTLE_POLL_MS)));
    state = await read();
    report = settle(buildStatus({ cluster: c.cluster, state }), firstSeen, Date.now());
  }
  return settle(await snapshot(c, state), firstSeen, Date.now());
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves on the first SIGINT or SIGTERM (and stops listening). */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const stop = (sig: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve(sig);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

/** Redraw the status on every etcd change until `until` settles. */
export async function watchStatus(
  c: Connection,
  io: CliIo,
  json: boolean,
  until: Promise<unknown> = untilSignal(),
  /** Lines kept under every redraw on a terminal (the demo's endpoint and hints, which a redraw would clear). */
  footer = '',
): Promise<void> {
  const initial = await c.call('reading the cluster', () => loadClusterState(c.etcd, c.keys));
  const firstSeen = new Map<string, number>();
  let last: StatusReport | null = null;
  let lastState = initial;
  /** etcd stopped answering: keep the last picture, marked stale with its age (no raw gRPC text scrolling). */
  let stale: { sinceMs: number; reason: string } | null = null;
  let drawing = false;
  let again = false;
  let timer: NodeJS.Timeout | undefined;
  let settleTimer: NodeJS.Timeout | undefined;
  let staleTimer: NodeJS.Timeout | undefined;
  let stopped = false;
  const render = (report: StatusReport): string => {
    const head = stale
      ? `${paint(io, 'red', `STALE: etcd unreachable for ${Math.round((Date.now() - stale.sinceMs) / 1000)} s (${stale.reason}); the picture below is from revision ${report.revision}`)}\n`
      : '';
    const changes = renderEventLines(lastState, RECENT_EVENTS, io);
    return `${head}${renderStatus(report, io)}${changes ? `\n${paint(io, 'bold', 'RECENT CHANGES')}\n${changes}` : ''}`;
  };
  let logView: WatchLogView | null = null;
  const show = (report: StatusReport): void => {
    if (json) io.out(`${JSON.stringify(report)}\n`);
    else if (io.isTTY) io.out(`\u001b[H\u001b[2J${render(report)}\n${footer}(watching etcd; Ctrl-C to stop)\n`);
    else {
      const frame = `${render(report)}\n${footer}(watching etcd: changes follow, one line each)\n`;
      const input = { report, state: lastState, stale: stale?.reason ?? null, frame, now: new Date() };
      const step = watchLogStep(logView, input, io);
      logView = step.next;
      if (step.text) io.out(step.text);
    }
  };
  const draw = async (state: ClusterState): Promise<void> => {
    if (drawing) {
      again = true;
      return;
    }
    drawing = true;
    try {
      do {
        again = false;
        lastState = state;
        const report = settle(await snapshot(c, state), firstSeen, Date.now());
        last = report;
        show(report);
        // Redraw when a settling anomaly outlasts its grace, even if etcd says nothing more.
        clearTimeout(settleTimer);
        const due = nextSettleInMs(report);
        if (due !== null && !stopped) settleTimer = setTimeout(() => redraw(), due + 20);
      } while (again);
    } finally {
      drawing = false;
    }
  };
  const redraw = () => void draw(box.watch?.state ?? initial).catch((e: unknown) => goneStale(e));
  const goneStale = (err: unknown): void => {
    if (stopped) return;
    if (!stale) {
      stale = { sinceMs: Date.now(), reason: tidyGrpcMessage((err as Error).message ?? String(err)) };
      if (json) io.err(`etcd unreachable (${stale.reason}); keeping the last picture\n`);
    }
    if (!json && last) show(last);
    clearTimeout(staleTimer);
    staleTimer = setTimeout(() => void probe(), STALE_PROBE_MS);
  };
  // While stale, ask etcd once a second; the first answer redraws from the (resumed) watch.
  const probe = async (): Promise<void> => {
    if (stopped) return;
    try {
      await c.call('probing etcd', () => c.etcd.get(c.keys.spec).exec());
      stale = null;
      redraw();
    } catch (err) {
      goneStale(err);
    }
  };
  // Filled once the watch exists; its callbacks may fire before (a reload), then they use `initial`.
  const box: { watch?: Awaited<ReturnType<typeof watchCluster>> } = {};
  const watch = await c.call('starting the watch', () =>
    watchCluster(c.etcd, c.keys, {
      initial,
      // Coalesce bursts (a failover touches many keys) into one redraw.
      onChange: () => {
        stale = null;
        clearTimeout(timer);
        timer = setTimeout(redraw, 50);
      },
      onError: (err) => goneStale(err),
    }),
  );
  box.watch = watch;
  // The first picture once the watch runs: what is on screen from then on follows etcd.
  await draw(watch.state);
  await until;
  stopped = true;
  clearTimeout(timer);
  clearTimeout(settleTimer);
  clearTimeout(staleTimer);
  await Promise.race([watch.close(), new Promise((r) => setTimeout(r, 1000))]);
}

const RECENT_EVENTS = 10;
const STALE_PROBE_MS = 1000;
