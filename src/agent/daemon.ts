import type { NodeConfig } from '../config/types.js';
import { NodeIdInUseError } from '../errors.js';
import { healthLogLine } from '../health/log.js';
import { createLogger, type Logger } from '../log/logger.js';
import { RepeatFilter } from '../log/repeats.js';
import { Agent } from './agent.js';
import type { AgentEvent } from './events.js';
import * as m from '../metrics/index.js';

// `clusterip-ha agent`: the Agent plus logs (one line per event, fixed vocabulary), metrics and signals.
// First SIGTERM/SIGINT: graceful (drain, hand off, revoke) bounded by shutdownTimeoutMs. Second: release and
// exit at once.

export interface DaemonOptions {
  logger?: Logger;
}

type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';

/** One event → (level, op, fields). Pure, so the vocabulary is tested. */
export function logLineFor(e: AgentEvent): { level: Level; op: string; fields: Record<string, unknown>; msg: string } {
  switch (e.event) {
    case 'sessionStarted':
      return {
        level: 'info',
        op: 'lease',
        fields: { leaseId: e.leaseId, ttlSeconds: e.ttlSeconds, ...(e.adopted ? { adopted: true } : {}) },
        msg: e.adopted ? 'lease adopted from a planned restart' : 'lease granted',
      };
    case 'fenceWorkerDied':
      return {
        level: 'error',
        op: 'fence',
        fields: { error: e.error, reason: 'workerDied' },
        msg: 'fence worker died: draining and exiting',
      };
    case 'previousRevoked':
      return {
        level: 'info',
        op: 'lease',
        fields: { leaseId: e.leaseId, reason: 'earlierRun' },
        msg: 'revoked the lease of an earlier run of this node',
      };
    case 'adoptFailed':
      return {
        level: 'warn',
        op: 'lease',
        fields: { leaseId: e.leaseId, reason: 'leaseGone' },
        msg: 'the planned restart left a lease that is gone: fresh start',
      };
    case 'restart':
      return {
        level: e.mode === 'planned' ? 'info' : 'warn',
        op: 'shutdown',
        fields: { mode: e.mode, reason: e.reason, headroomMs: e.headroomMs },
        msg:
          e.mode === 'planned' ? 'exiting for a hitless restart' : `restart requested, draining instead (${e.reason})`,
      };

    case 'keepaliveAck':
      return {
        level: 'trace',
        op: 'lease',
        fields: { rttMs: e.rttMs, headroomMs: e.headroomMs },
        msg: 'keepalive acknowledged',
      };
    case 'leaseLost':
      return { level: 'warn', op: 'lease', fields: {}, msg: 'lease lost' };
    case 'fenced':
      return {
        level: 'warn',
        op: 'fence',
        fields: { reason: e.reason, buckets: e.buckets, cleared: e.cleared },
        msg: e.cleared ? 'fenced: every bucket released' : 'fenced: kernel clear not confirmed, retrying',
      };
    case 'unfenced':
      return { level: 'info', op: 'fence', fields: { sameLease: e.sameLease }, msg: 'unfenced' };
    case 'elected':
      return { level: 'info', op: 'election', fields: { revision: e.revision }, msg: 'elected leader' };
    case 'deposed':
      return { level: 'warn', op: 'election', fields: { reason: e.reason }, msg: 'no longer leader' };
    case 'assignmentWritten':
      return {
        level: 'info',
        op: 'assign',
        fields: {
          vip: e.vip,
          epoch: e.epoch,
          moveCount: e.moves.length,
          ...(e.moves.length <= 64 ? { moves: e.moves } : {}),
          planMs: e.planMs,
          sinceTriggerMs: e.sinceTriggerMs,
          ...(e.barrier ? { reason: e.barrier } : {}),
        },
        msg: e.barrier ? 'assignment emptied: new hash identity' : 'assignment written',
      };
    case 'assignmentRejected':
      return {
        level: 'warn',
        op: 'assign',
        fields: { vip: e.vip, reason: e.reason },
        msg: 'assignment write rejected',
      };
    case 'acquired':
      return {
        level: 'info',
        op: 'acquire',
        fields: {
          vip: e.vip,
          bucket: e.bucket,
          durationMs: e.durationMs,
          ...(e.unownedMs !== undefined ? { unownedMs: e.unownedMs } : {}),
          ...(e.claimRevision !== undefined ? { claimRevision: e.claimRevision } : {}),
        },
        msg: 'bucket acquired',
      };
    case 'acquireBlocked':
      return {
        level:
          e.reason === 'backendFailed' || e.reason === 'etcdError'
            ? 'warn'
            : e.reason === 'specStale'
              ? 'info'
              : 'debug',
        op: 'acquire',
        fields: {
          vip: e.vip,
          bucket: e.bucket,
          reason: e.reason,
          ...(e.holder !== undefined ? { holder: e.holder } : {}),
        },
        msg: 'acquire blocked',
      };
    case 'released':
      return {
        level: 'info',
        op: 'release',
        fields: {
          vip: e.vip,
          bucket: e.bucket,
          reason: e.reason,
          durationMs: e.durationMs,
          ...(e.handoff !== undefined ? { node: e.handoff } : {}),
        },
        msg: e.handoff !== undefined ? 'bucket handed off' : 'bucket released',
      };
    case 'backendError':
      return {
        level: e.willRetry ? 'warn' : 'error',
        op: 'backend',
        fields: { backendOp: e.op, error: e.error, attempt: e.attempt, willRetry: e.willRetry },
        msg: 'backend error',
      };
    case 'kernelExpired':
      return {
        level: 'warn',
        op: 'backend',
        fields: { vip: e.vip, buckets: e.buckets, reason: 'expiredBeforeRefresh' },
        msg: 'held buckets ran out in the backend before a refresh; re-adding',
      };
    case 'badValue':
      return {
        level: 'warn',
        op: 'etcd',
        fields: { key: e.key, error: e.error, reason: 'badValue' },
        msg: 'ignoring invalid value',
      };
    case 'etcdError':
      return { level: 'warn', op: 'etcd', fields: { etcdOp: e.op, error: e.error }, msg: 'etcd error' };
    case 'swept':
      return {
        level: 'warn',
        op: 'sweep',
        fields: { key: e.key, reason: e.reason, detail: e.detail },
        msg: 'deleted a key that blocked the cluster',
      };
    case 'loopDelay':
      return {
        level: e.maxMs > 100 ? 'warn' : 'debug',
        op: 'loop',
        fields: { p99Ms: e.p99Ms, maxMs: e.maxMs },
        msg: 'event loop delay',
      };
    case 'drainRequested':
      return { level: 'info', op: 'shutdown', fields: {}, msg: 'drain requested' };
    case 'stateError':
      return {
        level: 'error',
        op: 'state',
        fields: { stateOp: e.op, file: e.file, error: e.error },
        msg: 'local state not readable or writable',
      };
    case 'specApplied':
      return {
        level: 'info',
        op: 'spec',
        fields: { generation: e.generation, modRevision: e.modRevision },
        msg: `kernel runs spec generation ${e.generation}`,
      };
    case 'readiness':
      return e.ready
        ? { level: 'info', op: 'backend', fields: {}, msg: 'backend ready: taking buckets' }
        : {
            level: 'error',
            op: 'backend',
            fields: { reason: 'backendNotReady', error: e.reason },
            msg: 'backend not ready: registered as not assignable',
          };
    case 'shutdown':
      return { level: 'info', op: 'shutdown', fields: { reason: e.phase }, msg: `shutdown: ${e.phase}` };
    case 'checkResult':
    case 'checkTransition':
    case 'maintenance':
    case 'healthDrain':
    case 'healthPanic':
      return healthLogLine(e);
  }
}

export async function runAgentDaemon(cfg: NodeConfig, opts: DaemonOptions = {}): Promise<number> {
  const base = opts.logger ?? createLogger({ level: cfg.logLevel });
  const log = base.child({ node: cfg.nodeId });
  const agent = new Agent({ cfg });
  const repeats = new RepeatFilter();
  agent.on('event', (e: AgentEvent) => {
    const l = logLineFor(e);
    // Retried etcd errors repeat every backoff step: one line per kind and half-minute, with the count.
    const r = e.event === 'etcdError' ? repeats.check(`${e.op}|${e.error}`, Date.now()) : { log: true, repeated: 0 };
    if (r.log) {
      log[l.level](
        { op: l.op, event: e.event, ...l.fields, ...(r.repeated > 0 ? { repeated: r.repeated } : {}) },
        l.msg,
      );
    }
    // etcd raises a TTL below its minimum without an error: say so once per lease, loudly.
    if (e.event === 'sessionStarted' && e.ttlSeconds !== cfg.leaseTtlSeconds)
      log.warn(
        { op: 'lease', event: 'ttlRaised', requestedTtlSeconds: cfg.leaseTtlSeconds, ttlSeconds: e.ttlSeconds },
        `etcd granted a ${e.ttlSeconds} s lease for the ${cfg.leaseTtlSeconds} s asked (its minimum TTL): failover and fencing follow ${e.ttlSeconds} s`,
      );
  });

  const hurry = new AbortController();
  let signals = 0;
  let stopping: Promise<void> | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    log.info({ op: 'shutdown', event: 'signal', reason: sig, count: signals }, `received ${sig}`);
    if (signals === 1) {
      stopping = agent.shutdown({ timeoutMs: cfg.shutdownTimeoutMs, hurry: hurry.signal });
    } else {
      hurry.abort();
    }
  };
  // Another agent took our node id: no drain (our node key is not ours to rewrite), release and exit 1.
  agent.on('terminal', (why: string) => {
    log.fatal({ op: 'agent', event: 'terminal', reason: 'nodeIdInUse', error: why }, 'stopping: node id taken');
    process.stderr.write(`clusterip-ha agent: ${why}\n`);
    stopping ??= agent.stopNow();
  });
  // A fatal condition (the fence worker died): drain like a SIGTERM, then exit non-zero.
  agent.on('fatal', (why: string) => {
    log.error({ op: 'agent', event: 'fatal', reason: why }, 'fatal agent error, draining');
    stopping ??= agent.shutdown({ timeoutMs: cfg.shutdownTimeoutMs, hurry: hurry.signal });
  });
  // SIGHUP (systemctl reload): exit for a hitless restart; the unit's Restart=always starts the new binary.
  const onHangup = (): void => {
    log.info({ op: 'shutdown', event: 'signal', reason: 'SIGHUP' }, 'received SIGHUP');
    if (stopping !== null) return;
    signals++;
    stopping = agent.restartInPlace({ timeoutMs: cfg.shutdownTimeoutMs, hurry: hurry.signal }).then(() => undefined);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', onHangup);
  const onRejection = (err: unknown): void => {
    // A library promise nobody awaited: log it with what we know, never crash on it.
    log.error(
      { op: 'agent', event: 'unhandledRejection', error: String((err as Error)?.stack ?? err) },
      'unhandled rejection',
    );
  };
  process.on('unhandledRejection', onRejection);

  // After the signal handlers, so a SIGTERM while the server starts takes the normal shutdown path.
  let closeMetrics: () => Promise<void> = async () => undefined;
  if (cfg.metricsListen !== 'off') {
    try {
      const metrics = m.attachAgentMetrics(agent, undefined, {
        view: () => {
          try {
            return agent.state;
          } catch {
            return undefined; // before the agent's first read of etcd
          }
        },
      });
      const events = m.trackHealth(agent);
      const health = () =>
        m.withRegistration(events(), {
          leaseId: agent.sessionState.state === 'live' ? BigInt(agent.sessionState.leaseId).toString() : null,
          node: (() => {
            try {
              const n = agent.state.nodes.get(cfg.nodeId);
              return (
                n && {
                  lease: BigInt(n.lease).toString(),
                  ...(n.value.notReady !== undefined ? { notReady: n.value.notReady } : {}),
                }
              );
            } catch {
              return undefined;
            }
          })(),
        });
      const srv = await m.startMetricsServer(cfg.metricsListen, metrics.registry, health);
      closeMetrics = () => srv.close();
      log.info({ op: 'metrics', url: srv.url }, 'metrics listening');
    } catch (err) {
      log.warn({ op: 'metrics', error: (err as Error).message }, 'metrics not started');
    }
  }

  let code = 0;
  // Not awaited: a signal during start-up must not wait for a start() that may hang on an unreachable etcd.
  void agent.start().then(
    () => {
      if (signals === 0) {
        const detail = agent.describeBackend()?.detail ?? {};
        // Which kernel path the nftables backend took, and why not the library when it fell back.
        const path = detail.transport === undefined ? {} : { transport: detail.transport };
        const fallback = detail.transportFallback === undefined ? {} : { reason: detail.transportFallback };
        log.info(
          { op: 'agent', event: 'started', cluster: cfg.cluster, backend: cfg.backend.kind, ...path, ...fallback },
          'agent running',
        );
      }
    },
    (err: Error) => {
      if (signals === 0 && stopping === null) {
        log.fatal({ op: 'agent', event: 'startFailed', error: err.message }, 'agent failed to start');
        if (err instanceof NodeIdInUseError) process.stderr.write(`clusterip-ha agent: ${err.message}\n`);
        code = 1;
        stopping = agent.stopNow();
      }
    },
  );
  // Run until a signal started the shutdown, then wait for it, bounded: past the handoff time plus the
  // cleanup allowance we exit anyway (the backend's own expiry bounds what the kernel may still hold).
  while (stopping === null) await new Promise((r) => setTimeout(r, 200));
  const bound = shutdownBoundMs(cfg.shutdownTimeoutMs);
  const finished = await raceTimeout(stopping, bound);
  if (!finished) {
    log.error({ op: 'shutdown', event: 'timedOut', reason: 'shutdownBound', boundMs: bound }, 'shutdown hung');
    code = 1;
  }
  if (agent.failureReason !== null) {
    log.error({ op: 'shutdown', event: 'failure', reason: agent.failureReason }, 'agent stopped unclean');
    code = 1;
  }
  // http close waits for keep-alive scrapers: bounded.
  await raceTimeout(
    closeMetrics().catch(() => undefined),
    1000,
  );
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  process.off('SIGHUP', onHangup);
  process.off('unhandledRejection', onRejection);
  log.info({ op: 'shutdown', event: 'exit', code }, 'agent stopped');
  log.flush?.();
  return code;
}

/** Cleanup after the handoff window: fence (≤ 3 s), clear, revoke, watch, worker, backend, each bounded. */
export const SHUTDOWN_CLEANUP_MS = 10_000;

/** The longest a shutdown may take from the first signal to the exit. */
export function shutdownBoundMs(shutdownTimeoutMs: number): number {
  return shutdownTimeoutMs + SHUTDOWN_CLEANUP_MS;
}

/** True when p settled within ms (its rejection counts as settled). */
async function raceTimeout(p: Promise<unknown>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined;
  const timer = new Promise<false>((r) => (t = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      timer,
    ]);
  } finally {
    clearTimeout(t);
  }
}
