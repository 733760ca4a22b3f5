import { readFileSync } from 'node:fs';
import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';
import { ExponentialBackoff, handleWhen, noop, retry, type IBackoff } from 'cockatiel';
import type { EtcdConfig } from '../config/types.js';

// etcd3 as DESIGN.md §10 says: its default per-host circuit breaker (5 s open after 3 failures) also blocks
// keepalives and watch reconnects, which would turn a 1 s blip into a fence. No host breaker, two quick global
// retries, a deadline on every unary call, and fast watch reconnects.
export function etcdClientOptions(cfg: EtcdConfig): IOptions {
  const opts: IOptions = {
    hosts: cfg.endpoints,
    dialTimeout: Math.min(cfg.requestTimeoutMs, 2000),
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
