// The shapes every part of clusterip-ha agrees on. The zod schemas in this folder produce exactly these types
// (checked with `satisfies`), so code outside src/config never sees unvalidated input.

export const HASH_MODES = ['sourceip', 'sourceip-sourceport', 'sourceip-sourceport-destport'] as const;
export type HashMode = (typeof HASH_MODES)[number];

export const BACKEND_KINDS = ['clusterip', 'nftables', 'file', 'exec'] as const;
/** How the nftables backend reaches the kernel: libnftables in process, an `nft` process, or the first that works. */
export const NFT_TRANSPORTS = ['auto', 'libnftables', 'nft'] as const;
export type NftTransportChoice = (typeof NFT_TRANSPORTS)[number];
export type BackendKind = (typeof BACKEND_KINDS)[number];

/** The most buckets one VIP may have, per backend. CLUSTERIP's proc interface stops at 16. */
export const MAX_BUCKETS: Record<BackendKind, number> = {
  clusterip: 16,
  nftables: 4096,
  file: 4096,
  exec: 4096,
};

export interface VipSpec {
  /** IPv4 dotted quad or IPv6 in RFC 5952 form; also the VIP's identity in etcd keys and backends. */
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
  /**
   * Panic threshold of the service checks (DESIGN §14): the leader keeps at least this many nodes serving even
   * when their checks fail. Absent means 1 (the schema leaves the default out).
   */
  minHealthyNodes?: number;
}

export type BackendConfig =
  | { kind: 'file'; dir: string }
  | {
      kind: 'nftables';
      table: string;
      nftPath: string;
      arpMangle: boolean;
      multicastSubscribe: boolean;
      transport: NftTransportChoice;
    }
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

export const CHECK_TYPES = ['exec', 'tcp', 'http', 'https'] as const;
export type CheckType = (typeof CHECK_TYPES)[number];

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'OPTIONS'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

interface CheckCommon {
  /** Names the check in reasons (`unhealthy:<name>`), metrics and status; unique per node. */
  name: string;
  intervalMs: number;
  timeoutMs: number;
  /** Consecutive successes that make a down check up. */
  rise: number;
  /** Consecutive failures that make an up check down. */
  fall: number;
  /** The state before the first `rise`/`fall` results (keepalived's `init_fail` is `initial: down`). */
  initial: 'up' | 'down';
}

/** One service check of the node config (DESIGN §14); `target` is typed per `type`. */
export type CheckConfig =
  | (CheckCommon & { type: 'exec'; target: string[] })
  | (CheckCommon & { type: 'tcp'; target: { host: string; port: number } })
  | (CheckCommon & {
      type: 'http' | 'https';
      /** The URL as written. */
      target: string;
      method: HttpMethod;
      /** Status codes that count as success; empty = any 2xx or 3xx. */
      expectStatus: number[];
      /** https: a CA bundle (PEM) that signed the service's certificate, instead of the system CAs. */
      ca?: string;
    });

export interface HealthConfig {
  checks: CheckConfig[];
  /** While this file exists the node drains (reason `maintenance`). */
  maintenanceFile?: string;
  /** Least time a health drain lasts before the node may take buckets again (flap control). */
  holdMs: number;
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
  /** SIGHUP exits for a hitless restart only with at least this much left before the fence deadline. */
  restartBudgetMs: number;
  health: HealthConfig;
}
