import type { Command } from 'commander';
import { loadClusterState, watchCluster, type ClusterState } from '../../etcd/store.js';
import { addConnectionOptions, connect, resolveConnection, type Connection } from '../connection.js';
import { UsageError, EXIT } from '../errors.js';
import type { CliIo } from '../io.js';
import { buildStatus, type StatusReport } from '../statusModel.js';
import { renderStatus } from '../statusRender.js';

export function registerStatus(program: Command, io: CliIo): void {
  const cmd = program
    .command('status')
    .description('show the leader, every node and every bucket (claim, assignment, backend), anomalies first')
    .option('--json', 'print the documented JSON document (docs/status-json.md); with --watch one per line')
    .option('--watch', 'redraw on every etcd change (no polling) until Ctrl-C')
    .option('--check', 'exit 3 when anything is unhealthy (for monitoring); prints nothing when healthy')
    .addHelpText(
      'after',
      `
Examples:
  clusterip-ha status
  clusterip-ha status --json | jq '.vips[].buckets[] | select(.owner == null)'
  clusterip-ha status --watch --etcd-endpoints http://10.0.0.1:2379,http://10.0.0.2:2379
  clusterip-ha status --check || page-oncall   # exit 3: unhealthy, 1: etcd unreachable`,
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
      const report = await snapshot(c, await c.call('reading the cluster', () => loadClusterState(c.etcd, c.keys)));
      if (opts.check) {
        if (!report.healthy) {
          const first = report.anomalies.filter((a) => a.severity === 'error');
          io.err(`unhealthy: ${first.length} problem(s); first: ${first[0]?.kind}: ${first[0]?.detail}\n`);
          if (opts.json) io.out(`${JSON.stringify(report)}\n`);
          io.exitCode = EXIT.unhealthy;
        } else if (opts.json) io.out(`${JSON.stringify(report)}\n`);
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
): Promise<void> {
  const initial = await c.call('reading the cluster', () => loadClusterState(c.etcd, c.keys));
  let drawing = false;
  let again = false;
  let timer: NodeJS.Timeout | undefined;
  const draw = async (state: ClusterState): Promise<void> => {
    if (drawing) {
      again = true;
      return;
    }
    drawing = true;
    try {
      do {
        again = false;
        const report = await snapshot(c, state);
        if (json) io.out(`${JSON.stringify(report)}\n`);
        else if (io.isTTY) io.out(`\u001b[H\u001b[2J${renderStatus(report, io)}\n(watching etcd; Ctrl-C to stop)\n`);
        else io.out(`--- ${new Date().toISOString()}\n${renderStatus(report, io)}`);
      } while (again);
    } finally {
      drawing = false;
    }
  };
  // Filled once the watch exists; its callbacks may fire before (a reload), then they use `initial`.
  const box: { watch?: Awaited<ReturnType<typeof watchCluster>> } = {};
  await draw(initial);
  const watch = await c.call('starting the watch', () =>
    watchCluster(c.etcd, c.keys, {
      initial,
      // Coalesce bursts (a failover touches many keys) into one redraw.
      onChange: () => {
        clearTimeout(timer);
        timer = setTimeout(
          () => void draw(box.watch?.state ?? initial).catch((e: unknown) => io.err(`redraw failed: ${String(e)}\n`)),
          50,
        );
      },
      onError: (err) => io.err(`etcd watch: ${err.message} (retrying)\n`),
    }),
  );
  box.watch = watch;
  await until;
  clearTimeout(timer);
  await Promise.race([watch.close(), new Promise((r) => setTimeout(r, 1000))]);
}
