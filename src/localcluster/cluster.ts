import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateClusterSpec } from '../config/index.js';
import type { ClusterSpec } from '../config/types.js';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient } from '../etcd/client.js';
import { decodeJson, nodeValueSchema } from '../etcd/values.js';
import { keysFor, type Keys } from '../etcd/keys.js';
import { startLocalEtcd, type LocalEtcd } from '../etcd/localEtcd.js';
import { writeSpec } from '../etcd/spec.js';
import { startObserver, type FullObserver, type FullReport } from '../invariant/observer.js';
import { waitObserverConverged } from '../invariant/converge.js';
import { spawnAgent, type AgentExit, type AgentProcess } from './agentProcess.js';
import { WRITE_FAULTS_ENV, type WriteFaultSpec } from '../backends/writeFaults.js';
import { startTcpProxy, type CutMode, type TcpProxy } from './tcpProxy.js';

// A whole cluster on one machine: etcd on loopback (1 or 3 members), N agent processes with file backends, each
// talking to etcd through its own TCP proxies (one per etcd member, so a partition can be cut per agent), and an
// invariant observer watching all of it. Used by the demo, chaos and the benchmark.

export interface LocalClusterOptions {
  agents: number;
  etcdMembers: 1 | 3;
  leaseTtlSeconds: number;
  /** etcd with `--heartbeat-interval 50 --election-timeout 500` (TTL may go down to 1 s). */
  fastEtcd?: boolean;
  /** Default: one VIP 10.77.0.100 with 16 buckets. */
  spec?: ClusterSpec;
  /** Where data dirs, backend dirs and agent logs go; a fresh temp dir (removed on stop) by default. */
  baseDir?: string;
  /** Cluster name (key prefix); default `local`. */
  cluster?: string;
  /** Unowned longer than this while a live node exists is a violation; default TTL + 200 ms. */
  unownedBoundMs?: number;
  /** Observer's backend poll interval (ms); default 10. */
  pollMs?: number;
  /** Extra flags for every agent (`--fence-margin 300` ...). */
  agentArgs?: string[];
  /** Keep agent logs in `<baseDir>/logs/<node>.log`; default true. */
  agentLogs?: boolean;
  /**
   * Use this etcd instead of starting one (plain http URLs). Its members cannot be killed; the cluster's keys are
   * deleted on stop. Pick a cluster name nobody else uses: a spec already there is a conflict.
   */
  etcdEndpoints?: string[];
}

export type NodeRunState = 'running' | 'stopped' | 'exited';

export interface LocalNode {
  readonly id: string;
  readonly backendDir: string;
  readonly logFile: string | undefined;
  proc: AgentProcess;
  /** Date.now() when the current process was spawned. */
  spawnedAt: number;
  /** One proxy per etcd member, in member order. */
  readonly proxies: TcpProxy[];
  run: NodeRunState;
}

export interface LocalCluster {
  readonly etcd: LocalEtcd;
  readonly cluster: string;
  readonly keys: Keys;
  readonly baseDir: string;
  readonly observer: FullObserver;
  readonly leaseTtlSeconds: number;
  nodes(): LocalNode[];
  node(id: string): LocalNode;
  /** Send a signal; SIGKILL (and SIGTERM) wait for the exit, bounded by `waitMs` (default 15 s). */
  kill(id: string, sig?: NodeJS.Signals, waitMs?: number): Promise<void>;
  /** SIGSTOP / SIGCONT. */
  freeze(id: string): void;
  thaw(id: string): void;
  /** Start a fresh process for a node that exited (same id, same backend dir). */
  restart(id: string): Promise<void>;
  /** Start one more node (`n<k>`); returns its id. */
  addNode(): Promise<string>;
  /** Cut the node off from every etcd member, or heal it. */
  partition(id: string, mode?: CutMode): void;
  heal(id: string): void;
  /** Set or clear the draining flag in `nodes/<id>` (compare-and-swap, keeping the node's lease), as
   *  `clusterip-ha drain` does. Returns false when the node has no key or the flag was already so. */
  drain(id: string): Promise<boolean>;
  undrain(id: string): Promise<boolean>;
  /** Graceful stop: SIGTERM (the agent drains, hands off, revokes, exits), bounded by waitMs. */
  terminate(id: string, waitMs?: number): Promise<void>;
  /**
   * Start a second agent with node `id` as another machine would (its own backend dir and state dir, observed as
   * backend holder `<id>~clone<k>`), wait up to `waitMs` for it to exit, kill it if it did not.
   */
  startClone(id: string, waitMs: number): Promise<{ label: string; exit: AgentExit | null }>;
  /** Make a share of the node's backend writes fail or stall (null: stop). Takes effect at its next write. */
  setWriteFaults(id: string, spec: WriteFaultSpec | null): Promise<void>;
  /** SIGSTOP / SIGCONT one etcd member. */
  freezeMember(i: number): void;
  thawMember(i: number): void;
  /** Wait until claims == assignment == backend with every running node; false on timeout. */
  waitConverged(timeoutMs: number): Promise<boolean>;
  /** Stop the observer and return its report (idempotent: later calls return the same report). */
  finish(opts?: { expectConverged?: boolean; convergeTimeoutMs?: number }): Promise<FullReport>;
  /** finish() if not done, then kill everything and remove temp dirs. Bounded. */
  stop(): Promise<void>;
}

export function defaultSpec(buckets = 16): ClusterSpec {
  return validateClusterSpec(
    {
      vips: [{ address: '10.77.0.100', interface: 'eth0', buckets, seed: 0x5eed1234 }],
      rebalance: { joinMovesPerInterval: 2, intervalMs: 500 },
    },
    'default spec',
  );
}

/** An etcd we did not start: the same shape, but members cannot be killed or restarted. */
function externalEtcd(endpoints: string[]): LocalEtcd {
  const members = endpoints.map((url, i) => {
    const u = new URL(url);
    if (u.protocol !== 'http:')
      throw new Error(`local clusters reach etcd through plain TCP proxies: ${url} is not http://`);
    return { name: `e${i}`, clientUrl: url, peerUrl: '', dataDir: '', pid: () => undefined };
  });
  const refuse = async (): Promise<void> => {
    throw new Error('an external etcd: members cannot be killed or restarted');
  };
  return { endpoints, members, mode: 'binary', killMember: refuse, restartMember: refuse, stop: async () => undefined };
}

/** CAS the draining flag into nodes/<id>, re-attaching the key's lease (the same write as the CLI's drain). */
export async function setDraining(etcd: Etcd3, keys: Keys, node: string, draining: boolean): Promise<boolean> {
  const key = keys.node(node);
  for (let attempt = 0; attempt < 5; attempt++) {
    const kv = (await etcd.get(key).exec()).kvs[0];
    if (!kv) return false;
    const d = decodeJson(nodeValueSchema, kv.value.toString());
    if (!d.ok || d.value.draining === draining) return false;
    const put = etcd.put(key).value(JSON.stringify({ ...d.value, draining }));
    if (kv.lease !== '0') put.lease(kv.lease);
    const r = await etcd.if(key, 'Mod', '==', kv.mod_revision).then(put).commit();
    if (r.succeeded) return true;
  }
  return false;
}

const withTimeout = async <T>(p: Promise<T>, ms: number, fallback: T): Promise<T> =>
  Promise.race([p, new Promise<T>((r) => setTimeout(() => r(fallback), ms).unref())]);

export async function startLocalCluster(opts: LocalClusterOptions): Promise<LocalCluster> {
  const ownBase = opts.baseDir === undefined;
  const baseDir = opts.baseDir ?? (await mkdtemp(join(tmpdir(), 'clusterip-ha-cluster-')));
  await mkdir(join(baseDir, 'backends'), { recursive: true });
  const logs = opts.agentLogs ?? true;
  if (logs) await mkdir(join(baseDir, 'logs'), { recursive: true });
  const cluster = opts.cluster ?? 'local';
  const keys = keysFor(cluster);
  const spec = opts.spec ?? defaultSpec();
  const etcd = opts.etcdEndpoints
    ? externalEtcd(opts.etcdEndpoints)
    : await startLocalEtcd({
        members: opts.etcdMembers,
        fastElection: opts.fastEtcd ?? false,
        baseDir: join(baseDir, 'etcd'),
        preferContainer: false,
        // Kept beside the agents' logs when the caller keeps the directory (chaos --work-dir).
        ...(ownBase ? {} : { logFile: join(baseDir, 'etcd.log') }),
      });
  const cleanup: (() => Promise<void>)[] = [() => etcd.stop()];
  const nodes = new Map<string, LocalNode>();
  let seq = 0;
  let observer: FullObserver | undefined;
  let report: FullReport | undefined;

  const upstreams = etcd.members.map((m) => {
    const u = new URL(m.clientUrl);
    return { host: u.hostname, port: Number(u.port) };
  });

  const faultFile = (id: string): string => join(baseDir, 'faults', `${id}.json`);
  const spawnFor = (n: { id: string; backendDir: string; logFile: string | undefined; proxies: TcpProxy[] }) =>
    spawnAgent({
      nodeId: n.id,
      endpoints: n.proxies.map((p) => `http://127.0.0.1:${p.port}`),
      cluster,
      backendDir: n.backendDir,
      leaseTtlSeconds: opts.leaseTtlSeconds,
      extraArgs: opts.agentArgs ?? [],
      env: { [WRITE_FAULTS_ENV]: faultFile(n.id) },
      ...(n.logFile ? { logFile: n.logFile } : {}),
    });
  let clones = 0;
  const cloneProcs = new Set<AgentProcess>();

  const add = async (): Promise<LocalNode> => {
    const id = `n${++seq}`;
    const backendDir = join(baseDir, 'backends', id);
    await mkdir(backendDir, { recursive: true });
    const proxies = await Promise.all(upstreams.map((u) => startTcpProxy(u)));
    const logFile = logs ? join(baseDir, 'logs', `${id}.log`) : undefined;
    observer?.addNode(id, backendDir);
    const spawnedAt = Date.now();
    const node: LocalNode = {
      spawnedAt,
      id,
      backendDir,
      logFile,
      proxies,
      proc: spawnFor({ id, backendDir, logFile, proxies }),
      run: 'running',
    };
    nodes.set(id, node);
    return node;
  };

  const get = (id: string): LocalNode => {
    const n = nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  };

  const killAll = async (): Promise<void> => {
    for (const c of cloneProcs) c.signal('SIGKILL');
    await Promise.all(
      [...nodes.values()].map(async (n) => {
        n.proc.signal('SIGKILL');
        await n.proc.waitExit(10_000).catch(() => undefined);
        n.run = 'exited';
      }),
    );
    await Promise.all([...nodes.values()].flatMap((n) => n.proxies.map((p) => p.close().catch(() => undefined))));
  };

  const client = createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 5000 });
  cleanup.unshift(async () => {
    // Our keys in someone else's etcd: leave nothing behind (leased keys are gone with their agents already).
    if (opts.etcdEndpoints) await client.delete().prefix(keys.prefix).exec();
    client.close();
  });
  try {
    await writeSpec(client, keys, spec, { expectModRevision: 'absent' });
    observer = await startObserver({
      endpoints: etcd.endpoints,
      cluster,
      backendDirs: {},
      unownedBoundMs: opts.unownedBoundMs ?? opts.leaseTtlSeconds * 1000 + 200,
      pollMs: opts.pollMs ?? 10,
    });
    for (let i = 0; i < opts.agents; i++) await add();
  } catch (err) {
    await killAll();
    await observer?.stop().catch(() => undefined);
    for (const c of cleanup) await c().catch(() => undefined);
    if (ownBase) await rm(baseDir, { recursive: true, force: true });
    throw err;
  }
  const obs = observer;

  const lc: LocalCluster = {
    etcd,
    cluster,
    keys,
    baseDir,
    observer: obs,
    leaseTtlSeconds: opts.leaseTtlSeconds,
    nodes: () => [...nodes.values()],
    node: get,
    async kill(id, sig = 'SIGKILL', waitMs = 15_000) {
      const n = get(id);
      if (n.run === 'stopped' && sig !== 'SIGKILL') n.proc.signal('SIGCONT');
      n.proc.signal(sig);
      if (sig === 'SIGKILL' || sig === 'SIGTERM' || sig === 'SIGINT') {
        await n.proc.waitExit(waitMs).catch(async () => {
          n.proc.signal('SIGKILL');
          await n.proc.waitExit(5000).catch(() => undefined);
        });
        n.run = 'exited';
      }
    },
    freeze(id) {
      const n = get(id);
      if (n.run !== 'running') return;
      n.proc.signal('SIGSTOP');
      n.run = 'stopped';
    },
    thaw(id) {
      const n = get(id);
      if (n.run !== 'stopped') return;
      n.proc.signal('SIGCONT');
      n.run = 'running';
    },
    async restart(id) {
      const n = get(id);
      if (n.run !== 'exited') await lc.kill(id, 'SIGKILL');
      n.spawnedAt = Date.now();
      n.proc = spawnFor(n);
      n.run = 'running';
    },
    async addNode() {
      return (await add()).id;
    },
    partition(id, mode = 'reset') {
      for (const p of get(id).proxies) p.cut(mode);
    },
    heal(id) {
      for (const p of get(id).proxies) p.heal();
    },
    drain: (id) => setDraining(client, keys, id, true),
    undrain: (id) => setDraining(client, keys, id, false),
    async terminate(id, waitMs = 30_000) {
      await lc.kill(id, 'SIGTERM', waitMs);
    },
    async startClone(id, waitMs) {
      get(id);
      const k = ++clones;
      const label = `${id}~clone${k}`;
      const backendDir = join(baseDir, 'backends', label);
      await mkdir(backendDir, { recursive: true });
      obs.addNode(label, backendDir);
      const proc = spawnAgent({
        nodeId: id,
        endpoints: etcd.endpoints,
        cluster,
        backendDir,
        leaseTtlSeconds: opts.leaseTtlSeconds,
        extraArgs: opts.agentArgs ?? [],
        ...(logs ? { logFile: join(baseDir, 'logs', `${label}.log`) } : {}),
      });
      cloneProcs.add(proc);
      try {
        return { label, exit: await proc.waitExit(waitMs) };
      } catch {
        proc.signal('SIGKILL');
        await proc.waitExit(5000).catch(() => undefined);
        return { label, exit: null };
      } finally {
        cloneProcs.delete(proc);
      }
    },
    async setWriteFaults(id, spec) {
      get(id);
      await mkdir(join(baseDir, 'faults'), { recursive: true });
      if (spec) await writeFile(faultFile(id), JSON.stringify(spec));
      else await rm(faultFile(id), { force: true });
    },
    freezeMember(i) {
      const pid = etcd.members[i]?.pid();
      if (pid !== undefined) process.kill(pid, 'SIGSTOP');
    },
    thawMember(i) {
      const pid = etcd.members[i]?.pid();
      if (pid !== undefined) process.kill(pid, 'SIGCONT');
    },
    async waitConverged(timeoutMs) {
      // A restarted node counts only once its current process registered: until the old lease expires, the old
      // process's node key, claims and backend entries still look converged.
      const current = (id: string): boolean => {
        const v = obs.cluster().nodes.get(id)?.value;
        const n = nodes.get(id);
        return v !== undefined && n !== undefined && Date.parse(v.startedAt) >= n.spawnedAt;
      };
      return waitObserverConverged(
        obs,
        () => new Set([...nodes.values()].filter((n) => n.run === 'running').map((n) => n.id)),
        timeoutMs,
        current,
      );
    },
    async finish(fopts) {
      report ??= await obs.stop(fopts);
      return report;
    },
    async stop() {
      if (!report)
        await withTimeout(
          lc.finish().then(() => undefined),
          10_000,
          undefined,
        );
      await withTimeout(killAll(), 20_000, undefined);
      for (const c of cleanup)
        await withTimeout(
          c().catch(() => undefined),
          20_000,
          undefined,
        );
      if (ownBase) await rm(baseDir, { recursive: true, force: true }).catch(() => undefined);
    },
  };
  return lc;
}
