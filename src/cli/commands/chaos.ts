import { Option, type Command } from 'commander';
import type { CliIo } from '../io.js';
import { UsageError } from '../errors.js';
import type { ChaosOptions } from '../../chaos/run.js';
import { FAULT_KINDS, type FaultKind } from '../../chaos/schedule.js';

type ChaosCliOptions = ChaosOptions;

const int = (name: string, min: number) => (v: string) => {
  if (!/^\d+$/.test(v) || Number(v) < min) throw new UsageError(`${name}: "${v}" is not an integer >= ${min}`);
  return Number(v);
};

const kindList = (name: string) => (v: string) => {
  const kinds = v.split(',').map((k) => k.trim());
  const bad = kinds.filter((k) => !(FAULT_KINDS as readonly string[]).includes(k));
  if (bad.length > 0) throw new UsageError(`${name}: unknown fault kind ${bad.join(', ')}`);
  return kinds as FaultKind[];
};

export function registerChaos(program: Command, io: CliIo): void {
  program
    .command('chaos')
    .description('run local agents and a seeded random schedule of faults; check the invariants throughout')
    .option('--agents <n>', 'agents to run', int('--agents', 1), 5)
    .option('--duration <seconds>', 'run this long', int('--duration', 1))
    .option('--faults <count>', 'stop after this many faults', int('--faults', 1))
    .option('--seed <s>', 'seed of the fault schedule (printed when random)', int('--seed', 0))
    .addOption(new Option('--etcd-members <n>', 'local etcd members').choices(['1', '3']).default('1'))
    .addOption(
      new Option('--dataplane <kind>', 'file backend, or nftables in network namespaces (root)')
        .choices(['file', 'netns'])
        .default('file'),
    )
    .option('--report <dir>', 'write the report (JSON, SVG time line) here')
    .option('--etcd-endpoints <urls>', 'use this etcd instead of starting local members')
    .option('--cluster <name>', 'cluster name (key prefix)')
    .option('--lease-ttl <seconds>', 'lease TTL of every agent', int('--lease-ttl', 1))
    .option('--buckets <n>', 'buckets of the test VIP', int('--buckets', 1))
    .option('--work-dir <dir>', "keep etcd's data, the backends and every agent's log here (default: removed)")
    .option('--only <kinds>', `only these fault kinds, comma-separated (${FAULT_KINDS.join(', ')})`, kindList('--only'))
    .option('--exclude <kinds>', 'leave these fault kinds out, comma-separated', kindList('--exclude'))
    .addHelpText(
      'after',
      `
Exits 0 when no invariant was violated, 1 otherwise; the report names the seed that reproduces a run.

Examples:
  clusterip-ha chaos --duration 60 --seed 42
  clusterip-ha chaos --agents 7 --faults 1000 --etcd-members 3 --report ./chaos-report
  sudo clusterip-ha chaos --dataplane netns --duration 120`,
    )
    .action(async (o: Record<string, unknown>) => {
      if (o.duration !== undefined && o.faults !== undefined)
        throw new UsageError('give --duration or --faults, not both');
      const opts: ChaosCliOptions = {
        agents: o.agents as number,
        etcdMembers: Number(o.etcdMembers) as 1 | 3,
        dataplane: o.dataplane as 'file' | 'netns',
        ...(o.duration !== undefined ? { durationSeconds: o.duration as number } : {}),
        ...(o.faults !== undefined ? { faults: o.faults as number } : {}),
        ...(o.seed !== undefined ? { seed: o.seed as number } : {}),
        ...(o.report !== undefined ? { reportDir: o.report as string } : {}),
        ...(o.etcdEndpoints !== undefined ? { etcdEndpoints: String(o.etcdEndpoints).split(',') } : {}),
        ...(o.cluster !== undefined ? { cluster: o.cluster as string } : {}),
        ...(o.leaseTtl !== undefined ? { leaseTtlSeconds: o.leaseTtl as number } : {}),
        ...(o.buckets !== undefined ? { buckets: o.buckets as number } : {}),
        ...(o.workDir !== undefined ? { baseDir: o.workDir as string } : {}),
        ...(o.only !== undefined ? { only: o.only as FaultKind[] } : {}),
        ...(o.exclude !== undefined ? { exclude: o.exclude as FaultKind[] } : {}),
      };
      const { runChaos } = await import('../../chaos/run.js');
      // runChaos prints its own progress line and report (stderr); the exit code says whether anything broke.
      const result = await runChaos(opts);
      io.exitCode = result.exitCode;
    });
}
