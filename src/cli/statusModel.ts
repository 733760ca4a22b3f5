import type { ClusterState } from '../etcd/store.js';
import type { HealthStatusValue } from '../etcd/values.js';
import { decidePanic } from '../health/panic.js';

// `status` as data: the stable JSON document (docs/status-json.md) built from one decoded ClusterState, with
// the anomalies found in it. Pure (no etcd, no clock) so every anomaly rule is unit-tested.

export const STATUS_SCHEMA_VERSION = 1;

export type AnomalyKind =
  | 'noSpec' // nothing applied yet: the cluster serves no VIP
  | 'noNodes' // no live agent
  | 'noLeader' // live agents but no leader: nothing reassigns buckets
  | 'unowned' // a bucket nobody claims: its clients are black-holed
  | 'unassigned' // the leader assigned nobody though live nodes exist
  | 'claimNotAssigned' // claim owner differs from the assignment (a move in flight, or stuck)
  | 'backendNotClaim' // what a backend holds differs from the claim (kernel and etcd disagree)
  | 'doubleBackend' // two backends hold the same bucket: clients get resets / double replies
  | 'fenced' // a node fenced itself: it holds nothing
  | 'backendError' // a node's last backend operation failed
  | 'drainPending' // a draining node still owns buckets
  | 'notReady' // a live node whose backend could not be set up: it takes no buckets
  | 'unhealthy' // a live node drained by its service checks or maintenance file
  | 'healthPanic' // too few healthy nodes: failing ones keep serving (panic threshold, minHealthyNodes)
  | 'nodeDown' // a known member (members/<id>) without a live lease: capacity is lost
  | 'multicastFailed' // a node could not put a cluster MAC on its interface's multicast list: a real NIC drops the VIP
  | 'badValue'; // a value under the prefix failed validation and is ignored

/** error: unhealthy (`--check` exit 3); degraded: serving with less capacity (exit 4); warning: informational. */
export type Severity = 'error' | 'degraded' | 'warning';

export type Health = 'healthy' | 'degraded' | 'unhealthy';

/**
 * How long each kind may last before it counts (docs/status-json.md): states the protocol passes through are
 * not anomalies until they outlast this. A handoff (claimNotAssigned), a backend one watch hop behind its claim
 * or a status write behind a handoff (backendNotClaim, doubleBackend), start-up (notReady until the node's watch
 * saw its registration, unowned until the first claims), a failover (unowned within the lease TTL), an election.
 */
export const ANOMALY_GRACE_MS: Record<AnomalyKind, number> = {
  noSpec: 0,
  noNodes: 0,
  noLeader: 10_000,
  unowned: 10_000,
  unassigned: 10_000,
  claimNotAssigned: 5_000,
  backendNotClaim: 3_000,
  doubleBackend: 3_000,
  fenced: 5_000,
  backendError: 5_000,
  drainPending: 0,
  notReady: 5_000,
  // A health drain or the panic threshold is a decision already held for fall × interval (and the hold).
  unhealthy: 0,
  healthPanic: 0,
  nodeDown: 0,
  multicastFailed: 5_000,
  badValue: 0,
};

export interface Anomaly {
  kind: AnomalyKind;
  severity: Severity;
  /** How long it may last before it counts; 0 = at once (an unowned bucket nobody can take has none). */
  graceMs: number;
  /** How long this command has seen it (0 on its first picture). */
  seenForMs: number;
  vip?: string;
  bucket?: number;
  node?: string;
  detail: string;
}

export type NodeState = 'up' | 'down';

export interface NodeStatus {
  id: string;
  /** up: its lease-bound node key exists; down: a known member (members/<id>) without one. */
  state: NodeState;
  /** Its lease-bound node key exists. */
  alive: boolean;
  /** It has a member record: it stays listed (DOWN) when it dies, until `clusterip-ha forget`. */
  member: boolean;
  draining: boolean;
  /** Why a live node takes no buckets (its backend could not be set up); null = ready. */
  notReady: string | null;
  weight: number | null;
  /** Seconds left on its lease as etcd reports it, null when unknown. */
  leaseTtlLeft: number | null;
  fenced: boolean | null;
  version: string | null;
  backendKind: string | null;
  lastError: string | null;
  lastErrorAt: string | null;
  lastAckAt: string | null;
  /** Lease TTL (s) the node asked for, and the one etcd granted; null when it does not publish them. */
  leaseTtlRequested: number | null;
  leaseTtlGranted: number | null;
  /** nftables: its cluster MAC subscriptions and their state; null when it does not subscribe. */
  multicast: string[] | null;
  /** Buckets it holds claims for, over every VIP. */
  claims: number;
  leader: boolean;
  /** Its service checks drain it: `unhealthy:<check>` or `maintenance`; null = healthy (or no checks). */
  health: string | null;
  /** Failing its checks but kept serving by the panic threshold. */
  panicKept: boolean;
  /** Its checks as its status key last reported them; null when it has none or publishes no status. */
  checks: HealthStatusValue['checks'] | null;
}

export interface PanicStatus {
  /** Failing nodes kept serving, in the order the leader picks them. */
  kept: string[];
  healthy: number;
  minHealthyNodes: number;
}

export interface BucketStatus {
  bucket: number;
  /** Claim owner in etcd, or null. */
  owner: string | null;
  /** The leader's assignment, or null. */
  assigned: string | null;
  /** The node whose status reports holding it (the first, by id, when several do), or null. */
  backend: string | null;
}

export interface VipStatus {
  address: string;
  interface: string | null;
  bucketCount: number;
  hashMode: string | null;
  epoch: number | null;
  buckets: BucketStatus[];
}

export interface StatusReport {
  schema: typeof STATUS_SCHEMA_VERSION;
  cluster: string;
  revision: string;
  healthy: boolean;
  health: Health;
  leader: string | null;
  specGeneration: number | null;
  /** The panic threshold is holding failing nodes in service; null when not. */
  panic: PanicStatus | null;
  /** Anomalies that count: past their grace. */
  anomalies: Anomaly[];
  /** Anomalies still within their grace (a handoff, start-up, a failover in progress). */
  settling: Anomaly[];
  nodes: NodeStatus[];
  vips: VipStatus[];
}

export interface StatusInput {
  cluster: string;
  state: ClusterState;
  /** lease id (decimal) → seconds left; absent = unknown, -1 = expired. */
  leaseTtls?: ReadonlyMap<string, number>;
}

const byId = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export function buildStatus({ cluster, state, leaseTtls }: StatusInput): StatusReport {
  const anomalies: Anomaly[] = [];
  const add = (a: Omit<Anomaly, 'graceMs' | 'seenForMs'> & { graceMs?: number }): void => {
    anomalies.push({ ...a, graceMs: a.graceMs ?? ANOMALY_GRACE_MS[a.kind], seenForMs: 0 });
  };
  const spec = state.spec?.spec ?? null;

  // Nodes: every id known from any family, so a dead node that still has claims or assignments shows up.
  const ids = new Set<string>([...state.nodes.keys(), ...state.statuses.keys(), ...state.members.keys()]);
  for (const m of state.claims.values()) for (const c of m.values()) ids.add(c.owner);
  for (const a of state.assignments.values()) for (const o of Object.values(a.value.owners)) ids.add(o);
  const claimCount = new Map<string, number>();
  for (const m of state.claims.values())
    for (const c of m.values()) claimCount.set(c.owner, (claimCount.get(c.owner) ?? 0) + 1);

  // The leader's own rule (src/health/panic.ts), so status names the nodes the leader keeps serving.
  const minHealthyNodes = spec?.minHealthyNodes ?? 1;
  const panicDecision = decidePanic(
    [...state.nodes].map(([id, n]) => ({
      id,
      weight: n.value.weight,
      draining: n.value.draining,
      notReady: n.value.notReady !== undefined,
      health: n.value.health,
    })),
    minHealthyNodes,
  );
  const kept = new Set(panicDecision.panic ? panicDecision.kept : []);
  const nodes: NodeStatus[] = [...ids].sort(byId).map((id) => {
    const n = state.nodes.get(id);
    const s = state.statuses.get(id);
    const ttl = n ? leaseTtls?.get(n.lease) : undefined;
    return {
      id,
      state: n !== undefined ? 'up' : 'down',
      alive: n !== undefined,
      member: state.members.has(id),
      draining: n?.value.draining ?? false,
      notReady: n?.value.notReady ?? null,
      weight: n?.value.weight ?? null,
      leaseTtlLeft: ttl === undefined ? null : ttl,
      fenced: s?.fenced ?? null,
      version: n?.value.version ?? null,
      backendKind: s?.backend ?? null,
      lastError: s?.lastError ?? null,
      lastErrorAt: s?.lastErrorAt ?? null,
      lastAckAt: s?.lastAckAt ?? null,
      leaseTtlRequested: s?.leaseTtlRequested ?? null,
      leaseTtlGranted: s?.leaseTtlGranted ?? null,
      multicast: s?.multicast ?? null,
      claims: claimCount.get(id) ?? 0,
      leader: state.leader === id,
      health: n?.value.health ?? null,
      panicKept: kept.has(id),
      checks: s?.health?.checks ?? null,
    };
  });
  const alive = nodes.filter((n) => n.alive);
  const eligible = alive.filter(
    (n) => !n.draining && n.notReady === null && (n.health === null || n.panicKept) && (n.weight ?? 0) > 0,
  );

  if (!spec)
    add({
      kind: 'noSpec',
      severity: 'error',
      detail: 'no cluster spec applied: run `clusterip-ha apply -f cluster.yaml`',
    });
  if (alive.length === 0) add({ kind: 'noNodes', severity: 'error', detail: 'no live agent is registered' });
  else if (state.leader === null)
    add({
      kind: 'noLeader',
      severity: 'error',
      detail: 'agents are live but none leads: nothing reassigns buckets',
    });

  for (const n of nodes) {
    if (!n.alive && n.member)
      add({
        kind: 'nodeDown',
        severity: 'degraded',
        node: n.id,
        detail: `${n.id} is DOWN (known member without a lease): start it, or \`clusterip-ha forget ${n.id}\``,
      });
    if (n.fenced === true)
      add({ kind: 'fenced', severity: 'error', node: n.id, detail: `${n.id} is fenced and holds nothing` });
    const errNow = n.lastError !== null && (state.statuses.get(n.id)?.lastApplyAt ?? '') <= (n.lastErrorAt ?? '');
    if (errNow) add({ kind: 'backendError', severity: 'error', node: n.id, detail: `${n.id}: ${n.lastError}` });
    if (n.alive && n.notReady !== null)
      add({
        kind: 'notReady',
        severity: 'error',
        node: n.id,
        detail: `${n.id} takes no buckets: ${n.notReady}`,
      });
    if (n.alive && n.health !== null) {
      const down = (n.checks ?? []).filter((c) => c.state === 'down').map((c) => `${c.name}: ${c.last?.output ?? ''}`);
      add({
        kind: 'unhealthy',
        severity: 'warning',
        node: n.id,
        detail: `${n.id} ${n.panicKept ? 'fails its checks but is kept serving' : 'is drained'} (${n.health})${down.length > 0 ? `: ${down.join('; ')}` : ''}`,
      });
    }
    const failedMcast = (n.alive ? (n.multicast ?? []) : []).filter((m) => / failed( |$)/.test(m));
    if (failedMcast.length > 0)
      add({
        kind: 'multicastFailed',
        severity: 'error',
        node: n.id,
        detail: `${n.id}: ${failedMcast.join('; ')}`,
      });
    if (n.draining && n.claims > 0) {
      add({
        kind: 'drainPending',
        severity: 'warning',
        node: n.id,
        detail: `${n.id} is draining and still owns ${n.claims} bucket(s)`,
      });
    }
  }

  // Who each backend says it holds, per VIP and bucket.
  const backendHolders = new Map<string, Map<number, string[]>>();
  for (const [id, s] of [...state.statuses.entries()].sort(([a], [b]) => byId(a, b))) {
    if (!state.nodes.has(id)) continue; // a status without a live node is stale (same lease, so rare)
    for (const [vip, held] of Object.entries(s.held)) {
      let m = backendHolders.get(vip);
      if (!m) backendHolders.set(vip, (m = new Map()));
      for (const b of held) m.set(b, [...(m.get(b) ?? []), id]);
    }
  }

  const vipAddrs = new Set<string>([
    ...(spec?.vips.map((v) => v.address) ?? []),
    ...state.claims.keys(),
    ...state.assignments.keys(),
  ]);
  const vips: VipStatus[] = [...vipAddrs].sort(compareIp).map((address) => {
    const vs = spec?.vips.find((v) => v.address === address);
    const claims = state.claims.get(address);
    const assign = state.assignments.get(address);
    const holders = backendHolders.get(address);
    const count =
      vs?.buckets ??
      Math.max(0, ...(claims ? [...claims.keys()] : []), ...Object.keys(assign?.value.owners ?? {}).map(Number));
    const buckets: BucketStatus[] = [];
    for (let b = 1; b <= count; b++) {
      const owner = claims?.get(b)?.owner ?? null;
      const assigned = assign?.value.owners[String(b)] ?? null;
      const hs = holders?.get(b) ?? [];
      const backend = hs[0] ?? null;
      buckets.push({ bucket: b, owner, assigned, backend });
      const at = { vip: address, bucket: b };
      if (!vs) continue; // a VIP removed from the spec: its leftovers are reported once below
      // Dark: nobody serves its clients. With no node that can take it nothing will fix it, so no grace.
      if (owner === null)
        add({
          kind: 'unowned',
          severity: 'error',
          ...at,
          ...(eligible.length === 0 ? { graceMs: 0 } : {}),
          detail:
            eligible.length > 0
              ? `${address}#${b} has no owner`
              : `${address}#${b} has no owner and no live, undrained, ready node can take it`,
        });
      if (assigned === null && eligible.length > 0)
        add({
          kind: 'unassigned',
          severity: 'error',
          ...at,
          detail: `${address}#${b} is assigned to nobody`,
        });
      if (owner !== null && assigned !== null && owner !== assigned) {
        add({
          kind: 'claimNotAssigned',
          severity: 'error',
          ...at,
          node: owner,
          detail: `${address}#${b} is owned by ${owner} but assigned to ${assigned}`,
        });
      }
      if (hs.length > 1) {
        add({
          kind: 'doubleBackend',
          severity: 'error',
          ...at,
          detail: `${address}#${b} is held by the backends of ${hs.join(' and ')}`,
        });
      } else if (backend !== owner && (owner === null || state.statuses.has(owner))) {
        // Only judge a claim owner that publishes a status; an owner without one is reported as unknown, not wrong.
        add({
          kind: 'backendNotClaim',
          severity: 'error',
          ...at,
          ...(owner !== null ? { node: owner } : {}),
          detail: `${address}#${b}: claim says ${owner ?? 'nobody'}, backend of ${backend ?? 'nobody'} holds it`,
        });
      }
    }
    if (!vs && spec)
      add({
        kind: 'badValue',
        severity: 'warning',
        vip: address,
        detail: `${address} is not in the spec but still has claims or an assignment`,
      });
    return {
      address,
      interface: vs?.interface ?? null,
      bucketCount: count,
      hashMode: vs?.hashMode ?? null,
      epoch: assign?.value.epoch ?? null,
      buckets,
    };
  });

  if (panicDecision.panic)
    add({
      kind: 'healthPanic',
      severity: 'error',
      detail: `panic threshold: ${panicDecision.healthy} healthy node(s) < minHealthyNodes ${minHealthyNodes}; keeping failing ${panicDecision.kept.join(', ')} serving`,
    });

  for (const bv of state.badValues) add({ kind: 'badValue', severity: 'warning', detail: `${bv.key}: ${bv.error}` });

  anomalies.sort((a, b) => severityRank(a.severity) - severityRank(b.severity));
  const health = healthOf(anomalies);
  return {
    schema: STATUS_SCHEMA_VERSION,
    cluster,
    revision: state.revision,
    healthy: health === 'healthy',
    health,
    leader: state.leader,
    specGeneration: state.spec?.generation ?? null,
    panic: panicDecision.panic ? { kept: panicDecision.kept, healthy: panicDecision.healthy, minHealthyNodes } : null,
    anomalies,
    settling: [],
    nodes,
    vips,
  };
}

const severityRank = (s: Severity) => (s === 'error' ? 0 : s === 'degraded' ? 1 : 2);

function healthOf(counted: readonly Anomaly[]): Health {
  if (counted.some((a) => a.severity === 'error')) return 'unhealthy';
  if (counted.some((a) => a.severity === 'degraded')) return 'degraded';
  return 'healthy';
}

/** One anomaly's identity across pictures. */
export const anomalyKey = (a: Anomaly): string => `${a.kind}|${a.vip ?? ''}|${a.bucket ?? ''}|${a.node ?? ''}`;

/**
 * Judge a raw report (every anomaly counts, as buildStatus returns it) against what this observer saw before:
 * `firstSeen` (anomaly key → ms) is updated in place, an anomaly counts once it was seen for its grace, and the
 * rest is `settling`. Pure: the caller owns the clock and the map.
 */
export function settle(raw: StatusReport, firstSeen: Map<string, number>, nowMs: number): StatusReport {
  const all = [...raw.anomalies, ...raw.settling];
  const present = new Set<string>();
  const counted: Anomaly[] = [];
  const settling: Anomaly[] = [];
  for (const a of all) {
    const k = anomalyKey(a);
    present.add(k);
    const since = firstSeen.get(k) ?? nowMs;
    firstSeen.set(k, since);
    const judged = { ...a, seenForMs: nowMs - since };
    (judged.seenForMs >= a.graceMs ? counted : settling).push(judged);
  }
  for (const k of [...firstSeen.keys()]) if (!present.has(k)) firstSeen.delete(k);
  const health = healthOf(counted);
  return { ...raw, anomalies: counted, settling, health, healthy: health === 'healthy' };
}

/** Ms until the next settling anomaly would count (null when none settles). */
export function nextSettleInMs(r: StatusReport): number | null {
  let best: number | null = null;
  for (const a of r.settling) {
    const left = Math.max(0, a.graceMs - a.seenForMs);
    best = best === null ? left : Math.min(best, left);
  }
  return best;
}

export function compareIp(a: string, b: string): number {
  const n = (s: string) => s.split('.').reduce((acc, p) => acc * 256 + (Number(p) || 0), 0);
  return n(a) - n(b) || byId(a, b);
}
