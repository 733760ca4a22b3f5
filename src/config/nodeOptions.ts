import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';
import { NODE_ID_RE } from './nodeId.js';
import { checksSchema } from './checks.js';
import { expected, expectedRedacted, expectedSecret } from './issues.js';
import { BACKEND_KINDS, NFT_TRANSPORTS, type BackendKind, type LogLevel } from './types.js';

// The one table of node settings. It drives the commander options, the environment variables, the YAML file
// schema, the defaults and docs/configuration.md, so a setting cannot exist in one place and not another.

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const satisfies readonly LogLevel[];

export const ENV_PREFIX = 'CLUSTERIP_HA_';

/** How a value written as text (flag, environment) becomes a typed value. */
export type OptionType = 'string' | 'int' | 'boolean' | 'list' | 'argv' | 'json';

/** What a default may depend on: values already resolved for other options. */
export interface DefaultContext {
  get(key: NodeOptionKey): unknown;
  hostname: string;
}

export interface NodeOption {
  /** commander's attribute name (camelCase of the flag) and the key of `flags`. */
  key: NodeOptionKey;
  flag: string;
  /** Placeholder in --help, e.g. SECONDS. */
  valueName: string;
  /** The field's path in the YAML node config file. */
  yaml: readonly string[];
  type: OptionType;
  /** Validates the typed value (from YAML as written, from text after conversion). */
  schema: z.ZodType;
  /** Only meaningful for this backend; setting it with another backend is an error. */
  backend?: BackendKind;
  default?: (ctx: DefaultContext) => unknown;
  /** How the default reads in docs and --help. */
  defaultText: string;
  description: string;
}

export type NodeOptionKey =
  | 'nodeId'
  | 'weight'
  | 'etcdEndpoints'
  | 'etcdCa'
  | 'etcdCert'
  | 'etcdKey'
  | 'etcdUser'
  | 'etcdPassword'
  | 'etcdPasswordFile'
  | 'etcdRequestTimeout'
  | 'cluster'
  | 'backend'
  | 'backendDir'
  | 'nftTable'
  | 'nftPath'
  | 'nftArpMangle'
  | 'nftMulticastSubscribe'
  | 'nftTransport'
  | 'clusteripProcDir'
  | 'clusteripManageRule'
  | 'iptablesPath'
  | 'execCommand'
  | 'execTimeout'
  | 'leaseTtl'
  | 'fenceMargin'
  | 'metricsListen'
  | 'stateDir'
  | 'logLevel'
  | 'shutdownTimeout'
  | 'restartBudget'
  | 'checks'
  | 'maintenanceFile'
  | 'healthHold';

export function envVarFor(flag: string): string {
  return ENV_PREFIX + flag.toUpperCase().replaceAll('-', '_');
}

function int(min: number, max: number, unit = ''): z.ZodType<number> {
  const what = `an integer${unit} ${min}..${max}`;
  const e = { error: expected(what) };
  return z.number(e).int(e).min(min, e).max(max, e);
}

function nonEmpty(what: string): z.ZodType<string> {
  const e = { error: expected(what) };
  return z.string(e).min(1, e);
}

/** A secret: its messages never show the value (validation errors end up in logs and terminals). */
function secret(what: string): z.ZodType<string> {
  const e = { error: expectedSecret(what) };
  return z.string(e).min(1, e);
}

const idWhat = 'letters, digits, ".", "_", "-", starting with a letter or digit, at most 63';
const idSchema = (what: string) => {
  const e = { error: expected(`${what}: ${idWhat}`) };
  return z.string(e).regex(NODE_ID_RE, e);
};

const boolSchema = z.boolean({ error: expected('true or false') });

/** http(s)://host:port as etcd3 wants it. */
export function isEtcdEndpoint(s: string): boolean {
  if (!/^https?:\/\/[^/\s]+\/?$/.test(s)) return false;
  try {
    const u = new URL(s);
    return u.hostname.length > 0 && u.username === '' && u.password === '';
  } catch {
    return false;
  }
}

const endpointWhat = 'etcd URLs like http://127.0.0.1:2379';
const endpointsSchema = z
  .array(
    z.string({ error: expectedRedacted(`an ${endpointWhat.slice(0, -1)}`) }).refine(isEtcdEndpoint, {
      error: expectedRedacted('an etcd URL like http://127.0.0.1:2379 or https://etcd1:2379'),
    }),
    { error: expected(`a list of ${endpointWhat}`) },
  )
  .min(1, { error: expected(`at least one of the ${endpointWhat}`) });

/** `HOST:PORT` (IPv6 in brackets) or `off`. */
export function parseListen(s: string): { host: string; port: number } | 'off' | undefined {
  if (s === 'off') return 'off';
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port > 65535) return undefined;
  const host = m[1]!.replace(/^\[|\]$/g, '');
  // An address must be one (300.1.1.1 is not); the server would fail to bind and the agent run without it.
  if (m[1]!.startsWith('[') ? !isIPv6(host) : /^[\d.]+$/.test(host) && !isIPv4(host)) return undefined;
  return { host, port };
}

const listenWhat = 'HOST:PORT (e.g. 127.0.0.1:9477, [::1]:9477) or off';
const listenSchema = z
  .string({ error: expected(listenWhat) })
  .refine((s) => parseListen(s) !== undefined, { error: expected(listenWhat) });

const argvWhat = 'a command: a path, or a JSON list of its argv like ["/usr/local/bin/hook", "--vip"]';
const argvSchema = z
  .array(z.string({ error: expected('a non-empty string') }).min(1, { error: expected('a non-empty string') }), {
    error: expected(argvWhat),
  })
  .min(1, { error: expected(argvWhat) });

const nftNameWhat = 'an nftables table name: a letter or "_" then letters, digits, "_", at most 64';
const nftTableSchema = z
  .string({ error: expected(nftNameWhat) })
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, { error: expected(nftNameWhat) });

export const DEFAULT_STATE_DIR = '/var/lib/clusterip-ha';

/** The host name, or its first label when the full name is too long or has other characters. */
export function defaultNodeId(hostname: string): string {
  if (NODE_ID_RE.test(hostname)) return hostname;
  const first = hostname.split('.')[0] ?? '';
  return NODE_ID_RE.test(first) ? first : hostname;
}

export function defaultFenceMarginMs(leaseTtlSeconds: number): number {
  return Math.max(250, Math.floor((leaseTtlSeconds * 1000) / 4));
}

export const NODE_OPTIONS: readonly NodeOption[] = [
  {
    key: 'nodeId',
    flag: 'node-id',
    valueName: 'ID',
    yaml: ['nodeId'],
    type: 'string',
    schema: idSchema('a node id'),
    default: (c) => defaultNodeId(c.hostname),
    defaultText: 'the host name (its first label when the full name is not a valid id)',
    description: "This node's id, unique in the cluster; names its etcd keys and claims.",
  },
  {
    key: 'weight',
    flag: 'weight',
    valueName: 'N',
    yaml: ['weight'],
    type: 'int',
    schema: int(0, 1000),
    default: () => 1,
    defaultText: '1',
    description:
      'Share of buckets relative to other nodes; 0 = standby: owns buckets only when no weighted node is live.',
  },
  {
    key: 'etcdEndpoints',
    flag: 'etcd-endpoints',
    valueName: 'URL[,URL...]',
    yaml: ['etcd', 'endpoints'],
    type: 'list',
    schema: endpointsSchema,
    default: () => ['http://127.0.0.1:2379'],
    defaultText: 'http://127.0.0.1:2379',
    description: 'etcd client URLs, comma-separated (a list in YAML). Give every member so the client fails over.',
  },
  {
    key: 'etcdCa',
    flag: 'etcd-ca',
    valueName: 'FILE',
    yaml: ['etcd', 'ca'],
    type: 'string',
    schema: nonEmpty('a file path'),
    defaultText: 'none (system CAs)',
    description: 'CA bundle (PEM) that signed the etcd server certificates. The file must exist.',
  },
  {
    key: 'etcdCert',
    flag: 'etcd-cert',
    valueName: 'FILE',
    yaml: ['etcd', 'cert'],
    type: 'string',
    schema: nonEmpty('a file path'),
    defaultText: 'none',
    description: 'Client certificate (PEM) for etcd; needs --etcd-key. The file must exist.',
  },
  {
    key: 'etcdKey',
    flag: 'etcd-key',
    valueName: 'FILE',
    yaml: ['etcd', 'key'],
    type: 'string',
    schema: nonEmpty('a file path'),
    defaultText: 'none',
    description: 'Private key (PEM) of the client certificate; needs --etcd-cert. The file must exist.',
  },
  {
    key: 'etcdUser',
    flag: 'etcd-user',
    valueName: 'NAME',
    yaml: ['etcd', 'user'],
    type: 'string',
    schema: nonEmpty('a user name'),
    defaultText: 'none',
    description: 'etcd user name (etcd auth); needs --etcd-password.',
  },
  {
    key: 'etcdPassword',
    flag: 'etcd-password',
    valueName: 'PASSWORD',
    yaml: ['etcd', 'password'],
    type: 'string',
    schema: secret('a password'),
    defaultText: 'none',
    description: 'etcd password; prefer --etcd-password-file: a flag shows in `ps`, a variable in the unit.',
  },
  {
    key: 'etcdPasswordFile',
    flag: 'etcd-password-file',
    valueName: 'FILE',
    yaml: ['etcd', 'passwordFile'],
    type: 'string',
    schema: nonEmpty('a file path'),
    defaultText: 'none',
    description:
      'File holding the etcd password (one trailing newline is dropped), e.g. a systemd credential; instead of --etcd-password.',
  },
  {
    key: 'etcdRequestTimeout',
    flag: 'etcd-request-timeout',
    valueName: 'MS',
    yaml: ['etcd', 'requestTimeoutMs'],
    type: 'int',
    schema: int(50, 600_000, ' (ms)'),
    default: () => 1000,
    defaultText: '1000',
    description: 'Deadline of one etcd call, in milliseconds.',
  },
  {
    key: 'cluster',
    flag: 'cluster',
    valueName: 'NAME',
    yaml: ['cluster'],
    type: 'string',
    schema: idSchema('a cluster name'),
    default: () => 'default',
    defaultText: 'default',
    description: 'Cluster name: every key lives under `/clusterip-ha/<cluster>/`.',
  },
  {
    key: 'backend',
    flag: 'backend',
    valueName: BACKEND_KINDS.join('|'),
    yaml: ['backend', 'kind'],
    type: 'string',
    schema: z.enum(BACKEND_KINDS, { error: expected(`one of ${BACKEND_KINDS.join(', ')}`) }),
    default: () => 'nftables',
    defaultText: 'nftables',
    description: 'How claims reach the kernel: nftables set, CLUSTERIP proc file, a plain file, or a command.',
  },
  {
    key: 'backendDir',
    flag: 'backend-dir',
    valueName: 'DIR',
    yaml: ['backend', 'dir'],
    type: 'string',
    schema: nonEmpty('a directory path'),
    backend: 'file',
    default: (c) => `${String(c.get('stateDir')).replace(/\/+$/, '')}/buckets`,
    defaultText: '`<state-dir>/buckets`',
    description: 'file backend: directory with one file per VIP, in the CLUSTERIP proc format.',
  },
  {
    key: 'nftTable',
    flag: 'nft-table',
    valueName: 'NAME',
    yaml: ['backend', 'table'],
    type: 'string',
    schema: nftTableSchema,
    backend: 'nftables',
    default: () => 'clusterip_ha',
    defaultText: 'clusterip_ha',
    description: 'nftables backend: the `ip` table the agent owns (created and replaced by it).',
  },
  {
    key: 'nftPath',
    flag: 'nft-path',
    valueName: 'PATH',
    yaml: ['backend', 'nftPath'],
    type: 'string',
    schema: nonEmpty('a path to nft'),
    backend: 'nftables',
    default: () => 'nft',
    defaultText: 'nft',
    description: 'nftables backend: the nft binary.',
  },
  {
    key: 'nftTransport',
    flag: 'nft-transport',
    valueName: NFT_TRANSPORTS.join('|'),
    yaml: ['backend', 'nftTransport'],
    type: 'string',
    schema: z.enum(NFT_TRANSPORTS, { error: expected(`one of ${NFT_TRANSPORTS.join(', ')}`) }),
    backend: 'nftables',
    default: () => 'auto',
    defaultText: 'auto',
    description:
      'nftables backend: libnftables in process (no process per change), an nft process per command, or auto: the library unless it cannot be loaded, nftPath is not plain nft, or the agent runs nft in another namespace.',
  },
  {
    key: 'nftArpMangle',
    flag: 'nft-arp-mangle',
    valueName: 'BOOL',
    yaml: ['backend', 'arpMangle'],
    type: 'boolean',
    schema: boolSchema,
    backend: 'nftables',
    default: () => false,
    defaultText: 'false',
    description:
      "nftables backend: rewrite the nodes' ARP replies (IPv4) and neighbour advertisements (IPv6) for the VIP to the cluster MAC (else use a static neighbour entry on the router), and announce the cluster MAC when a VIP is set up.",
  },
  {
    key: 'nftMulticastSubscribe',
    flag: 'nft-multicast-subscribe',
    valueName: 'BOOL',
    yaml: ['backend', 'multicastSubscribe'],
    type: 'boolean',
    schema: boolSchema,
    backend: 'nftables',
    default: () => true,
    defaultText: 'true',
    description:
      "nftables backend: add each VIP's cluster MAC to its interface's multicast list (`ip maddr add`) while the VIP is set up; real NICs and macvlans drop the VIP's frames without it. One that cannot be made shows in status (multicastFailed) and is retried.",
  },
  {
    key: 'clusteripProcDir',
    flag: 'clusterip-proc-dir',
    valueName: 'DIR',
    yaml: ['backend', 'procDir'],
    type: 'string',
    schema: nonEmpty('a directory path'),
    backend: 'clusterip',
    default: () => '/proc/net/ipt_CLUSTERIP',
    defaultText: '/proc/net/ipt_CLUSTERIP',
    description: 'clusterip backend: where the kernel exposes one file per VIP.',
  },
  {
    key: 'clusteripManageRule',
    flag: 'clusterip-manage-rule',
    valueName: 'BOOL',
    yaml: ['backend', 'manageRule'],
    type: 'boolean',
    schema: boolSchema,
    backend: 'clusterip',
    default: () => true,
    defaultText: 'true',
    description:
      'clusterip backend: insert and remove the `-j CLUSTERIP` iptables rule itself (false: the operator does).',
  },
  {
    key: 'iptablesPath',
    flag: 'iptables-path',
    valueName: 'PATH',
    yaml: ['backend', 'iptablesPath'],
    type: 'string',
    schema: nonEmpty('a path to iptables'),
    backend: 'clusterip',
    default: () => 'iptables-legacy',
    defaultText: 'iptables-legacy',
    description: 'clusterip backend: the iptables binary; must be the legacy one (iptables-nft lacks CLUSTERIP).',
  },
  {
    key: 'execCommand',
    flag: 'exec-command',
    valueName: 'CMD',
    yaml: ['backend', 'command'],
    type: 'argv',
    schema: argvSchema,
    backend: 'exec',
    defaultText: 'required with the exec backend',
    description: 'exec backend: command run on every change, as a JSON list of argv or a plain path (a list in YAML).',
  },
  {
    key: 'execTimeout',
    flag: 'exec-timeout',
    valueName: 'MS',
    yaml: ['backend', 'timeoutMs'],
    type: 'int',
    schema: int(1, 3_600_000, ' (ms)'),
    backend: 'exec',
    default: () => 5000,
    defaultText: '5000',
    description: 'exec backend: kill the command after this many milliseconds and count the change as failed.',
  },
  {
    key: 'leaseTtl',
    flag: 'lease-ttl',
    valueName: 'SECONDS',
    yaml: ['leaseTtlSeconds'],
    type: 'int',
    schema: int(1, 3600, ' (seconds)'),
    default: () => 2,
    defaultText: '2',
    description: "etcd lease TTL in seconds: a dead node's buckets move after about this long.",
  },
  {
    key: 'fenceMargin',
    flag: 'fence-margin',
    valueName: 'MS',
    yaml: ['fenceMarginMs'],
    type: 'int',
    schema: int(0, 3_600_000, ' (ms)'),
    default: (c) => defaultFenceMarginMs(Number(c.get('leaseTtl'))),
    defaultText: 'max(250, TTL × 1000 / 4)',
    description: 'Drop every bucket this many ms before the lease could expire; must stay below half the TTL.',
  },
  {
    key: 'metricsListen',
    flag: 'metrics-listen',
    valueName: 'HOST:PORT|off',
    yaml: ['metricsListen'],
    type: 'string',
    schema: listenSchema,
    default: () => '127.0.0.1:9477',
    defaultText: '127.0.0.1:9477',
    description: 'Where /metrics, /healthz and /readyz listen; `off` disables them.',
  },
  {
    key: 'stateDir',
    flag: 'state-dir',
    valueName: 'DIR',
    yaml: ['stateDir'],
    type: 'string',
    schema: nonEmpty('a directory path'),
    default: () => DEFAULT_STATE_DIR,
    defaultText: DEFAULT_STATE_DIR,
    description: "Directory for local state (the file backend's default directory, fence records).",
  },
  {
    key: 'logLevel',
    flag: 'log-level',
    valueName: LOG_LEVELS.join('|'),
    yaml: ['logLevel'],
    type: 'string',
    schema: z.enum(LOG_LEVELS, { error: expected(`one of ${LOG_LEVELS.join(', ')}`) }),
    default: () => 'info',
    defaultText: 'info',
    description: 'Least severe log level written (JSON lines on stderr).',
  },
  {
    key: 'shutdownTimeout',
    flag: 'shutdown-timeout',
    valueName: 'MS',
    yaml: ['shutdownTimeoutMs'],
    type: 'int',
    schema: int(0, 3_600_000, ' (ms)'),
    default: () => 10_000,
    defaultText: '10000',
    description: 'On SIGTERM, hand buckets over for at most this long, then release everything and exit.',
  },
  {
    key: 'restartBudget',
    flag: 'restart-budget',
    valueName: 'MS',
    yaml: ['restartBudgetMs'],
    type: 'int',
    schema: int(100, 600_000, ' (ms)'),
    default: () => 2500,
    defaultText: '2500',
    description:
      'On SIGHUP (systemctl reload), exit for a hitless restart only when at least this long is left before the fence deadline (the new process must adopt the lease before it; it waits up to one TTL for an ack to get there); otherwise drain as on SIGTERM. Needs leaseTtlSeconds ≥ 4 at the default.',
  },
  {
    key: 'checks',
    flag: 'checks',
    valueName: 'JSON',
    yaml: ['checks'],
    type: 'json',
    schema: checksSchema,
    default: () => [],
    defaultText: 'none',
    description:
      'Service checks (exec, tcp, http, https); a failing one drains the node (reason `unhealthy:<name>`). See "Service checks" below; in flags and the environment a JSON list.',
  },
  {
    key: 'maintenanceFile',
    flag: 'maintenance-file',
    valueName: 'FILE',
    yaml: ['maintenanceFile'],
    type: 'string',
    schema: nonEmpty('a file path'),
    defaultText: 'none',
    description: "While this file exists the node drains (reason `maintenance`), like keepalived's track_file.",
  },
  {
    key: 'healthHold',
    flag: 'health-hold',
    valueName: 'MS',
    yaml: ['healthHoldMs'],
    type: 'int',
    schema: int(0, 3_600_000, ' (ms)'),
    default: () => 10_000,
    defaultText: '10000',
    description:
      'A node drained by its checks or maintenance file takes buckets again no sooner than this: a flapping service moves buckets at most once per hold.',
  },
];

export const NODE_OPTION_BY_KEY: ReadonlyMap<NodeOptionKey, NodeOption> = new Map(NODE_OPTIONS.map((o) => [o.key, o]));

export const CONFIG_FLAG = 'config';
export const CONFIG_ENV = envVarFor(CONFIG_FLAG);
