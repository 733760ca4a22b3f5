// Shared set-up for the agent integration tests: a real etcd, agents as real processes (file backend), optional
// per-agent TCP proxies in front of etcd, and the invariant observer watching claims and backend files.
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { parseClusterSpecYaml } from '../../src/config/index.js';
import type { ClusterSpec } from '../../src/config/types.js';
import { createEtcdClient } from '../../src/etcd/client.js';
import { keysFor, type Keys } from '../../src/etcd/keys.js';
import { startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';
import { writeSpec } from '../../src/etcd/spec.js';
import { loadClusterState } from '../../src/etcd/store.js';
import { readFileBackendDir } from '../../src/backends/file.js';
import { spawnAgent, type AgentLogLine, type AgentProcess } from '../../src/localcluster/agentProcess.js';
import { startTcpProxy, type TcpProxy } from '../../src/localcluster/tcpProxy.js';
import { startObserver, type FullObserver } from '../../src/invariant/observer.js';

export const VIP = '10.77.0.100';

export function specYaml(buckets: number, k = 4, intervalMs = 200): string {
  return `vips:
  - address: ${VIP}
    interface: eth0
    buckets: ${buckets}
    hashMode: sourceip
    seed: 0x5eed1234
rebalance:
  joinMovesPerInterval: ${k}
  intervalMs: ${intervalMs}
`;
}

export interface HarnessOptions {
  nodes: string[];
  ttl: number;
  buckets?: number;
  etcdMembers?: 1 | 3;
  fastElection?: boolean;
  /** Put a TCP proxy between these agents and etcd. */
  proxied?: string[];
  unownedBoundMs?: number;
  extraArgs?: string[];
  /** More arguments for one agent (after extraArgs). */
  argsFor?: (id: string) => string[];
  /** Environment for one agent (fault injection such as WATCH_LAG_ENV). */
  envFor?: (id: string) => NodeJS.ProcessEnv;
}

export interface Harness {
  etcd: LocalEtcd;
  ttl: number;
  client: Etcd3;
  keys: Keys;
  cluster: string;
  spec: ClusterSpec;
  /** Write a new spec (CAS on the current one); convergence checks follow it. */
  applySpec(yaml: string): Promise<void>;
  agents: Map<string, AgentProcess>;
  dirs: Map<string, string>;
  proxies: Map<string, TcpProxy>;
  observer: FullObserver;
  start(id: string): AgentProcess;
  agent(id: string): AgentProcess;
  /** Current claims of a VIP (default the first): bucket → owner (and create revision). */
  claims(vip?: string): Promise<Map<number, { owner: string; createRevision: string }>>;
  leader(): Promise<string | null>;
  backendHeld(id: string, vip?: string): Promise<Set<number>>;
  waitConverged(timeoutMs: number, live?: string[]): Promise<void>;
  stop(): Promise<void>;
}

let seq = 0;

/** What a test set up beside its harness (processes, dirs, proxies): undone after it, newest first. */
export const cleanups: (() => Promise<unknown>)[] = [];

/** For afterEach: run the test's cleanups, then stop its harness. */
export async function teardown(h: Harness | undefined): Promise<void> {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  await h?.stop();
}

export async function startHarness(o: HarnessOptions): Promise<Harness> {
  const base = await mkdtemp(join(tmpdir(), 'cipha-agent-'));
  const etcd = await startLocalEtcd({
    members: o.etcdMembers ?? 1,
    fastElection: o.fastElection ?? false,
    preferContainer: false,
  });
  const client = createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 2000 });
  const cluster = `t${process.pid}x${seq++}`;
  const keys = keysFor(cluster);
  const spec = parseClusterSpecYaml(specYaml(o.buckets ?? 12), 'test-spec.yaml');
  await writeSpec(client, keys, spec, { expectModRevision: 'absent' });
  const dirs = new Map<string, string>();
  for (const id of o.nodes) dirs.set(id, join(base, id));
  const proxies = new Map<string, TcpProxy>();
  const first = new URL(etcd.endpoints[0]!);
  for (const id of o.proxied ?? []) {
    proxies.set(id, await startTcpProxy({ host: first.hostname, port: Number(first.port) }));
  }
  const observer = await startObserver({
    endpoints: etcd.endpoints,
    cluster,
    backendDirs: Object.fromEntries(dirs),
    unownedBoundMs: o.unownedBoundMs ?? o.ttl * 1000 + 1000,
    pollMs: 10,
  });
  const agents = new Map<string, AgentProcess>();
  const h: Harness = {
    etcd,
    ttl: o.ttl,
    client,
    keys,
    cluster,
    spec,
    async applySpec(yaml) {
      const next = parseClusterSpecYaml(yaml, 'test-spec.yaml');
      const cur = await loadClusterState(client, keys);
      await writeSpec(client, keys, next, { expectModRevision: cur.spec?.modRevision ?? 'absent' });
      h.spec = next;
    },
    agents,
    dirs,
    proxies,
    observer,
    start(id) {
      let dir = dirs.get(id);
      if (!dir) {
        dir = join(base, id);
        dirs.set(id, dir);
        observer.addNode(id, dir);
      }
      const proxy = proxies.get(id);
      const endpoints = proxy ? [`http://127.0.0.1:${proxy.port}`] : etcd.endpoints;
      const a = spawnAgent({
        nodeId: id,
        endpoints,
        cluster,
        backendDir: dir,
        leaseTtlSeconds: o.ttl,
        extraArgs: [...(o.extraArgs ?? []), ...(o.argsFor?.(id) ?? [])],
        ...(o.envFor ? { env: o.envFor(id) } : {}),
        logFile: join(base, `${id}.log`),
      });
      agents.set(id, a);
      return a;
    },
    agent(id) {
      const a = agents.get(id);
      if (!a) throw new Error(`no agent ${id}`);
      return a;
    },
    async claims(vip = VIP) {
      const st = await loadClusterState(client, keys);
      const out = new Map<number, { owner: string; createRevision: string }>();
      for (const [b, c] of st.claims.get(vip) ?? []) out.set(b, { owner: c.owner, createRevision: c.createRevision });
      return out;
    },
    async leader() {
      return (await loadClusterState(client, keys)).leader;
    },
    async backendHeld(id, vip = VIP) {
      const held = await readFileBackendDir(dirs.get(id)!, Date.now());
      return held.get(vip) ?? new Set();
    },
    async waitConverged(timeoutMs, live) {
      const until = Date.now() + timeoutMs;
      let why = '';
      while (Date.now() < until) {
        why = await convergenceProblem(h, live ?? [...agents.keys()].filter((id) => agents.get(id)!.exited() === null));
        if (why === '') return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`not converged after ${timeoutMs} ms: ${why}`);
    },
    async stop() {
      for (const a of agents.values()) a.signal('SIGKILL');
      await Promise.all([...agents.values()].map((a) => a.waitExit(5000).catch(() => undefined)));
      await observer.stop().catch(() => undefined);
      for (const p of proxies.values()) await p.close();
      client.close();
      await etcd.stop();
      if (!process.env.CIPHA_KEEP_LOGS) await rm(base, { recursive: true, force: true });
    },
  };
  for (const id of o.nodes) h.start(id);
  return h;
}

/** '' when every bucket of every VIP is assigned to a live node, claimed by it, held in its backend only, and
 *  balanced; and nothing of a VIP outside the spec is claimed or held. */
async function convergenceProblem(h: Harness, live: string[]): Promise<string> {
  const st = await loadClusterState(h.client, h.keys);
  const inSpec = new Set(h.spec.vips.map((v) => v.address));
  for (const vip of st.claims.keys()) if (!inSpec.has(vip)) return `claims left for removed VIP ${vip}`;
  for (const id of h.dirs.keys()) {
    for (const [vip, s] of await readFileBackendDir(h.dirs.get(id)!, Date.now())) {
      if (!inSpec.has(vip) && s.size > 0) return `${id} still holds removed VIP ${vip}`;
    }
  }
  for (const v of h.spec.vips) {
    const buckets = v.buckets;
    const assign = st.assignments.get(v.address)?.value.owners ?? {};
    const claims = st.claims.get(v.address) ?? new Map();
    const held = new Map<string, Set<number>>();
    for (const id of h.dirs.keys()) held.set(id, await h.backendHeld(id, v.address));
    const counts = new Map(live.map((id) => [id, 0]));
    for (let b = 1; b <= buckets; b++) {
      const a = assign[String(b)];
      if (!a || !live.includes(a)) return `${v.address} bucket ${b} assigned to ${a ?? 'nobody'}`;
      if (claims.get(b)?.owner !== a)
        return `${v.address} bucket ${b} claimed by ${claims.get(b)?.owner ?? 'nobody'}, assigned ${a}`;
      const holders = [...held].filter(([, s]) => s.has(b)).map(([id]) => id);
      if (holders.length !== 1 || holders[0] !== a)
        return `${v.address} bucket ${b} held by [${holders.join(',')}], assigned ${a}`;
      counts.set(a, (counts.get(a) ?? 0) + 1);
    }
    for (const b of claims.keys()) if (b > buckets) return `${v.address} bucket ${b} beyond ${buckets} still claimed`;
    for (const [id, s] of held)
      for (const b of s) if (b > buckets) return `${id} holds ${v.address} bucket ${b} beyond ${buckets}`;
    const ideal = buckets / live.length;
    for (const [id, c] of counts)
      if (Math.abs(c - ideal) >= 1) return `${v.address}: ${id} holds ${c}, ideal ${ideal.toFixed(2)}`;
  }
  return '';
}

export function events(a: AgentProcess, name: string): AgentLogLine[] {
  return a.logs().filter((l) => l.event === name);
}

export function logTime(l: AgentLogLine): number {
  return typeof l.time === 'string' ? Date.parse(l.time) : l.rxAt;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` every 50 ms until it returns something truthy; throws naming `what` after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  timeoutMs: number,
  pollMs = 50,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(pollMs);
  }
}

/** A valid `nodes/<id>` value, for tests that write node keys from outside. */
export const nodeValue = JSON.stringify({
  v: 1,
  address: 'x',
  weight: 1,
  draining: false,
  version: '0',
  startedAt: new Date().toISOString(),
});

/**
 * An agent on the exec backend whose hook is a stand-in kernel: it keeps what it was told in a file. Markers make
 * it refuse clears only (`failClears`) or every change (`failAll`).
 */
export interface ExecNode {
  agent: AgentProcess;
  dir: string;
  held(): Promise<Set<number>>;
  failClears(): Promise<void>;
  failAll(): Promise<void>;
  stop(): Promise<void>;
}

const EXEC_HOOK = `#!/bin/sh
d="$(dirname "$0")"
[ -e "$d/fail-all" ] && { echo "refused (test)" >&2; exit 1; }
if [ "$CLUSTERIP_HA_OP" = clear ] && [ -e "$d/fail-clear" ]; then echo "clear refused (test)" >&2; exit 1; fi
printf '%s\\n' "$CLUSTERIP_HA_HELD" > "$d/kernel.tmp" && mv "$d/kernel.tmp" "$d/kernel"
`;

export async function startExecNode(
  h: Harness,
  id: string,
  o: { endpoints?: string[]; extraArgs?: string[] } = {},
): Promise<ExecNode> {
  const dir = await mkdtemp(join(tmpdir(), `cipha-exec-${id}-`));
  const hook = join(dir, 'hook.sh');
  await writeFile(hook, EXEC_HOOK);
  await chmod(hook, 0o755);
  const agent = spawnAgent({
    nodeId: id,
    endpoints: o.endpoints ?? h.etcd.endpoints,
    cluster: h.cluster,
    backend: 'exec',
    stateDir: join(dir, 'state'),
    leaseTtlSeconds: h.ttl,
    extraArgs: ['--exec-command', hook, '--exec-timeout', '2000', ...(o.extraArgs ?? [])],
  });
  return {
    agent,
    dir,
    async held() {
      const text = await readFile(join(dir, 'kernel'), 'utf8').catch(() => '');
      return new Set(
        text
          .trim()
          .split(',')
          .filter(Boolean)
          .map((b) => Number(b)),
      );
    },
    failClears: () => writeFile(join(dir, 'fail-clear'), ''),
    failAll: () => writeFile(join(dir, 'fail-all'), ''),
    async stop() {
      if (agent.exited() === null) agent.signal('SIGKILL');
      await agent.waitExit(5000).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
