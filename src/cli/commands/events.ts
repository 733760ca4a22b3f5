import type { Command } from 'commander';
import { loadClusterState, watchCluster, type ClusterState } from '../../etcd/store.js';
import { addConnectionOptions, connect, resolveConnection } from '../connection.js';
import { UsageError } from '../errors.js';
import { formatEvent, orderedEvents } from '../eventsRender.js';
import type { CliIo } from '../io.js';
import { untilSignal } from './status.js';

// `clusterip-ha events`: the leader's change log from etcd (events/<seq>, the newest 256 kept).

export function registerEvents(program: Command, io: CliIo): void {
  const cmd = program
    .command('events')
    .description('print the last changes the leader recorded: nodes joined / lost / fenced / drained, buckets moved')
    .option('--follow', 'keep printing new changes as the leader records them, until Ctrl-C')
    .option(
      '--json',
      'one JSON object per line: {seq, at, kind, node?, vip?, buckets?, from?, to?, failoverMs?, detail}',
    )
    .option('-n, --last <count>', 'how many of the newest to print first', parseCount, 20)
    .addHelpText(
      'after',
      `
Examples:
  clusterip-ha events
  clusterip-ha events --follow --json | jq 'select(.kind == "bucketsMoved") | .failoverMs'`,
    );
  addConnectionOptions(cmd);
  cmd.action(async (opts: Record<string, unknown>) => {
    const c = connect(await resolveConnection(opts, io.env));
    let printed = 0;
    const print = (state: ClusterState, last?: number) => {
      let evs = orderedEvents(state).filter(([seq]) => seq > printed);
      if (last !== undefined) {
        // The ones not printed still count as seen: --follow prints only what comes after.
        printed = Math.max(printed, ...evs.map(([seq]) => seq));
        evs = last === 0 ? [] : evs.slice(-last);
      }
      for (const [seq, e] of evs) {
        const { v: _v, ...rest } = e;
        io.out(opts.json ? `${JSON.stringify({ seq, ...rest })}\n` : `${formatEvent(e, io)}\n`);
        printed = seq;
      }
    };
    try {
      const initial = await c.call('reading the cluster', () => loadClusterState(c.etcd, c.keys));
      print(initial, opts.last as number);
      if (initial.events.size === 0 && !opts.follow && !opts.json)
        io.err(`no changes recorded in cluster ${c.cluster} (the leader records them while agents run)\n`);
      if (!opts.follow) return;
      const box: { watch?: Awaited<ReturnType<typeof watchCluster>> } = {};
      const watch = await c.call('starting the watch', () =>
        watchCluster(c.etcd, c.keys, {
          initial,
          onChange: () => print(box.watch?.state ?? initial),
          onError: () => undefined, // the watch resumes by itself; a follower prints what arrives
        }),
      );
      box.watch = watch;
      await untilSignal();
      await Promise.race([watch.close(), new Promise((r) => setTimeout(r, 1000))]);
    } finally {
      await c.close();
    }
  });
}

function parseCount(v: string): number {
  if (!/^\d+$/.test(v)) throw new UsageError(`"${v}" is not a count`);
  return Number(v);
}
