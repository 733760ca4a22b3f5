import { EventEmitter } from 'node:events';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { AgentEvent } from '../../src/agent/events.js';
import { attachAgentMetrics } from '../../src/metrics/agentMetrics.js';
import { INITIAL_HEALTH, nextHealth } from '../../src/metrics/health.js';
import { startMetricsServer } from '../../src/metrics/server.js';
import { parsePromText } from '../e2e/promText.js';

function setup() {
  const em = new EventEmitter();
  let t = 1000;
  const m = attachAgentMetrics(em, new Registry(), { now: () => t });
  const emit = (ev: AgentEvent) => em.emit('event', ev);
  const scrape = async () => parsePromText(await m.registry.metrics());
  return { emit, scrape, advance: (ms: number) => (t += ms), registry: m.registry };
}

describe('attachAgentMetrics', () => {
  it('tracks buckets owned per VIP through acquire, release and fence', async () => {
    const { emit, scrape } = setup();
    emit({ event: 'acquired', vip: '10.0.0.1', bucket: 1, durationMs: 4 });
    emit({ event: 'acquired', vip: '10.0.0.1', bucket: 2, durationMs: 6, unownedMs: 1800 });
    emit({ event: 'acquired', vip: '10.0.0.1', bucket: 2, durationMs: 6 }); // repeated: still one bucket
    emit({ event: 'acquired', vip: '10.0.0.2', bucket: 5, durationMs: 3 });
    let p = await scrape();
    expect(p.get('clusterip_ha_buckets_owned', { vip: '10.0.0.1' })).toBe(2);
    expect(p.get('clusterip_ha_buckets_owned', { vip: '10.0.0.2' })).toBe(1);
    expect(p.get('clusterip_ha_claims_acquired_total', { vip: '10.0.0.1' })).toBe(3);
    expect(p.get('clusterip_ha_failover_duration_seconds_count')).toBe(1);
    expect(p.get('clusterip_ha_failover_duration_seconds_sum')).toBeCloseTo(1.8);
    // 1.8 s falls in the 2 s bucket, not in the 1.5 s one.
    expect(p.get('clusterip_ha_failover_duration_seconds_bucket', { le: '1.5' })).toBe(0);
    expect(p.get('clusterip_ha_failover_duration_seconds_bucket', { le: '2' })).toBe(1);

    emit({ event: 'released', vip: '10.0.0.1', bucket: 1, reason: 'draining', durationMs: 12 });
    p = await scrape();
    expect(p.get('clusterip_ha_buckets_owned', { vip: '10.0.0.1' })).toBe(1);
    expect(p.get('clusterip_ha_claims_released_total', { vip: '10.0.0.1', reason: 'draining' })).toBe(1);
    expect(p.get('clusterip_ha_release_duration_seconds_count', { reason: 'draining' })).toBe(1);

    emit({ event: 'fenced', reason: 'deadlinePassed', buckets: 2, cleared: true });
    p = await scrape();
    expect(p.get('clusterip_ha_fenced')).toBe(1);
    expect(p.get('clusterip_ha_buckets_owned', { vip: '10.0.0.1' })).toBe(0);
    expect(p.get('clusterip_ha_buckets_owned', { vip: '10.0.0.2' })).toBe(0);
    expect(p.get('clusterip_ha_fences_total', { reason: 'deadlinePassed' })).toBe(1);
    emit({ event: 'unfenced', sameLease: true });
    expect((await scrape()).get('clusterip_ha_fenced')).toBe(0);
  });

  it('computes keepalive age and fence headroom at scrape time', async () => {
    const { emit, scrape, advance } = setup();
    let p = await scrape();
    expect(p.get('clusterip_ha_keepalive_ack_age_seconds')).toBe(-1);
    emit({ event: 'keepaliveAck', rttMs: 3, headroomMs: 1200 });
    advance(500);
    p = await scrape();
    expect(p.get('clusterip_ha_keepalive_ack_age_seconds')).toBeCloseTo(0.5);
    expect(p.get('clusterip_ha_fence_headroom_seconds')).toBeCloseTo(0.7);
    expect(p.get('clusterip_ha_keepalive_rtt_seconds_count')).toBe(1);
    advance(1000);
    expect((await scrape()).get('clusterip_ha_fence_headroom_seconds')).toBeCloseTo(-0.3);
  });

  it('maps leadership, errors, loop delay and leader events', async () => {
    const { emit, scrape } = setup();
    emit({ event: 'sessionStarted', leaseId: '1', ttlSeconds: 2 });
    emit({ event: 'elected', revision: '5' });
    emit({ event: 'backendError', op: 'apply', error: 'x', attempt: 1, willRetry: true });
    emit({ event: 'backendError', op: 'apply', error: 'x', attempt: 2, willRetry: false });
    emit({ event: 'etcdError', op: 'claim', error: 'deadline' });
    emit({ event: 'badValue', key: '/k', error: 'bad' });
    emit({ event: 'loopDelay', p99Ms: 12, maxMs: 40 });
    emit({ event: 'acquireBlocked', vip: 'v', bucket: 1, reason: 'heldByOther', holder: 'n2' });
    emit({
      event: 'assignmentWritten',
      vip: 'v',
      epoch: 3,
      moves: [
        { bucket: 1, from: 'n2', to: 'n1', reason: 'ownerDead' },
        { bucket: 2, from: null, to: 'n1', reason: 'unassigned' },
      ],
      planMs: 0.4,
      sinceTriggerMs: 9,
    });
    let p = await scrape();
    expect(p.get('clusterip_ha_is_leader')).toBe(1);
    expect(p.get('clusterip_ha_lease_ttl_seconds')).toBe(2);
    expect(p.get('clusterip_ha_sessions_started_total')).toBe(1);
    expect(p.get('clusterip_ha_backend_errors_total', { op: 'apply' })).toBe(2);
    expect(p.get('clusterip_ha_etcd_errors_total', { op: 'claim' })).toBe(1);
    expect(p.get('clusterip_ha_bad_values_total')).toBe(1);
    expect(p.get('clusterip_ha_event_loop_delay_seconds', { stat: 'max' })).toBeCloseTo(0.04);
    expect(p.get('clusterip_ha_acquire_blocked_total', { reason: 'heldByOther' })).toBe(1);
    expect(p.get('clusterip_ha_planned_moves_total', { reason: 'ownerDead' })).toBe(1);
    expect(p.get('clusterip_ha_planned_moves_total', { reason: 'unassigned' })).toBe(1);
    expect(p.get('clusterip_ha_assignments_written_total', { vip: 'v' })).toBe(1);
    emit({ event: 'deposed', reason: 'lease lost' });
    p = await scrape();
    expect(p.get('clusterip_ha_is_leader')).toBe(0);
    expect(p.types.get('clusterip_ha_failover_duration_seconds')).toBe('histogram');
  });
});

describe('health', () => {
  it('is ready only with a lease and not fenced, and stays down once shutting down', () => {
    let h = INITIAL_HEALTH;
    expect(h).toMatchObject({ live: true, ready: false });
    h = nextHealth(h, { event: 'sessionStarted', leaseId: '1', ttlSeconds: 2 });
    expect(h.ready).toBe(true);
    h = nextHealth(h, { event: 'fenced', reason: 'deadlinePassed', buckets: 0, cleared: true });
    expect(h).toMatchObject({ live: true, ready: false, reason: 'fenced' });
    h = nextHealth(h, { event: 'unfenced', sameLease: false });
    expect(h.ready).toBe(true);
    h = nextHealth(h, { event: 'shutdown', phase: 'draining' });
    h = nextHealth(h, { event: 'sessionStarted', leaseId: '2', ttlSeconds: 2 });
    expect(h).toMatchObject({ ready: false, reason: 'shuttingDown' });
  });
});

describe('startMetricsServer', () => {
  it('serves /metrics, /healthz and /readyz over real HTTP', async () => {
    const { emit, registry } = setup();
    let ready = false;
    const srv = await startMetricsServer({ host: '127.0.0.1', port: 0 }, registry, () => ({ live: true, ready }));
    try {
      emit({ event: 'acquired', vip: '10.0.0.9', bucket: 3, durationMs: 1 });
      const res = await fetch(`${srv.url}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      expect(parsePromText(await res.text()).get('clusterip_ha_buckets_owned', { vip: '10.0.0.9' })).toBe(1);
      expect((await fetch(`${srv.url}/healthz`)).status).toBe(200);
      expect((await fetch(`${srv.url}/readyz`)).status).toBe(503);
      ready = true;
      expect((await fetch(`${srv.url}/readyz`)).status).toBe(200);
      expect((await fetch(`${srv.url}/nope`)).status).toBe(404);
    } finally {
      await srv.close();
    }
    const off = await startMetricsServer('off', registry, () => ({ live: true, ready: true }));
    expect(off.url).toBeNull();
  });
});

describe('service health metrics', () => {
  it('check_up per check, transitions and flaps, durations by result, health drain and the panic gauge', async () => {
    const { emit, scrape } = setup();
    emit({ event: 'checkResult', check: 'web', ok: true, state: 'up', durationMs: 2, output: '' });
    let p = await scrape();
    expect(p.get('clusterip_ha_check_up', { check: 'web' })).toBe(1);
    emit({
      event: 'checkResult',
      check: 'web',
      ok: false,
      state: 'down',
      failure: 'refused',
      durationMs: 1,
      output: '',
    });
    emit({ event: 'checkTransition', check: 'web', state: 'down', flap: false, output: '' });
    emit({ event: 'healthDrain', change: 'drain', reason: 'unhealthy:web' });
    emit({ event: 'checkTransition', check: 'web', state: 'up', flap: true, output: '' });
    emit({ event: 'healthDrain', change: 'hold', reason: 'unhealthy:web', holdLeftMs: 300 });
    p = await scrape();
    expect(p.get('clusterip_ha_check_up', { check: 'web' })).toBe(1);
    expect(p.get('clusterip_ha_check_transitions_total', { check: 'web', to: 'down' })).toBe(1);
    expect(p.get('clusterip_ha_check_transitions_total', { check: 'web', to: 'up' })).toBe(1);
    expect(p.get('clusterip_ha_check_flaps_total', { check: 'web' })).toBe(1);
    expect(p.get('clusterip_ha_check_duration_seconds_count', { check: 'web', result: 'refused' })).toBe(1);
    expect(p.get('clusterip_ha_check_duration_seconds_count', { check: 'web', result: 'ok' })).toBe(1);
    expect(p.get('clusterip_ha_health_drained')).toBe(1);
    expect(p.get('clusterip_ha_health_drains_total', { change: 'hold' })).toBe(1);
    emit({ event: 'healthDrain', change: 'undrain' });
    expect((await scrape()).get('clusterip_ha_health_drained')).toBe(0);

    emit({ event: 'healthPanic', panic: true, kept: ['n1'], healthy: 0, minHealthyNodes: 1 });
    emit({ event: 'healthPanic', panic: true, kept: ['n1', 'n2'], healthy: 0, minHealthyNodes: 2 });
    p = await scrape();
    expect(p.get('clusterip_ha_health_panic_nodes')).toBe(2);
    expect(p.get('clusterip_ha_health_panics_total')).toBe(1);
    emit({ event: 'healthPanic', panic: false, kept: [], healthy: 2, minHealthyNodes: 2 });
    expect((await scrape()).get('clusterip_ha_health_panic_nodes')).toBe(0);
    // A deposed leader stops reporting the panic (the next leader reports it).
    emit({ event: 'healthPanic', panic: true, kept: ['n1'], healthy: 0, minHealthyNodes: 1 });
    emit({ event: 'deposed', reason: 'test' });
    expect((await scrape()).get('clusterip_ha_health_panic_nodes')).toBe(0);
  });
});
