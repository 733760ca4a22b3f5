import { readFileSync } from 'node:fs';
import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';
import { ExponentialBackoff, handleWhen, noop, retry, type IBackoff } from 'cockatiel';
import type { EtcdConfig } from '../config/types.js';

// etcd3 as DESIGN.md §10 says: its default per-host circuit breaker (5 s open after 3 failures) also blocks
// keepalives and watch reconnects, which would turn a 1 s blip into a fence. No host breaker, two quick global
// retries, a deadline on every unary call, and fast watch reconnects.
/** grpc reconnect backoff towards an etcd endpoint that went away (ms). */
export const RECONNECT_BACKOFF_MS = { initial: 100, max: 1000 } as const;

export function etcdClientOptions(cfg: EtcdConfig): IOptions {
  const opts: IOptions = {
    hosts: cfg.endpoints,
    dialTimeout: Math.min(cfg.requestTimeoutMs, 2000),
    // grpc-js shares one subchannel per address process-wide, and its reconnect backoff (1 s growing ×1.6 to
    // 120 s) survives the client resets etcd3 does on errors: after a 3 s outage the first reconnect could come
    // seconds after etcd is back, past the lease. Retry a lost endpoint at least every second instead.
    grpcOptions: {
      'grpc.initial_reconnect_backoff_ms': RECONNECT_BACKOFF_MS.initial,
      'grpc.min_reconnect_backoff_ms': RECONNECT_BACKOFF_MS.initial,
      'grpc.max_reconnect_backoff_ms': RECONNECT_BACKOFF_MS.max,
    },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + cfg.requestTimeoutMs }),
    faultHandling: {
      host: () => noop,
      global: retry(handleWhen(isRecoverableError), {
        maxAttempts: 2,
        backoff: new ExponentialBackoff({ initialDelay: 20, maxDelay: 200 }),
      }),
      // etcd3 calls `.next()` on this without a context, as cockatiel's backoff factories allow.
      watchBackoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 500 }) as unknown as IBackoff<unknown>,
    },
  };
  if (cfg.user !== undefined) opts.auth = { username: cfg.user, password: cfg.password ?? '' };
  if (cfg.ca !== undefined || cfg.cert !== undefined || cfg.key !== undefined) {
    opts.credentials = {
      rootCertificate: readFileSync(cfg.ca ?? '/etc/ssl/certs/ca-certificates.crt'),
      ...(cfg.cert !== undefined ? { certChain: readFileSync(cfg.cert) } : {}),
      ...(cfg.key !== undefined ? { privateKey: readFileSync(cfg.key) } : {}),
    };
  }
  return opts;
}

export function createEtcdClient(cfg: EtcdConfig): Etcd3 {
  return new Etcd3(etcdClientOptions(cfg));
}
