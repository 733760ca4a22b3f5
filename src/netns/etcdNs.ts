import { createServer, connect, type Server, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findEtcdBinary } from '../etcd/localEtcd.js';
import { spawnInNs, type NsProcess } from './nsProcess.js';
import { NetnsError } from './run.js';

// etcd inside its own namespace, listening on its control-network address (for the node agents) and on a unix
// socket (for the harness). Unix sockets are named in the file system, not in a network namespace, so the
// harness in the root namespace reaches etcd through a loopback TCP relay onto that socket without any
// interface or route in the root namespace. Cutting a node's control link never affects the harness.

export interface NsEtcd {
  /** For agents inside node namespaces: http://<control address>:2379. */
  readonly controlEndpoint: string;
  /** For the harness (root namespace): http://127.0.0.1:<port> relayed to etcd's unix socket. */
  readonly harnessEndpoint: string;
  readonly pid: number;
  stop(): Promise<void>;
}

export async function startEtcdInNs(opts: {
  ns: string;
  address: string;
  port: number;
  etcdPath?: string;
  /** etcd's fast election flags so lease TTLs go down to 1 s (DESIGN §10). Default true. */
  fastElection?: boolean;
  readyTimeoutMs?: number;
}): Promise<NsEtcd> {
  const bin = findEtcdBinary(opts.etcdPath);
  if (!bin) throw new NetnsError('no etcd binary (apt-get install -y etcd-server, or set CLUSTERIP_HA_ETCD_BIN)');
  // Short path: unix socket paths are limited to 108 bytes.
  const dir = await mkdtemp(join(tmpdir(), 'cipha-dp-'));
  const sockName = 'etcd.sock';
  // etcd takes the host part of a unix:// URL as the socket path, relative to its working directory.
  const sockPath = join(dir, `${sockName}:0`);
  const controlEndpoint = `http://${opts.address}:${opts.port}`;
  const args = [
    '--name',
    'm0',
    '--data-dir',
    join(dir, 'data'),
    '--listen-client-urls',
    `${controlEndpoint},unix://${sockName}:0`,
    '--advertise-client-urls',
    controlEndpoint,
    '--listen-peer-urls',
    'http://127.0.0.1:2380',
    '--initial-advertise-peer-urls',
    'http://127.0.0.1:2380',
    '--initial-cluster',
    'm0=http://127.0.0.1:2380',
    '--logger',
    'zap',
    '--log-outputs',
    join(dir, 'etcd.log'),
    ...((opts.fastElection ?? true) ? ['--heartbeat-interval', '50', '--election-timeout', '500'] : []),
  ];
  let proc: NsProcess | undefined;
  let relay: Relay | undefined;
  const cleanup = async (): Promise<void> => {
    await relay?.close();
    await proc?.stop(1000);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    proc = spawnInNs(opts.ns, bin, args, undefined, dir);
    relay = await startUnixRelay(sockPath);
    await waitHealthy(`http://127.0.0.1:${relay.port}`, opts.readyTimeoutMs ?? 20_000, proc);
  } catch (err) {
    await cleanup();
    throw err;
  }
  const p = proc;
  return {
    controlEndpoint,
    harnessEndpoint: `http://127.0.0.1:${relay.port}`,
    pid: p.pid,
    stop: cleanup,
  };
}

interface Relay {
  port: number;
  close(): Promise<void>;
}

/** 127.0.0.1:<ephemeral> → unix socket, one pipe per connection. */
async function startUnixRelay(path: string): Promise<Relay> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((down) => {
    const up = connect({ path });
    sockets.add(down);
    sockets.add(up);
    const close = (): void => {
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    down.on('error', close).on('close', close);
    up.on('error', close).on('close', close);
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (typeof addr !== 'object' || addr === null) throw new NetnsError('relay has no address');
  return {
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function waitHealthy(url: string, timeoutMs: number, proc: NsProcess): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exited()) throw new NetnsError(`etcd in ${proc.ns} exited: ${proc.stderrTail()}`);
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
      const body = (await res.json()) as { health?: string };
      if (body.health === 'true') return;
    } catch {
      // not up yet
    }
    if (Date.now() > until) throw new NetnsError(`etcd in ${proc.ns} not healthy after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
