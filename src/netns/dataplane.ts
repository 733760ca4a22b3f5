import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { validateClusterSpec } from '../config/index.js';
import type { ClusterSpec, VipSpec } from '../config/types.js';
import type { OwnershipSample } from '../invariant/types.js';
import { createEtcdClient } from '../etcd/client.js';
import { keysFor, parseKey, type Keys } from '../etcd/keys.js';
import { writeSpec } from '../etcd/spec.js';
import { assignValueSchema, decodeClaim, decodeJson } from '../etcd/values.js';
import { nftablesBucketFor } from '../hash/index.js';
import { spawnAgent, type AgentExit, type AgentProcess } from '../localcluster/agentProcess.js';
import { ETCD_CLIENT_PORT, SERVER_TCP_PORT, SERVER_UDP_PORT } from './addressing.js';
import { startEtcdInNs, type NsEtcd } from './etcdNs.js';
import { readOwnedSet } from './nftRead.js';
import {
  startProber,
  type ProbeOptions,
  type ProbeResult,
  type Prober,
  type StreamOptions,
  type StreamReport,
} from './prober.js';
import { NetnsError } from './run.js';
import { startNodeServer, type NodeServer } from './servers.js';
import { createTopology, sweepStaleNamespaces, type ControlCutMode, type Topology } from './topology.js';

// The whole nftables dataplane of DESIGN §11 as a library (tests and `clusterip-ha chaos --dataplane netns`):
// topology (topology.ts) + etcd in its namespace + a server per node + the prober + a real agent per node
// (nftables backend, inside the node's namespace). Everything is torn down by destroy(), also after a failed
// setup; every wait is bounded.

export interface DataplaneOptions {
  /** Node ids, also namespace suffixes ([a-z][a-z0-9]{0,7}); default n1, n2, n3. */
  nodes?: string[];
  /** Client source addresses; default 90. */
  sources?: number;
  /** etcd cluster name; default `dp<pid>`. */
  cluster?: string;
  /** The spec written with writeSpec; default: defaultDataplaneSpec(). Its first VIP is the one probed. */
  spec?: ClusterSpec;
  leaseTtlSeconds?: number;
  /** Start an agent in every node namespace (default true). */
  agents?: boolean;
  /** Extra agent flags (after the ones set here). */
  agentArgs?: string[];
  /** Extra flags for one node's agent (after agentArgs): a slowed `--nft-path`, say. */
  agentArgsOf?: (node: string) => string[];
  /** Extra environment for one node's agent: fault injection such as WATCH_LAG_ENV. */
  agentEnvOf?: (node: string) => NodeJS.ProcessEnv;
  nftTable?: string;
  /** Agent log files go here (`<node>.log`); default: a temp dir removed on destroy. */
  logDir?: string;
  /** Bound on the whole setup (not counting settle); default 60 s. */
  timeoutMs?: number;
  /** Node interfaces (see TopologyOptions.link); default veth. */
  link?: 'veth' | 'macvlan';
  /** The client's neighbour entries (see TopologyOptions.resolution); default static. */
  resolution?: 'static' | 'learned';
}

export interface SettleOptions {
  timeoutMs?: number;
  /** Every one of these nodes must own at least one bucket (default: every node with a running agent). */
  owners?: string[];
  /** The settled claims must stay unchanged this long (rebalancing after joins has finished); default 1500. */
  stableMs?: number;
}

export interface Ownership {
  /** bucket → claim owner, from etcd. */
  claims: Map<number, string>;
  /** bucket → assigned owner, from the leader's assignment. */
  assigned: Map<number, string>;
  /** node → buckets in its kernel set (unexpired). */
  kernel: Map<string, number[]>;
}

export interface Dataplane {
  readonly topology: Topology;
  readonly nodes: string[];
  readonly cluster: string;
  readonly spec: ClusterSpec;
  /** The probed VIP. */
  readonly vip: VipSpec;
  /** The spec's IPv6 VIP (the first after `vip`), probed by probe6 from sources6; null when it has none. */
  readonly vip6: VipSpec | null;
  readonly sources6: string[];
  readonly keys: Keys;
  /** etcd for the harness (root namespace, loopback relay). */
  readonly etcdEndpoint: string;
  /** etcd as the nodes reach it over the control network. */
  readonly controlEndpoint: string;
  readonly sources: string[];
  readonly etcd: Etcd3;
  readonly agents: Map<string, AgentProcess>;
  readonly setupMs: number;
  probe(opts?: ProbeOptions): Promise<ProbeResult>;
  /** Continuous probing on the prober's own clock (see Prober.stream). */
  probeStream(opts: StreamOptions, onReport: (r: StreamReport) => void): { stop(): void };
  /** The same for the IPv6 VIP (throws without one). */
  probe6(opts?: ProbeOptions): Promise<ProbeResult>;
  probeStream6(opts: StreamOptions, onReport: (r: StreamReport) => void): { stop(): void };
  cutControl(node: string, mode?: ControlCutMode): Promise<void>;
  healControl(node: string): Promise<void>;
  nsOf(node: string): string;
  /** Start (or restart) the agent of `node`. */
  startAgent(node: string): AgentProcess;
  /** Signal the agent and wait (bounded) for it to exit. */
  stopAgent(node: string, sig: NodeJS.Signals, timeoutMs?: number): Promise<AgentExit>;
  /** Kill the node's server (the service behind the VIP), leaving its agent running. */
  stopServer(node: string): Promise<void>;
  /** Start the node's server again (after stopServer). */
  startServer(node: string): Promise<void>;
  bucketOfSource(source: string, of?: VipSpec): number;
  /** source → owner predicted from the claims in etcd and the nftables hash (unclaimed buckets absent). */
  expectedOwners(claims?: Map<number, string>, of?: VipSpec): Promise<Map<string, string>>;
  readOwnership(): Promise<Ownership>;
  /** Wait until assignment == claims == kernel for every bucket, every bucket owned. Returns the ownership. */
  waitSettled(opts?: SettleOptions): Promise<Ownership>;
  /** Per-bucket holders as every node's kernel set shows them now (source 'backend'), for the observer. */
  sampleKernel(): Promise<OwnershipSample[]>;
  /**
   * Feed sampleKernel() to `onSample` every `intervalMs` (default 200; each round runs one `nft` per node) until
   * stop() or destroy(). The invariant observer has no reader for nftables backends: this is that reader.
   */
  startKernelSampler(
    onSample: (s: OwnershipSample) => void,
    intervalMs?: number,
    /** After each complete round: every set was read at or after `t` (the observer's transition check). */
    onRound?: (t: number) => void,
  ): { stop(): Promise<void> };
  /** Kill every process and delete every namespace. Idempotent; returns the teardown time in ms. */
  destroy(): Promise<number>;
}

export function defaultDataplaneSpec(vip = '10.77.0.100', buckets = 16): ClusterSpec {
  return validateClusterSpec(
    {
      vips: [{ address: vip, interface: 'eth0', buckets, hashMode: 'sourceip', seed: 0x5eed1234 }],
      // Joins even out quickly so a fresh cluster is balanced within a few seconds.
      rebalance: { joinMovesPerInterval: 4, intervalMs: 200 },
    },
    'dataplane default spec',
  );
}

export async function buildDataplane(opts: DataplaneOptions = {}): Promise<Dataplane> {
  const started = performance.now();
  await sweepStaleNamespaces();
  const spec = opts.spec ?? defaultDataplaneSpec();
  const vip = spec.vips[0];
  if (!vip) throw new NetnsError('the spec has no VIP');
  if (vip.interface !== 'eth0') throw new NetnsError(`the probed VIP must be on eth0 (got ${vip.interface})`);
  if (vip.address.includes(':')) throw new NetnsError('the first VIP must be IPv4 (an IPv6 one may follow)');
  const vip6 = spec.vips.find((v) => v.address.includes(':')) ?? null;
  if (vip6 && vip6.interface !== 'eth0') throw new NetnsError(`the IPv6 VIP must be on eth0 (got ${vip6.interface})`);
  const served = [vip, ...(vip6 ? [vip6] : [])];
  const nodes = opts.nodes ?? ['n1', 'n2', 'n3'];
  const cluster = opts.cluster ?? `dp${process.pid}`;
  const keys = keysFor(cluster);
  const nftTable = opts.nftTable ?? 'clusterip_ha';
  const ttl = opts.leaseTtlSeconds ?? 2;

  const work = await mkdtemp(join(tmpdir(), 'cipha-dp-'));
  const logDir = opts.logDir ?? join(work, 'logs');
  await mkdir(logDir, { recursive: true });

  const servers: NodeServer[] = [];
  const samplers: (() => Promise<void>)[] = [];
  const agents = new Map<string, AgentProcess>();
  let topology: Topology | undefined;
  let nsEtcd: NsEtcd | undefined;
  let prober: Prober | undefined;
  let prober6: Prober | undefined;
  let etcd: Etcd3 | undefined;

  let destroyed: Promise<number> | undefined;
  const destroy = (): Promise<number> =>
    (destroyed ??= (async () => {
      const t = performance.now();
      await Promise.all(samplers.map((stop) => stop()));
      // Agents first (they may be mid-apply), then everything else that runs inside a namespace, then the
      // namespaces. Each step is bounded on its own.
      await Promise.all(
        [...agents.values()].map(async (a) => {
          a.signal('SIGKILL');
          await a.waitExit(5000).catch(() => undefined);
        }),
      );
      await Promise.all([...servers.map((s) => s.stop()), prober?.stop(), prober6?.stop()]);
      etcd?.close();
      await nsEtcd?.stop();
      await topology?.destroy();
      await rm(work, { recursive: true, force: true });
      return performance.now() - t;
    })());

  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  const left = (): number => Math.max(1, deadline - Date.now());

  try {
    topology = await createTopology({
      nodes,
      sources: opts.sources ?? 90,
      vip: vip.address,
      clusterMac: vip.clusterMac,
      ...(vip6 ? { vip6: vip6.address, clusterMac6: vip6.clusterMac } : {}),
      ...(opts.link ? { link: opts.link } : {}),
      ...(opts.resolution ? { resolution: opts.resolution } : {}),
      timeoutMs: left(),
    });
    const topo = topology;
    nsEtcd = await startEtcdInNs({
      ns: topo.etcdNs!,
      address: topo.etcdAddress,
      port: ETCD_CLIENT_PORT,
      readyTimeoutMs: left(),
    });
    etcd = createEtcdClient({ endpoints: [nsEtcd.harnessEndpoint], requestTimeoutMs: 5000 });
    await writeSpec(etcd, keys, spec, { expectModRevision: 'absent' });
    const started = await Promise.all(
      topo.nodes.flatMap((n) =>
        served.map((v) =>
          startNodeServer({
            ns: n.ns,
            node: n.name,
            vip: v.address,
            udpPort: SERVER_UDP_PORT,
            tcpPort: SERVER_TCP_PORT,
            readyTimeoutMs: left(),
          }),
        ),
      ),
    );
    servers.push(...started);
    prober = await startProber({
      ns: topo.clientNs,
      sources: topo.sources,
      vip: vip.address,
      udpPort: SERVER_UDP_PORT,
      tcpPort: SERVER_TCP_PORT,
      readyTimeoutMs: left(),
    });
    if (vip6) {
      prober6 = await startProber({
        ns: topo.clientNs,
        sources: topo.sources6,
        vip: vip6.address,
        udpPort: SERVER_UDP_PORT,
        tcpPort: SERVER_TCP_PORT,
        readyTimeoutMs: left(),
      });
    }
  } catch (err) {
    await destroy();
    throw err;
  }

  const topo = topology;
  const etcdNs = nsEtcd;
  const client = etcd;
  const probeProc = prober;
  const probe6Proc = prober6;
  const need6 = (): Prober => {
    if (!probe6Proc) throw new NetnsError('the spec has no IPv6 VIP');
    return probe6Proc;
  };

  const startAgent = (node: string): AgentProcess => {
    const prev = agents.get(node);
    if (prev && !prev.exited()) throw new NetnsError(`agent ${node} is still running`);
    const a = spawnAgent({
      nodeId: node,
      netns: topo.nsOf(node),
      endpoints: [etcdNs.controlEndpoint],
      cluster,
      backend: 'nftables',
      leaseTtlSeconds: ttl,
      logFile: join(logDir, `${node}.log`),
      ...(opts.agentEnvOf ? { env: opts.agentEnvOf(node) } : {}),
      extraArgs: [
        '--nft-table',
        nftTable,
        '--state-dir',
        join(work, 'state', node),
        ...(opts.agentArgs ?? []),
        ...(opts.agentArgsOf?.(node) ?? []),
      ],
    });
    agents.set(node, a);
    return a;
  };

  const bucketOfSource = (source: string, of: VipSpec = vip): number =>
    nftablesBucketFor(of.hashMode, { saddr: source }, of.buckets, of.seed, 1);

  const readClaims = async (of: VipSpec = vip): Promise<Map<number, string>> => {
    const kvs = await client.getAll().prefix(keys.claimsOf(of.address)).strings();
    const out = new Map<number, string>();
    for (const [k, v] of Object.entries(kvs)) {
      const pk = parseKey(keys, k);
      const owner = decodeClaim(v);
      if (pk.family === 'claim' && owner.ok) out.set(pk.bucket, owner.value);
    }
    return out;
  };

  const readAssigned = async (): Promise<Map<number, string>> => {
    const raw = await client.get(keys.assign(vip.address)).string();
    const out = new Map<number, string>();
    if (raw === null) return out;
    const d = decodeJson(assignValueSchema, raw);
    if (d.ok) for (const [b, n] of Object.entries(d.value.owners)) out.set(Number(b), n);
    return out;
  };

  const readOwnership = async (): Promise<Ownership> => {
    const [claims, assigned, kernelList] = await Promise.all([
      readClaims(),
      readAssigned(),
      Promise.all(topo.nodes.map(async (n) => [n.name, await readOwnedSet(n.ns, nftTable, vip.address)] as const)),
    ]);
    return { claims, assigned, kernel: new Map(kernelList) };
  };

  const dp: Dataplane = {
    topology: topo,
    nodes,
    cluster,
    spec,
    vip,
    vip6,
    sources6: topo.sources6,
    keys,
    etcdEndpoint: etcdNs.harnessEndpoint,
    controlEndpoint: etcdNs.controlEndpoint,
    sources: topo.sources,
    etcd: client,
    agents,
    setupMs: 0,
    probe: (p) => probeProc.probe(p),
    probeStream: (o, f) => probeProc.stream(o, f),
    probe6: (p) => need6().probe(p),
    probeStream6: (o, f) => need6().stream(o, f),
    cutControl: (n, mode) => topo.cutControl(n, mode),
    healControl: (n) => topo.healControl(n),
    nsOf: (n) => topo.nsOf(n),
    startAgent,
    async stopAgent(node, sig, timeoutMs = 15_000) {
      const a = agents.get(node);
      if (!a) throw new NetnsError(`no agent ${node}`);
      a.signal(sig);
      return a.waitExit(timeoutMs);
    },
    async stopServer(node) {
      const mine = servers.filter((x) => x.node === node);
      if (mine.length === 0) throw new NetnsError(`no server on ${node}`);
      await Promise.all(mine.map((x) => x.stop()));
      for (const x of mine) servers.splice(servers.indexOf(x), 1);
    },
    async startServer(node) {
      if (servers.some((x) => x.node === node && !x.exited())) throw new NetnsError(`server on ${node} is running`);
      for (const v of served) {
        servers.push(
          await startNodeServer({
            ns: topo.nsOf(node),
            node,
            vip: v.address,
            udpPort: SERVER_UDP_PORT,
            tcpPort: SERVER_TCP_PORT,
          }),
        );
      }
    },
    bucketOfSource,
    async expectedOwners(claims, of = vip) {
      const c = claims ?? (await readClaims(of));
      const out = new Map<string, string>();
      for (const s of of === vip ? topo.sources : topo.sources6) {
        const owner = c.get(bucketOfSource(s, of));
        if (owner !== undefined) out.set(s, owner);
      }
      return out;
    },
    readOwnership,
    async waitSettled(s = {}) {
      const timeoutMs = s.timeoutMs ?? 30_000;
      const stableMs = s.stableMs ?? 1500;
      const until = Date.now() + timeoutMs;
      const owners = s.owners ?? [...agents.entries()].filter(([, a]) => !a.exited()).map(([n]) => n);
      let why = 'not read yet';
      let stableSince: { at: number; claims: string } | undefined;
      for (let i = 0; i < 10_000 && Date.now() < until; i++) {
        const o = await readOwnership();
        why = unsettledReason(o, vip.buckets, owners);
        if (why === '') {
          const claims = JSON.stringify([...o.claims].sort(([a], [b]) => a - b));
          if (stableSince?.claims !== claims) stableSince = { at: Date.now(), claims };
          else if (Date.now() - stableSince.at >= stableMs) return o;
        } else stableSince = undefined;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new NetnsError(`dataplane not settled after ${timeoutMs} ms: ${why || 'claims kept changing'}`);
    },
    async sampleKernel() {
      const t = Date.now();
      const o = await Promise.all(
        topo.nodes.map(async (n) => [n.name, await readOwnedSet(n.ns, nftTable, vip.address)] as const),
      );
      return kernelSamples(t, vip.address, vip.buckets, new Map(o));
    },
    startKernelSampler(onSample, intervalMs = 200, onRound) {
      let stopped = false;
      const loop = (async () => {
        let previous = new Map<number, readonly string[]>();
        // Bounded by destroy(): stops once the namespaces are gone.
        while (!stopped && destroyed === undefined) {
          const samples = await dp.sampleKernel().catch(() => []);
          if (!stopped) for (const s of confirmedSamples(previous, samples)) onSample(s);
          if (!stopped && samples[0]) onRound?.(samples[0].t);
          if (samples.length > 0) previous = new Map(samples.map((s) => [s.bucket, s.holders]));
          await new Promise((r) => setTimeout(r, intervalMs));
        }
      })();
      samplers.push(() => ((stopped = true), loop));
      return {
        stop: async () => {
          stopped = true;
          await loop;
        },
      };
    },
    destroy,
  };
  if (opts.agents ?? true) for (const n of nodes) startAgent(n);
  return Object.assign(dp, { setupMs: performance.now() - started });
}

/** '' when every bucket is assigned, claimed by its assignee and in exactly that node's kernel set. */
export function unsettledReason(o: Ownership, buckets: number, mustOwn: readonly string[]): string {
  const kernelOwners = new Map<number, string[]>();
  for (const [node, list] of o.kernel) {
    for (const b of list) kernelOwners.set(b, [...(kernelOwners.get(b) ?? []), node]);
  }
  for (let b = 1; b <= buckets; b++) {
    const a = o.assigned.get(b);
    const c = o.claims.get(b);
    const k = kernelOwners.get(b) ?? [];
    if (a === undefined) return `bucket ${b} unassigned`;
    if (c !== a) return `bucket ${b} assigned to ${a}, claimed by ${c ?? 'nobody'}`;
    if (k.length !== 1 || k[0] !== c) return `bucket ${b} claimed by ${c}, in the kernel of [${k.join(', ')}]`;
  }
  const owning = new Set(o.claims.values());
  const idle = mustOwn.filter((n) => !owning.has(n));
  if (idle.length) return `nodes without buckets: ${idle.join(', ')}`;
  return '';
}

/** One 'backend' sample per bucket from each node's kernel set. */
/**
 * One sampling round reads every node's set with its own `nft` process, so the reads are tens of ms apart: a
 * handoff (old owner removes, new owner adds, ~15 ms later) that falls between two of them reads as two owners.
 * A double is proven only when both nodes also held the bucket in the previous round (which ended before this one
 * started): then both held it throughout overlapping stretches. An unproven one reports the holders carried over
 * from the previous round, or, when none, is left out (the previous sample stands). Shorter real doubles are the
 * dataplane probes' to catch (every UDP reply is counted).
 */
export function confirmedSamples(
  previous: ReadonlyMap<number, readonly string[]>,
  current: readonly OwnershipSample[],
): OwnershipSample[] {
  const out: OwnershipSample[] = [];
  for (const s of current) {
    if (s.holders.length < 2) {
      out.push(s);
      continue;
    }
    const before = new Set(previous.get(s.bucket) ?? []);
    const kept = s.holders.filter((h) => before.has(h));
    if (kept.length >= 2) out.push({ ...s, holders: kept.length === s.holders.length ? s.holders : kept });
    else if (kept.length === 1) out.push({ ...s, holders: kept });
    // Every previous holder is gone in this read (they let go): say so, or a stale holder would stand for them.
    else if (before.size > 0) out.push({ ...s, holders: [] });
  }
  return out;
}

export function kernelSamples(
  t: number,
  vip: string,
  buckets: number,
  kernel: ReadonlyMap<string, readonly number[]>,
): OwnershipSample[] {
  const out: OwnershipSample[] = [];
  for (let b = 1; b <= buckets; b++) {
    const holders = [...kernel].filter(([, list]) => list.includes(b)).map(([n]) => n);
    out.push({ t, source: 'backend', vip, bucket: b, holders: holders.sort() });
  }
  return out;
}
