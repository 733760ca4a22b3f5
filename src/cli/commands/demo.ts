import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { parseClusterSpecYaml } from '../../config/index.js';
import type { LocalCluster } from '../../localcluster/cluster.js';
import { connect, parseMs } from '../connection.js';
import { DEMO_SPEC_YAML } from '../demoSpec.js';
import { CliError, UsageError } from '../errors.js';
import { paint, type CliIo } from '../io.js';
import { untilSignal, watchStatus } from './status.js';

const STOP_BUDGET_MS = 20_000;

export function registerDemo(program: Command, io: CliIo): void {
  program
    .command('demo')
    .description('a local cluster on this machine: etcd on loopback, agents on the file backend, live status')
    .option(
      '--agents <n>',
      'agents to start (1..9)',
      (v) => {
        if (!/^[1-9]$/.test(v)) throw new UsageError(`--agents: "${v}" is not 1..9`);
        return Number(v);
      },
      3,
    )
    .option(
      '--lease-ttl <seconds>',
      'lease TTL of the agents',
      (v) => {
        if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 60)
          throw new UsageError(`--lease-ttl: "${v}" is not 1..60`);
        return Number(v);
      },
      2,
    )
    .option('--duration <ms>', 'stop by itself after this long (default: at Ctrl-C)', parseMs)
    .option('--json', 'status as JSON lines instead of the table')
    .addHelpText(
      'after',
      `
Starts etcd (the etcd binary from Debian's etcd-server package), N agents n1..nN whose "kernel" is a file per
VIP, applies a sample spec with two VIPs and redraws the status on every change. Ctrl-C stops everything it
started and removes its temporary files. While it runs, try from another terminal the commands it prints.

Examples:
  clusterip-ha demo
  clusterip-ha demo --agents 5 --lease-ttl 3`,
    )
    .action(async (opts: { agents: number; leaseTtl: number; duration?: number; json?: boolean }) => {
      io.exitCode = await runDemo(io, opts);
    });
}

async function runDemo(
  io: CliIo,
  opts: { agents: number; leaseTtl: number; duration?: number; json?: boolean },
): Promise<number> {
  const say = (s: string) => io.err(`${paint(io, 'blue', 'demo')} ${s}\n`);
  // Listen for Ctrl-C from the start: an interrupted start-up must still clean up.
  const stopSignal = untilSignal();
  let interrupted = false;
  void stopSignal.then(() => {
    interrupted = true;
    // A second Ctrl-C must not kill the demo half-way through its own cleanup (which is bounded).
    const patience = () => say(`still stopping (at most ${STOP_BUDGET_MS / 1000} s)…`);
    process.on('SIGINT', patience);
    process.on('SIGTERM', patience);
  });
  const spec = parseClusterSpecYaml(DEMO_SPEC_YAML, 'demo spec', { backend: 'file' });
  let mod: typeof import('../../localcluster/cluster.js');
  try {
    mod = await import('../../localcluster/cluster.js');
  } catch (err) {
    throw new CliError(`the demo needs the build output: ${(err as Error).message}`, 'run `npm run build` first');
  }
  say(`starting etcd on loopback and ${opts.agents} agents (file backend, lease TTL ${opts.leaseTtl} s)…`);
  let cluster: LocalCluster | undefined;
  try {
    cluster = await mod.startLocalCluster({
      agents: opts.agents,
      etcdMembers: 1,
      leaseTtlSeconds: opts.leaseTtl,
      spec,
      cluster: 'demo',
    });
  } catch (err) {
    const msg = (err as Error).message;
    if (/no etcd binary/.test(msg))
      throw new CliError(msg, 'sudo apt-get install -y etcd-server (or run ./scripts/demo.sh)');
    throw err;
  }
  try {
    if (!interrupted) {
      const ep = cluster.etcd.endpoints.join(',');
      say(`working directory ${cluster.baseDir} (removed on exit)`);
      say(`etcd ${ep} pid ${cluster.etcd.members[0]?.pid() ?? '?'}`);
      for (const n of cluster.nodes()) say(`agent ${n.id} pid ${n.proc.pid}, backend file ${n.backendDir}`);
      const cli = existsSync(process.argv[1] ?? '') ? `node ${process.argv[1]}` : 'clusterip-ha';
      const hints = [
        `etcd ${ep}; try in another terminal:`,
        `  ${cli} status --etcd-endpoints ${ep} --cluster demo`,
        `  ${cli} drain n2 --wait --etcd-endpoints ${ep} --cluster demo`,
        `  ${cli} events --follow --etcd-endpoints ${ep} --cluster demo`,
        `  ${cli} whois 192.0.2.10 --etcd-endpoints ${ep} --cluster demo`,
        `  kill -9 ${cluster.nodes()[0]?.proc.pid ?? '<pid>'}   # watch its buckets move`,
      ];
      for (const h of hints) say(h.replace(/^etcd \S+; /, ''));
      const until = opts.duration !== undefined ? Promise.race([stopSignal, sleep(opts.duration)]) : stopSignal;
      const c = connect({
        etcd: { endpoints: cluster.etcd.endpoints, requestTimeoutMs: 2000 },
        cluster: 'demo',
        timeoutMs: 5000,
      });
      try {
        // On a terminal each redraw clears the screen: keep the hints under the picture.
        await watchStatus(c, io, opts.json === true, until, `${hints.join('\n')}\n`);
      } finally {
        await c.close();
      }
    }
    return 0;
  } finally {
    say('stopping agents and etcd, removing temporary files…');
    const baseDir = cluster.baseDir;
    await Promise.race([cluster.stop(), sleep(STOP_BUDGET_MS)]);
    say(existsSync(baseDir) ? `could not remove ${baseDir}` : 'stopped; temporary files removed');
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
