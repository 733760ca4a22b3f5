import type { Command } from 'commander';
import { addNodeConfigOptions, loadNodeConfig } from '../../config/index.js';
import type { CliIo } from '../io.js';
import { CliError } from '../errors.js';
import { ranges } from '../table.js';
import { takeFenceSkip } from '../../agent/restartRecord.js';

export function registerFence(program: Command, io: CliIo): void {
  const cmd = program
    .command('fence')
    .description("drop every bucket from this node's kernel now, without etcd (systemd ExecStopPost=)")
    .addHelpText(
      'after',
      `
Run after the agent stopped (crash or not) so a node whose agent is gone holds nothing. It never contacts etcd:
the claims vanish with the agent's lease. After a planned restart (SIGHUP, systemctl reload) it leaves the kernel
alone once, so the next agent adopts it without moving a bucket.

Examples:
  clusterip-ha fence --config /etc/clusterip-ha/node.yaml
  clusterip-ha fence --backend file --backend-dir /tmp/n1`,
    );
  addNodeConfigOptions(cmd);
  cmd.option('--json', 'machine-readable output');
  cmd.action(async () => {
    const opts = cmd.opts<Record<string, unknown>>();
    const configFile = (opts.config as string | undefined) ?? io.env.CLUSTERIP_HA_CONFIG;
    const cfg = await loadNodeConfig({ flags: opts, env: io.env, ...(configFile !== undefined ? { configFile } : {}) });
    // The agent just exited for a hitless restart (SIGHUP): its successor adopts the kernel. Once only, and only
    // before the deadline it recorded; every other stop fences.
    if (await takeFenceSkip(cfg.stateDir, cfg.cluster, cfg.nodeId)) {
      io.out(
        opts.json === true
          ? `${JSON.stringify({ backend: cfg.backend.kind, skipped: 'plannedRestart' })}\n`
          : 'not fenced: the agent exited for a planned restart; the next start adopts its kernel state\n',
      );
      return;
    }
    const { fenceNode } = await import('../../backends/fence.js');
    const r = await fenceNode(cfg);
    const removed = [...r.removed].map(([vip, b]) => `${vip} ${ranges([...b])}`);
    const remaining = [...r.remaining].map(([vip, b]) => `${vip} ${ranges([...b])}`);
    if (opts.json === true) {
      const obj = (m: Map<string, Set<number>>) =>
        Object.fromEntries([...m].map(([v, b]) => [v, [...b].sort((x, y) => x - y)]));
      io.out(`${JSON.stringify({ backend: r.backend.kind, removed: obj(r.removed), remaining: obj(r.remaining) })}\n`);
    } else {
      io.out(
        `fenced (${r.backend.kind}): removed ${removed.length > 0 ? removed.join('; ') : 'nothing (held nothing)'}\n`,
      );
    }
    if (remaining.length > 0) {
      throw new CliError(
        `the ${r.backend.kind} backend still holds ${remaining.join('; ')} after clearing`,
        'check the kernel state by hand (nft list ruleset / the proc files) and retry',
      );
    }
  });
}
