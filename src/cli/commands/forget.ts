import type { Command } from 'commander';
import { addConnectionOptions, withConnection } from '../connection.js';
import { CliError } from '../errors.js';
import type { CliIo } from '../io.js';
import { checkNodeId } from './drain.js';

// `clusterip-ha forget NODE`: a decommissioned node stops showing DOWN (and `status --check` stops saying
// degraded). Only a node without a live lease: a running agent would be recorded again by the leader at once.

export function registerForget(program: Command, io: CliIo): void {
  const cmd = program
    .command('forget')
    .argument('<node>', 'node id')
    .description("remove a node that is down for good from the cluster's known members")
    .addHelpText('after', '\nExamples:\n  clusterip-ha forget n3   # after decommissioning n3');
  addConnectionOptions(cmd);
  cmd.action(async (node: string, opts: Record<string, unknown>) => {
    checkNodeId(node);
    await withConnection(opts, io.env, async (c) => {
      const member = c.keys.member(node);
      // Only while the node key does not exist: the check and the delete are one txn.
      const r = await c.call(`deleting ${member}`, () =>
        c.etcd.if(c.keys.node(node), 'Create', '==', 0).then(c.etcd.delete().key(member)).commit(),
      );
      if (!r.succeeded)
        throw new CliError(`${node} is alive (it has a lease in cluster ${c.cluster})`, `stop its agent first`);
      const deleted = r.responses[0]?.response_delete_range?.deleted ?? '0';
      io.out(deleted === '0' ? `${node}: not a known member\n` : `${node}: forgotten\n`);
    });
  });
}
