import type { Command } from 'commander';
import { addNodeConfigOptions, loadNodeConfig } from '../../config/index.js';
import type { CliIo } from '../io.js';

export function registerAgent(program: Command, io: CliIo): void {
  const cmd = program
    .command('agent')
    .description('run the node agent: hold a lease, claim assigned buckets, apply them to the kernel')
    .addHelpText(
      'after',
      `
The agent runs until SIGTERM/SIGINT, then hands its buckets over and releases its lease.

Examples:
  clusterip-ha agent --config /etc/clusterip-ha/node.yaml
  clusterip-ha agent --node-id n1 --etcd-endpoints http://127.0.0.1:2379 --backend file --backend-dir /tmp/n1
  CLUSTERIP_HA_ETCD_ENDPOINTS=http://10.0.0.1:2379 clusterip-ha agent --backend nftables`,
    );
  addNodeConfigOptions(cmd);
  cmd.action(async () => {
    const opts = cmd.opts<Record<string, unknown>>();
    const configFile = (opts.config as string | undefined) ?? io.env.CLUSTERIP_HA_CONFIG;
    const cfg = await loadNodeConfig({ flags: opts, env: io.env, ...(configFile !== undefined ? { configFile } : {}) });
    // Loaded lazily: `status` and `whois` should not pay for the agent's imports.
    const { runAgentDaemon } = await import('../../agent/daemon.js');
    io.exitCode = await runAgentDaemon(cfg);
  });
}
