import { Option, type Command } from 'commander';
import { BACKEND_KINDS, loadClusterSpecFile, parseClusterSpecYaml, type BackendKind } from '../../config/index.js';
import { readSpecOrUnreadable, writeSpec } from '../../etcd/spec.js';
import { loadClusterState } from '../../etcd/store.js';
import { ConflictError } from '../../errors.js';
import { addConnectionOptions, withConnection } from '../connection.js';
import { CliError, UsageError } from '../errors.js';
import { paint, type CliIo } from '../io.js';
import { diffSpecs, renderDiff } from '../specDiff.js';

export function registerApply(program: Command, io: CliIo): void {
  const cmd = program
    .command('apply')
    .description('validate a cluster spec, show the diff against etcd, and write it (compare-and-swap)')
    .requiredOption('-f, --file <file>', 'cluster spec YAML ("-" reads stdin)')
    .option('--dry-run', 'validate and show the diff; write nothing')
    .option('--force', 'apply even a spec that removes every VIP (the cluster stops serving)')
    .option('--expect-generation <n>', 'write only if etcd still holds this generation (0: no spec yet)', (v) => {
      if (!/^\d+$/.test(v)) throw new UsageError(`--expect-generation: "${v}" is not a non-negative integer`);
      return Number(v);
    })
    .addOption(
      new Option(
        '--backend <kind>',
        'check bucket counts against this backend (default: what the live nodes report)',
      ).choices([...BACKEND_KINDS]),
    )
    .addHelpText(
      'after',
      `
The write is a compare-and-swap against the version read for the diff: if someone applied in between, nothing
is written and apply exits 1 (re-run it to see the new diff). Agents pick the new spec up from their watch.

Examples:
  clusterip-ha apply -f cluster.yaml --dry-run
  clusterip-ha apply -f cluster.yaml
  clusterip-ha apply -f cluster.yaml --expect-generation 3   # only on top of generation 3`,
    );
  addConnectionOptions(cmd);
  cmd.action(async (opts: Record<string, unknown>) => {
    const file = opts.file as string;
    await withConnection(opts, io.env, async (c) => {
      // Validate before touching etcd; ConfigError names file:line and every problem (exit 2).
      const text = file === '-' ? await readStdin() : undefined;
      const load = (backend?: BackendKind) => {
        const o = backend ? { backend } : {};
        return text !== undefined
          ? Promise.resolve(parseClusterSpecYaml(text, '<stdin>', o))
          : loadClusterSpecFile(file, o);
      };
      let spec = await load(opts.backend as BackendKind | undefined);
      if (opts.backend === undefined) {
        // Then against the backend the live nodes run (the clusterip backend stops at 16 buckets).
        const state = await c.call('reading the cluster', () => loadClusterState(c.etcd, c.keys));
        const backend = liveBackend([...state.statuses.values()].map((s) => s.backend));
        if (backend) spec = await load(backend);
      }
      const stored = await c.call('reading the spec', () => readSpecOrUnreadable(c.etcd, c.keys));
      // A stored value that does not decode (garbage written from outside) is replaced, compare-and-swap on its
      // mod revision like any other; the diff is against nothing, since nothing readable is there.
      const unreadable = stored && 'unreadable' in stored ? stored : null;
      const cur = stored && !('unreadable' in stored) ? stored : null;
      const generation = stored?.generation ?? 0;
      if (opts.expectGeneration !== undefined && generation !== opts.expectGeneration) {
        throw new ConflictError(
          `etcd holds spec generation ${generation}, not ${String(opts.expectGeneration)} as --expect-generation says`,
        );
      }
      const changes = diffSpecs(cur?.spec ?? null, spec);
      const where = unreadable
        ? `${c.keys.spec} (unreadable)`
        : `${c.keys.spec} (generation ${cur?.generation ?? 'none'})`;
      if (unreadable) {
        io.out(`${c.keys.spec} holds an unreadable value, which apply replaces:\n`);
        for (const line of unreadable.error.split('\n')) io.out(`  ${paint(io, 'red', line)}\n`);
      }
      if (changes.length === 0) {
        io.out(`no change: ${file} matches ${where}\n`);
        return;
      }
      io.out(`changes against ${where}:\n`);
      for (const line of renderDiff(changes)) {
        const col = line.startsWith('+') ? 'green' : line.startsWith('-') ? 'red' : 'yellow';
        io.out(`  ${paint(io, col, line)}\n`);
      }
      if (opts.dryRun) {
        io.out('dry run: nothing written\n');
        return;
      }
      if (removesEveryVip(cur?.spec.vips.length ?? 0, spec.vips.length) && !opts.force)
        throw new CliError(
          `${file} removes every VIP (${cur?.spec.vips.length} served now): the cluster would stop serving`,
          'pass --force if that is what you want',
        );
      const r = await c.call('writing the spec', () =>
        writeSpec(c.etcd, c.keys, spec, { expectModRevision: stored ? stored.modRevision : 'absent' }),
      );
      io.out(
        `applied: generation ${r.generation} at revision ${r.modRevision}${unreadable ? ' (replaced an unreadable value)' : ''}\n`,
      );
    });
  });
}

/** A spec that takes a serving cluster to no VIP at all. */
export function removesEveryVip(before: number, after: number): boolean {
  return before > 0 && after === 0;
}

/** The backend the live nodes run, when they agree on one. */
function liveBackend(kinds: string[]): BackendKind | undefined {
  const set = new Set(kinds);
  if (set.size !== 1) return undefined;
  const k = [...set][0] as BackendKind;
  return (BACKEND_KINDS as readonly string[]).includes(k) ? k : undefined;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
