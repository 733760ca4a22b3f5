import type { Command } from 'commander';
import { stringify } from 'yaml';
import { readSpecOrUnreadable } from '../../etcd/spec.js';
import { addConnectionOptions, withConnection, type Connection } from '../connection.js';
import { CliError } from '../errors.js';
import type { CliIo } from '../io.js';

// `clusterip-ha spec`: the spec etcd holds, as YAML that `apply -f` takes back unchanged.

export function registerSpec(program: Command, io: CliIo): void {
  const cmd = program
    .command('spec')
    .description('print the cluster spec stored in etcd (YAML that `apply -f` accepts), with its generation')
    .option('--json', 'print {generation, modRevision, spec} as JSON')
    .addHelpText(
      'after',
      `
Examples:
  clusterip-ha spec > cluster.yaml      # edit, then: clusterip-ha apply -f cluster.yaml
  clusterip-ha spec --json | jq .generation`,
    );
  addConnectionOptions(cmd);
  cmd.action(async (opts: Record<string, unknown>) => {
    await withConnection(opts, io.env, async (c) => {
      const stored = await c.call('reading the spec', () => readSpecOrUnreadable(c.etcd, c.keys));
      if (!stored) throw new CliError(`cluster ${c.cluster} has no spec`, await clusterHint(c));
      if ('unreadable' in stored)
        throw new CliError(`${c.keys.spec} holds an unreadable value: ${stored.error}`, 'apply a spec to replace it');
      if (opts.json) {
        io.out(
          `${JSON.stringify({ generation: stored.generation, modRevision: stored.modRevision, spec: stored.spec })}\n`,
        );
        return;
      }
      io.out(`# cluster ${c.cluster}: spec generation ${stored.generation} (etcd revision ${stored.modRevision})\n`);
      io.out(stringify(stored.spec));
    });
  });
}

const MAX_LISTED_KEYS = 100_000;

/** The clusters that exist in this etcd (they have a spec), for "no such cluster" messages. */
export async function existingClusters(c: Connection): Promise<string[]> {
  const keys = await c.call('listing clusters', () =>
    c.etcd
      .getAll()
      .prefix(c.keys.prefix.replace(/[^/]+\/$/, ''))
      .limit(MAX_LISTED_KEYS)
      .keys(),
  );
  const names = new Set<string>();
  for (const k of keys) {
    const m = /^\/clusterip-ha\/([^/]+)\/spec$/.exec(k);
    if (m) names.add(m[1]!);
  }
  return [...names].sort();
}

export async function clusterHint(c: Connection): Promise<string> {
  const names = await existingClusters(c).catch(() => null);
  if (names === null) return 'apply one with `clusterip-ha apply -f cluster.yaml`';
  return names.length === 0
    ? 'no cluster in this etcd has a spec: apply one with `clusterip-ha apply -f cluster.yaml`'
    : `clusters with a spec in this etcd: ${names.join(', ')} (pick one with --cluster)`;
}
