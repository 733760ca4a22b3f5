import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AgentEvent } from '../agent/events.js';
import { attachHealthMetrics } from './healthMetrics.js';
import type { ClusterState } from '../etcd/store.js';
import { clusterView, type ClusterView } from './clusterView.js';

// Every AgentEvent becomes metrics here (and nowhere else), so the names below are the whole metric surface of
// an agent. Labels are closed sets (reasons) or VIPs (few), never buckets or node ids.

export interface AgentEventSource {
  on(e: 'event', l: (ev: AgentEvent) => void): unknown;
}

export interface AgentMetrics {
  registry: Registry;
  /** Feed one event by hand (what the listener does); for callers without an emitter. */
  observe(ev: AgentEvent): void;
}

const P = 'clusterip_ha_';
// Failover is bounded by the lease TTL (1–10 s typical); handoffs are milliseconds.
const FAILOVER_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15, 30];
const OP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export interface AgentMetricsOptions {
  /** Monotonic clock in ms (tests pass a fake one). */
  now?: () => number;
  /** Also export prom-client's process and Node.js metrics (CPU, memory, nodejs_eventloop_lag_*); default true. */
  processMetrics?: boolean;
  /** The agent's picture of the cluster, for the clusterip_ha_cluster_* gauges; undefined before it has one. */
  view?: () => ClusterState | undefined;
}

export function attachAgentMetrics(
  events: AgentEventSource,
  registry: Registry = new Registry(),
  opts: AgentMetricsOptions = {},
): AgentMetrics {
  const now = opts.now ?? (() => performance.now());
  // The agent's own loopDelay events come from its sampler; these are measured independently by prom-client.
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  const held = new Map<string, Set<number>>();
  let lastAckAt: number | undefined;
  let headroomAtAckMs = 0;

  const bucketsOwned = new Gauge({
    name: `${P}buckets_owned`,
    help: 'Buckets this node holds a claim for and applied to its backend, per VIP',
    labelNames: ['vip'],
    registers: [registry],
  });
  const isLeader = new Gauge({
    name: `${P}is_leader`,
    help: '1 while this node is the elected leader',
    registers: [registry],
  });
  const fenced = new Gauge({
    name: `${P}fenced`,
    help: '1 while this node is fenced (holds nothing, acquires nothing)',
    registers: [registry],
  });
  const backendReady = new Gauge({
    name: `${P}backend_ready`,
    help: '1 while the backend is set up for the spec; 0 while it is not (the node takes no buckets then)',
    registers: [registry],
  });
  backendReady.set(1);
  const specGeneration = new Gauge({
    name: `${P}spec_generation`,
    help: 'Generation of the spec the kernel runs (0 before the first); a node behind the others acquires nothing',
    registers: [registry],
  });
  new Gauge({
    name: `${P}keepalive_ack_age_seconds`,
    help: 'Time since the last acknowledged lease keepalive (-1 before the first)',
    registers: [registry],
    collect() {
      this.set(lastAckAt === undefined ? -1 : (now() - lastAckAt) / 1000);
    },
  });
  new Gauge({
    name: `${P}fence_headroom_seconds`,
    help: 'Time left before the fence deadline fires without a new keepalive ack (negative: past it)',
    registers: [registry],
    collect() {
      this.set(lastAckAt === undefined ? 0 : (headroomAtAckMs - (now() - lastAckAt)) / 1000);
    },
  });
  if (opts.view) registerClusterGauges(registry, opts.view);
  const leaseTtl = new Gauge({
    name: `${P}lease_ttl_seconds`,
    help: 'TTL etcd granted the current lease',
    registers: [registry],
  });
  const keepaliveRtt = new Histogram({
    name: `${P}keepalive_rtt_seconds`,
    help: 'Round trip of lease keepalives',
    buckets: OP_BUCKETS,
    registers: [registry],
  });
  const sessions = new Counter({
    name: `${P}sessions_started_total`,
    help: 'Leases granted (agent start and re-registration after loss)',
    registers: [registry],
  });
  const leasesLost = new Counter({
    name: `${P}leases_lost_total`,
    help: 'Leases found expired',
    registers: [registry],
  });
  const fences = new Counter({
    name: `${P}fences_total`,
    help: 'Times this node fenced, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  const acquired = new Counter({
    name: `${P}claims_acquired_total`,
    help: 'Buckets acquired (claim written and applied)',
    labelNames: ['vip'],
    registers: [registry],
  });
  const released = new Counter({
    name: `${P}claims_released_total`,
    help: 'Buckets released, by reason',
    labelNames: ['vip', 'reason'],
    registers: [registry],
  });
  const blocked = new Counter({
    name: `${P}acquire_blocked_total`,
    help: 'Acquire attempts that could not proceed, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  const acquireDuration = new Histogram({
    name: `${P}acquire_duration_seconds`,
    help: 'From deciding to acquire to the bucket applied in the backend',
    buckets: OP_BUCKETS,
    registers: [registry],
  });
  const releaseDuration = new Histogram({
    name: `${P}release_duration_seconds`,
    help: 'From deciding to release to the claim deleted, by reason',
    labelNames: ['reason'],
    buckets: OP_BUCKETS,
    registers: [registry],
  });
  const failover = new Histogram({
    name: `${P}failover_duration_seconds`,
    help: 'How long an acquired bucket had no claim (from its claim vanishing on our watch) until this node held it',
    buckets: FAILOVER_BUCKETS,
    registers: [registry],
  });
  const backendErrors = new Counter({
    name: `${P}backend_errors_total`,
    help: 'Backend operations that failed, by operation (op="expired": held buckets that ran out before a refresh)',
    labelNames: ['op'],
    registers: [registry],
  });
  const etcdErrors = new Counter({
    name: `${P}etcd_errors_total`,
    help: 'etcd operations that failed, by operation',
    labelNames: ['op'],
    registers: [registry],
  });
  const badValues = new Counter({
    name: `${P}bad_values_total`,
    help: 'etcd values that failed validation and were ignored',
    registers: [registry],
  });
  const loopDelay = new Gauge({
    name: `${P}event_loop_delay_seconds`,
    help: 'Event-loop delay over the last sampling window',
    labelNames: ['stat'],
    registers: [registry],
  });
  const assignments = new Counter({
    name: `${P}assignments_written_total`,
    help: 'Assignments this node wrote as leader',
    labelNames: ['vip'],
    registers: [registry],
  });
  const assignRejected = new Counter({
    name: `${P}assignments_rejected_total`,
    help: 'Assignment writes refused',
    labelNames: ['reason'],
    registers: [registry],
  });
  const moves = new Counter({
    name: `${P}planned_moves_total`,
    help: 'Bucket moves planned by this leader, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  const planDuration = new Histogram({
    name: `${P}plan_duration_seconds`,
    help: 'Planner run time',
    buckets: OP_BUCKETS,
    registers: [registry],
  });
  const assignLatency = new Histogram({
    name: `${P}assignment_latency_seconds`,
    help: 'From the change that triggered a plan to the assignment written',
    buckets: OP_BUCKETS,
    registers: [registry],
  });
  const drains = new Counter({ name: `${P}drain_requests_total`, help: 'Drain requests seen', registers: [registry] });
  const restarts = new Counter({
    name: `${P}restarts_total`,
    help: 'SIGHUP restarts: planned (hitless) or drained instead, by reason',
    labelNames: ['mode', 'reason'],
    registers: [registry],
  });
  const swept = new Counter({
    name: `${P}swept_keys_total`,
    help: 'Keys the leader deleted because they blocked the cluster, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });

  const health = attachHealthMetrics(registry);
  const setOwned = (vip: string) => bucketsOwned.set({ vip }, held.get(vip)?.size ?? 0);

  const observe = (ev: AgentEvent): void => {
    switch (ev.event) {
      case 'sessionStarted':
        sessions.inc();
        leaseTtl.set(ev.ttlSeconds);
        return;
      case 'keepaliveAck':
        lastAckAt = now();
        headroomAtAckMs = ev.headroomMs;
        keepaliveRtt.observe(ev.rttMs / 1000);
        return;
      case 'fenced':
        fenced.set(1);
        fences.inc({ reason: ev.reason });
        // A fence drops every bucket from the kernel at once.
        for (const vip of held.keys()) {
          held.get(vip)!.clear();
          setOwned(vip);
        }
        return;
      case 'unfenced':
        fenced.set(0);
        return;
      case 'leaseLost':
        leasesLost.inc();
        return;
      case 'elected':
        isLeader.set(1);
        return;
      case 'deposed':
        isLeader.set(0);
        health.notLeader();
        return;
      case 'assignmentWritten':
        assignments.inc({ vip: ev.vip });
        for (const m of ev.moves) moves.inc({ reason: m.reason });
        planDuration.observe(ev.planMs / 1000);
        assignLatency.observe(ev.sinceTriggerMs / 1000);
        return;
      case 'assignmentRejected':
        assignRejected.inc({ reason: ev.reason });
        return;
      case 'acquired': {
        const s = held.get(ev.vip) ?? new Set<number>();
        held.set(ev.vip, s);
        s.add(ev.bucket);
        setOwned(ev.vip);
        acquired.inc({ vip: ev.vip });
        acquireDuration.observe(ev.durationMs / 1000);
        if (ev.unownedMs !== undefined) failover.observe(ev.unownedMs / 1000);
        return;
      }
      case 'acquireBlocked':
        blocked.inc({ reason: ev.reason });
        return;
      case 'released':
        held.get(ev.vip)?.delete(ev.bucket);
        setOwned(ev.vip);
        released.inc({ vip: ev.vip, reason: ev.reason });
        releaseDuration.observe({ reason: ev.reason }, ev.durationMs / 1000);
        return;
      case 'backendError':
        backendErrors.inc({ op: ev.op });
        return;
      case 'kernelExpired':
        for (const b of ev.buckets) held.get(ev.vip)?.delete(b);
        setOwned(ev.vip);
        backendErrors.inc({ op: 'expired' }, ev.buckets.length);
        return;
      case 'badValue':
        badValues.inc();
        return;
      case 'etcdError':
        etcdErrors.inc({ op: ev.op });
        return;
      case 'loopDelay':
        loopDelay.set({ stat: 'p99' }, ev.p99Ms / 1000);
        loopDelay.set({ stat: 'max' }, ev.maxMs / 1000);
        return;
      case 'drainRequested':
        drains.inc();
        return;
      case 'swept':
        swept.inc({ reason: ev.reason });
        return;
      case 'adoptFailed':
      case 'previousRevoked':
        return;
      case 'fenceWorkerDied':
        backendErrors.inc({ op: 'fenceWorker' });
        return;
      case 'restart':
        restarts.inc({ mode: ev.mode, reason: ev.reason });
        return;
      case 'stateError':
        return;
      case 'readiness':
        backendReady.set(ev.ready ? 1 : 0);
        return;
      case 'specApplied':
        specGeneration.set(ev.generation);
        return;
      case 'shutdown':
        if (ev.phase === 'released' || ev.phase === 'done') isLeader.set(0);
        return;
      case 'checkResult':
      case 'checkTransition':
      case 'maintenance':
      case 'healthDrain':
      case 'healthPanic':
        health.observe(ev);
        return;
      default: {
        const never: never = ev;
        void never;
      }
    }
  };

  events.on('event', observe);
  return { registry, observe };
}

/** Gauges read from the agent's picture at scrape time (deploy/prometheus/ alerts on them). */
function registerClusterGauges(registry: Registry, view: () => ClusterState | undefined): void {
  const read = () => {
    const s = view();
    return s ? clusterView(s) : undefined;
  };
  new Gauge({
    name: `${P}cluster_members`,
    help: 'Known members by state: up (live lease) or down (known, no lease: degraded until back or forgotten)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const v = read();
      if (!v) return;
      this.set({ state: 'up' }, v.up);
      this.set({ state: 'down' }, v.down);
    },
  });
  const single: [string, string, (v: ClusterView) => number][] = [
    ['cluster_eligible_nodes', 'Live nodes that can take buckets (not draining, ready, weight > 0)', (v) => v.eligible],
    ['cluster_fenced_nodes', 'Live nodes whose status says fenced', (v) => v.fenced],
    ['cluster_leader_present', '1 while the cluster has an elected leader', (v) => (v.leader ? 1 : 0)],
  ];
  for (const [name, help, pick] of single)
    new Gauge({
      name: `${P}${name}`,
      help,
      registers: [registry],
      collect() {
        const v = read();
        if (v) this.set(pick(v));
      },
    });
  new Gauge({
    name: `${P}cluster_unowned_buckets`,
    help: 'Buckets of a VIP without a claim: their clients are black-holed',
    labelNames: ['vip'],
    registers: [registry],
    collect() {
      const v = read();
      if (!v) return;
      this.reset();
      for (const [vip, n] of v.unowned) this.set({ vip }, n);
    },
  });
}
