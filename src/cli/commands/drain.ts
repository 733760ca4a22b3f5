import type { Command } from 'commander';
import { loadClusterState, watchCluster, type ClusterState } from '../../etcd/store.js';
import { decodeJson, nodeValueSchema, NODE_ID_RE } from '../../etcd/values.js';
import { addConnectionOptions, connect, parseMs, resolveConnection, type Connection } from '../connection.js';
import { CliError, UsageError } from '../errors.js';
import type { CliIo } from '../io.js';
import { describeProgress, drainProgress, drainVerdict } from '../drainPlan.js';

const CAS_ATTEMPTS = 5;

export function registerDrain(program: Command, io: CliIo): void {
  const drain = program
    .command('drain')
    .argument('<node>', 'node id')
    .description('mark a node draining: the leader moves its buckets away (one short handoff each); it keeps its lease')
    .option('--wait', 'show progress until the node owns nothing')
    .option('--force', 'drain even the last node that can take buckets (every VIP goes dark)')
    .option('--wait-timeout <ms>', 'give up waiting after this long (exit 1)', parseMs, 120_000)
    .addHelpText(
      'after',
      `
The flag lives in the node's own lease-bound key (nodes/<id>); it is written with a compare-and-swap on the
key's revision and re-attached to the node's lease, so a node that dies still vanishes from etcd.

Examples:
  clusterip-ha drain n2 --wait && systemctl -H n2 restart clusterip-ha
  clusterip-ha undrain n2`,
    );
  addConnectionOptions(drain);
  drain.action(async (node: string, opts: Record<string, unknown>) => {
    checkNodeId(node);
    const c = connect(await resolveConnection(opts, io.env));
    try {
      const state = await c.call('reading the cluster', () => loadClusterState(c.etcd, c.keys));
      const verdict = drainVerdict(state, node);
      if (!verdict.ok && !opts.force)
        throw new CliError(
          `${node} is the last node that can take buckets: draining it leaves ${verdict.vips} VIP(s) with no owner`,
          'start or undrain another node first, or pass --force to take the VIPs dark',
        );
      const changed = await setDraining(c, node, true);
      io.out(changed ? `${node}: draining\n` : `${node}: already draining\n`);
      if (opts.wait) await waitDrained(c, io, node, opts.waitTimeout as number);
    } finally {
      await c.close();
    }
  });

  const undrain = program
    .command('undrain')
    .argument('<node>', 'node id')
    .description('clear the draining flag: the node takes buckets again (per the rebalance policy)')
    .addHelpText('after', '\nExamples:\n  clusterip-ha undrain n2');
  addConnectionOptions(undrain);
  undrain.action(async (node: string, opts: Record<string, unknown>) => {
    checkNodeId(node);
    const c = connect(await resolveConnection(opts, io.env));
    try {
      const changed = await setDraining(c, node, false);
      io.out(changed ? `${node}: undrained\n` : `${node}: was not draining\n`);
    } finally {
      await c.close();
    }
  });
}

export function checkNodeId(node: string): void {
  if (!NODE_ID_RE.test(node)) throw new UsageError(`"${node}" is not a node id (letters, digits, ".", "_", "-")`);
}

/** CAS the draining flag into nodes/<id>, keeping the key's lease. Returns false when already so. */
export async function setDraining(c: Connection, node: string, draining: boolean): Promise<boolean> {
  const key = c.keys.node(node);
  for (let attempt = 1; attempt <= CAS_ATTEMPTS; attempt++) {
    const res = await c.call(`reading ${key}`, () => c.etcd.get(key).exec());
    const kv = res.kvs[0];
    if (!kv) {
      throw new CliError(
        `node ${node} is not registered in cluster ${c.cluster} (no ${key})`,
        'check the id with `clusterip-ha status`; only a live agent can be drained',
      );
    }
    const d = decodeJson(nodeValueSchema, kv.value.toString());
    if (!d.ok)
      throw new CliError(
        `${key} holds an invalid value: ${d.error}`,
        "restart that node's agent so it rewrites its key",
      );
    if (d.value.draining === draining) return false;
    const value = JSON.stringify({ ...d.value, draining });
    // A put without a lease would detach the key from the node's lease (and outlive the node): re-attach it.
    const put = c.etcd.put(key).value(value);
    if (kv.lease !== '0') put.lease(kv.lease);
    const r = await c.call(`writing ${key}`, () => c.etcd.if(key, 'Mod', '==', kv.mod_revision).then(put).commit());
    if (r.succeeded) return true;
    // The agent rewrote its key in between: read again.
  }
  throw new CliError(
    `${key} kept changing; gave up after ${CAS_ATTEMPTS} compare-and-swap attempts`,
    're-run the command',
  );
}

async function waitDrained(c: Connection, io: CliIo, node: string, timeoutMs: number): Promise<void> {
  const initial = await c.call('reading the cluster', () => loadClusterState(c.etcd, c.keys));
  let last = '';
  let finish: (err?: Error) => void = () => undefined;
  const finished = new Promise<void>((resolve, reject) => {
    finish = (err) => (err ? reject(err) : resolve());
  });
  const check = (state: ClusterState): void => {
    const p = drainProgress(state, node);
    const line = describeProgress(node, p);
    if (line !== last) io.out(`${line}\n`);
    last = line;
    if (p.state === 'done') finish();
  };
  check(initial);
  const timer = setTimeout(
    () =>
      finish(
        new CliError(
          `${node} still owns buckets after ${timeoutMs} ms (${last})`,
          'see `clusterip-ha status` for why; the drain flag stays set',
        ),
      ),
    timeoutMs,
  );
  // Filled once the watch exists; its callbacks may fire before (a reload), then they use `initial`.
  const box: { watch?: Awaited<ReturnType<typeof watchCluster>> } = {};
  const watch = await c.call('starting the watch', () =>
    watchCluster(c.etcd, c.keys, {
      initial,
      onChange: () => check(box.watch?.state ?? initial),
      onError: (e) => io.err(`etcd watch: ${e.message} (retrying)\n`),
    }),
  );
  box.watch = watch;
  check(watch.state);
  try {
    await finished;
  } finally {
    clearTimeout(timer);
    await Promise.race([watch.close(), new Promise((r) => setTimeout(r, 1000))]);
  }
}
