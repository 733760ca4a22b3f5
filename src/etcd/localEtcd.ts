import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';

// A throwaway etcd on loopback for the demo, chaos runs, benchmarks and tests: a testcontainers container where
// a Docker engine answers, otherwise the `etcd` binary from Debian's etcd-server package. Members can be killed
// and restarted to exercise client failover.

export interface LocalEtcdOptions {
  members?: 1 | 3;
  /** etcd's `--heartbeat-interval 50 --election-timeout 500`: lets lease TTLs go down to 1 s (DESIGN.md §10). */
  fastElection?: boolean;
  /** Parent of the data dirs; a fresh temp dir by default. Removed on stop. */
  baseDir?: string;
  etcdPath?: string;
  /** Prefer a container when Docker is reachable (default true). */
  preferContainer?: boolean;
  /** etcd's own log goes here when set (a file path); discarded otherwise. */
  logFile?: string;
}

export interface LocalEtcdMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  pid(): number | undefined;
}

export interface LocalEtcd {
  readonly endpoints: string[];
  readonly members: LocalEtcdMember[];
  readonly mode: 'binary' | 'container';
  /** SIGKILL one member (index into `members`). */
  killMember(i: number): Promise<void>;
  /** Start a killed member again with its old data dir. */
  restartMember(i: number): Promise<void>;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export function findEtcdBinary(explicit?: string): string | undefined {
  const candidates = [explicit, process.env.CLUSTERIP_HA_ETCD_BIN, '/usr/bin/etcd', '/usr/local/bin/etcd'];
  return candidates.find((c): c is string => c !== undefined && c !== '' && existsSync(c));
}

async function dockerReachable(): Promise<boolean> {
  if (!process.env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) return false;
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await Promise.race([
      getContainerRuntimeClient(),
      new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), 3000)),
    ]);
    return true;
  } catch {
    return false;
  }
}

export async function startLocalEtcd(opts: LocalEtcdOptions = {}): Promise<LocalEtcd> {
  const members = opts.members ?? 1;
  if ((opts.preferContainer ?? true) && members === 1 && (await dockerReachable())) {
    return startContainer(opts);
  }
  const bin = findEtcdBinary(opts.etcdPath);
  if (!bin) {
    throw new Error(
      'no etcd binary found and no Docker engine reachable: install it with `apt-get install -y etcd-server` ' +
        'or set CLUSTERIP_HA_ETCD_BIN',
    );
  }
  const baseDir = opts.baseDir ?? (await mkdtemp(join(tmpdir(), 'clusterip-ha-etcd-')));
  const specs: LocalEtcdMember[] = [];
  for (let i = 0; i < members; i++) {
    const [cp, pp] = [await freePort(), await freePort()];
    specs.push({
      name: `m${i}`,
      clientUrl: `http://127.0.0.1:${cp}`,
      peerUrl: `http://127.0.0.1:${pp}`,
      dataDir: join(baseDir, `m${i}.etcd`),
      pid: () => undefined,
    });
  }
  const initialCluster = specs.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  const procs: (ChildProcess | undefined)[] = new Array(members).fill(undefined);

  const launch = (i: number, state: 'new' | 'existing'): ChildProcess => {
    const m = specs[i]!;
    const args = [
      '--name',
      m.name,
      '--data-dir',
      m.dataDir,
      '--listen-client-urls',
      m.clientUrl,
      '--advertise-client-urls',
      m.clientUrl,
      '--listen-peer-urls',
      m.peerUrl,
      '--initial-advertise-peer-urls',
      m.peerUrl,
      '--initial-cluster',
      initialCluster,
      '--initial-cluster-state',
      state,
      '--initial-cluster-token',
      `clusterip-ha-${process.pid}`,
      '--logger',
      'zap',
      '--log-outputs',
      opts.logFile ? opts.logFile : '/dev/null',
      ...(opts.fastElection ? ['--heartbeat-interval', '50', '--election-timeout', '500'] : []),
      // A restarted member must not depose a healthy leader: every election refreshes every lease, which delays
      // the failover of a node that died just before (etcd 3.5 turns this on by default).
      ...(members > 1 ? ['--pre-vote'] : []),
    ];
    const child = spawn(bin, args, {
      stdio: 'ignore',
      env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' },
    });
    child.on('error', () => undefined);
    procs[i] = child;
    m.pid = () => (child.exitCode === null && child.signalCode === null ? child.pid : undefined);
    return child;
  };

  specs.forEach((_, i) => launch(i, 'new'));
  try {
    await waitHealthy(
      specs.map((m) => m.clientUrl),
      20_000,
    );
  } catch (err) {
    procs.forEach((p) => p?.kill('SIGKILL'));
    await rm(baseDir, { recursive: true, force: true });
    throw err;
  }

  const killOne = async (i: number): Promise<void> => {
    const p = procs[i];
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  };

  return {
    endpoints: specs.map((m) => m.clientUrl),
    members: specs,
    mode: 'binary',
    killMember: killOne,
    async restartMember(i) {
      await killOne(i);
      launch(i, 'existing');
      await waitHealthy([specs[i]!.clientUrl], 20_000);
    },
    async stop() {
      await Promise.all(specs.map((_, i) => killOne(i)));
      if (!opts.baseDir) await rm(baseDir, { recursive: true, force: true });
    },
  };
}

async function waitHealthy(urls: string[], timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (const url of urls) {
    for (;;) {
      try {
        const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
        const body = (await res.json()) as { health?: string };
        if (body.health === 'true') break;
      } catch {
        // not up yet
      }
      if (Date.now() > until) throw new Error(`etcd at ${url} not healthy after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function startContainer(opts: LocalEtcdOptions): Promise<LocalEtcd> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const image = process.env.CLUSTERIP_HA_ETCD_IMAGE ?? 'quay.io/coreos/etcd:v3.5.17';
  const container = await new GenericContainer(image)
    .withCommand([
      'etcd',
      '--name',
      'm0',
      '--listen-client-urls',
      'http://0.0.0.0:2379',
      '--advertise-client-urls',
      'http://127.0.0.1:2379',
      ...(opts.fastElection ? ['--heartbeat-interval', '50', '--election-timeout', '500'] : []),
    ])
    .withExposedPorts(2379)
    .withWaitStrategy(Wait.forHttp('/health', 2379))
    .start();
  const url = `http://${container.getHost()}:${container.getMappedPort(2379)}`;
  const member: LocalEtcdMember = { name: 'm0', clientUrl: url, peerUrl: '', dataDir: '', pid: () => undefined };
  return {
    endpoints: [url],
    members: [member],
    mode: 'container',
    async killMember() {
      await container.stop({ timeout: 0 });
    },
    async restartMember() {
      await container.restart();
    },
    async stop() {
      await container.stop({ timeout: 0 });
    },
  };
}
