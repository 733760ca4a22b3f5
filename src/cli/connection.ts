import type { Command } from 'commander';
import { Etcd3, GRPCGenericError, EtcdError, EtcdPermissionDeniedError, EtcdAuthenticationFailedError } from 'etcd3';
import { loadNodeConfig, type EtcdConfig } from '../config/index.js';
import { createEtcdClient } from '../etcd/client.js';
import { keysFor, type Keys } from '../etcd/keys.js';
import { CliError, UsageError } from './errors.js';
import { EtcdUnavailableError } from '../errors.js';

// The etcd connection flags every etcd-facing command shares. They are the node config's own flags (same names,
// same CLUSTERIP_HA_* variables, same --config file), so `status --config /etc/clusterip-ha/node.yaml` on a node
// talks to the cluster its agent talks to.
export const CONNECTION_FLAGS = [
  '--config',
  '--etcd-endpoints',
  '--etcd-ca',
  '--etcd-cert',
  '--etcd-key',
  '--etcd-user',
  '--etcd-password',
  '--etcd-password-file',
  '--cluster',
] as const;

export const DEFAULT_TIMEOUT_MS = 5000;

export function addConnectionOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'node config file (YAML); its etcd and cluster settings are used')
    .option('--etcd-endpoints <urls>', 'etcd endpoints, comma-separated (env CLUSTERIP_HA_ETCD_ENDPOINTS)')
    .option('--etcd-ca <file>', 'CA bundle for etcd TLS (env CLUSTERIP_HA_ETCD_CA)')
    .option('--etcd-cert <file>', 'client certificate for etcd TLS (env CLUSTERIP_HA_ETCD_CERT)')
    .option('--etcd-key <file>', 'client key for etcd TLS (env CLUSTERIP_HA_ETCD_KEY)')
    .option('--etcd-user <name>', 'etcd user name (env CLUSTERIP_HA_ETCD_USER)')
    .option('--etcd-password <pw>', 'etcd password (env CLUSTERIP_HA_ETCD_PASSWORD); prefer --etcd-password-file')
    .option('--etcd-password-file <file>', 'file holding the etcd password (env CLUSTERIP_HA_ETCD_PASSWORD_FILE)')
    .option('--cluster <name>', 'cluster name: keys live under /clusterip-ha/<name>/ (env CLUSTERIP_HA_CLUSTER)')
    .option('--timeout <ms>', 'give up on etcd after this long', parseMs, DEFAULT_TIMEOUT_MS);
}

export function parseMs(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`"${v}" is not a positive number of milliseconds`);
  return Number(v);
}

export interface Connection {
  etcd: Etcd3;
  keys: Keys;
  cluster: string;
  endpoints: string[];
  timeoutMs: number;
  /** Run one etcd operation under the command's deadline, mapping transport failures to EtcdUnavailableError. */
  call<T>(what: string, op: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface ConnectionTarget {
  etcd: EtcdConfig;
  cluster: string;
  timeoutMs: number;
}

const PICK = [
  'etcdEndpoints',
  'etcdCa',
  'etcdCert',
  'etcdKey',
  'etcdUser',
  'etcdPassword',
  'etcdPasswordFile',
  'cluster',
] as const;

/** Resolve the connection flags with the node config's precedence (flag > env > file > default). */
export async function resolveConnection(
  opts: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<ConnectionTarget> {
  const flags: Record<string, unknown> = {};
  for (const k of PICK) if (opts[k] !== undefined) flags[k] = opts[k];
  const configFile = (opts.config as string | undefined) ?? env.CLUSTERIP_HA_CONFIG;
  if (configFile !== undefined) flags.config = configFile;
  const cfg = await loadNodeConfig({ flags, env, ...(configFile !== undefined ? { configFile } : {}) });
  const timeoutMs = typeof opts.timeout === 'number' ? opts.timeout : DEFAULT_TIMEOUT_MS;
  return {
    etcd: { ...cfg.etcd, requestTimeoutMs: Math.min(cfg.etcd.requestTimeoutMs, timeoutMs) },
    cluster: cfg.cluster,
    timeoutMs,
  };
}

export function isEtcdTransportError(err: unknown): boolean {
  return (
    err instanceof GRPCGenericError ||
    (err instanceof EtcdError &&
      !(err instanceof EtcdPermissionDeniedError) &&
      !(err instanceof EtcdAuthenticationFailedError)) ||
    (err instanceof Error &&
      /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|No connection established|deadline/i.test(err.message))
  );
}

const ERRNO_TEXT: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENOTFOUND: 'host name not found',
  ECONNRESET: 'connection reset',
};

/** grpc-js messages carry nested causes and resolver notes; keep what an operator acts on. */
export function tidyGrpcMessage(msg: string): string {
  const errno = /\b(ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|ECONNRESET)\b/.exec(msg)?.[1];
  if (errno) return ERRNO_TEXT[errno]!;
  return msg
    .replace(/^reading \S+: /, '')
    .replace(/\s*Resolution note:.*$/s, '')
    .replace(/^\d+ [A-Z_]+: /, '')
    .replace(/[.\s]+$/, '');
}

export type Refusal = 'permissionDenied' | 'authFailed';

/** etcd answered, and said no: wrapped or not (a store read keeps the cause), by class or by grpc text. */
export function refusal(err: unknown): Refusal | null {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof EtcdPermissionDeniedError || /permission denied/i.test(e.message)) return 'permissionDenied';
    if (
      e instanceof EtcdAuthenticationFailedError ||
      /authentication failed|invalid auth token|user name or password/i.test(e.message)
    )
      return 'authFailed';
  }
  return null;
}

const write = (what: string) => /^(writing|deleting|creating)/.test(what);

export function connect(target: ConnectionTarget): Connection {
  const etcd = createEtcdClient(target.etcd);
  const endpoints = target.etcd.endpoints;
  const where = endpoints.join(',');
  return {
    etcd,
    keys: keysFor(target.cluster),
    cluster: target.cluster,
    endpoints,
    timeoutMs: target.timeoutMs,
    async call(what, op) {
      let timer: NodeJS.Timeout | undefined;
      const late = new EtcdUnavailableError(`no answer from etcd at ${where} within ${target.timeoutMs} ms (${what})`);
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(late), target.timeoutMs);
      });
      try {
        return await Promise.race([op(), deadline]);
      } catch (err) {
        if (err === late) throw err;
        const refused = refusal(err);
        if (refused === 'permissionDenied')
          throw new CliError(
            `permission denied by etcd at ${where} (${what})`,
            `grant the user's role ${write(what) ? 'readwrite' : 'read'} on /clusterip-ha/${target.cluster}/`,
            { cause: err },
          );
        if (refused === 'authFailed')
          throw new CliError(
            `etcd at ${where} rejected the credentials (${what}): wrong user or password`,
            'check --etcd-user and --etcd-password-file (or CLUSTERIP_HA_ETCD_USER / _PASSWORD_FILE)',
            { cause: err },
          );
        if (err instanceof EtcdUnavailableError || isEtcdTransportError(err)) {
          throw new EtcdUnavailableError(
            `cannot reach etcd at ${where} (${what}): ${tidyGrpcMessage((err as Error).message)}`,
            { cause: err },
          );
        }
        throw err;
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      etcd.close();
    },
  };
}

/** Open, run, always close (bounded): the shape of every one-shot etcd command. */
export async function withConnection<T>(
  opts: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  body: (c: Connection) => Promise<T>,
): Promise<T> {
  const c = connect(await resolveConnection(opts, env));
  try {
    return await body(c);
  } finally {
    await c.close();
  }
}
