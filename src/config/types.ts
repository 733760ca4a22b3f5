// The shapes every part of clusterip-ha agrees on. The zod schemas in this folder produce exactly these types
// (checked with `satisfies`), so code outside src/config never sees unvalidated input.

export const HASH_MODES = ['sourceip', 'sourceip-sourceport', 'sourceip-sourceport-destport'] as const;
export type HashMode = (typeof HASH_MODES)[number];

export const BACKEND_KINDS = ['clusterip', 'nftables', 'file', 'exec'] as const;
export type BackendKind = (typeof BACKEND_KINDS)[number];

/** The most buckets one VIP may have, per backend. CLUSTERIP's proc interface stops at 16. */
export const MAX_BUCKETS: Record<BackendKind, number> = {
  clusterip: 16,
  nftables: 4096,
  file: 4096,
  exec: 4096,
};

export interface VipSpec {
  /** Dotted-quad IPv4 address; also the VIP's identity in etcd keys and backends. */
  address: string;
  /** Interface the VIP is served on (CLUSTERIP `-i`, nftables `iifname`). */
  interface: string;
  /** Bucket count N; buckets are numbered 1..N. */
  buckets: number;
  hashMode: HashMode;
  /** 32-bit hash seed (CLUSTERIP --hash-init, nftables jhash seed). Always explicit. */
  seed: number;
  /** Multicast cluster MAC, lower-case colon form; derived from the address when the YAML omits it. */
  clusterMac: string;
  /** Keep established TCP on the old owner when a bucket moves (nftables only). */
  sticky: boolean;
}

export interface RebalancePolicy {
  /** Buckets of live nodes moved per interval to even out after a join; 0 = never. */
  joinMovesPerInterval: number;
  intervalMs: number;
}

export interface ClusterSpec {
  vips: VipSpec[];
  rebalance: RebalancePolicy;
}

export type BackendConfig =
  | { kind: 'file'; dir: string }
  | { kind: 'nftables'; table: string; nftPath: string; arpMangle: boolean }
  | { kind: 'clusterip'; procDir: string; manageRule: boolean; iptablesPath: string }
  | { kind: 'exec'; command: string[]; timeoutMs: number };

export interface EtcdConfig {
  endpoints: string[];
  ca?: string;
  cert?: string;
  key?: string;
  user?: string;
  password?: string;
  /** Read into `password` by loadNodeConfig. */
  passwordFile?: string;
  /** Deadline for a single etcd call. */
  requestTimeoutMs: number;
}

export type ListenAddress = { host: string; port: number } | 'off';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export interface NodeConfig {
  nodeId: string;
  weight: number;
  etcd: EtcdConfig;
  /** Cluster name; keys live under `/clusterip-ha/<cluster>/`. */
  cluster: string;
  backend: BackendConfig;
  leaseTtlSeconds: number;
  /** Fence this long before the lease could expire; default max(250 ms, TTL/4). */
  fenceMarginMs: number;
  metricsListen: ListenAddress;
  stateDir: string;
  logLevel: LogLevel;
  /** Graceful shutdown (drain, wait for handoff) bound; after it the agent releases everything itself. */
  shutdownTimeoutMs: number;
}
