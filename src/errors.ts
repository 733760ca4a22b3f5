// Typed errors. `recoverable` tells callers whether retrying (with backoff) can help: a timeout or a busy
// kernel is recoverable, a malformed config or a missing kernel feature is terminal.

export abstract class ClusterIpHaError extends Error {
  abstract readonly code: string;
  abstract readonly recoverable: boolean;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** One problem in one input: `where` names the file (and line), key or flag; `path` the field. */
export interface InputIssue {
  where: string;
  path: string;
  message: string;
  line?: number;
}

export class ConfigError extends ClusterIpHaError {
  readonly code = 'config';
  readonly recoverable = false;
  constructor(readonly issues: InputIssue[]) {
    super(issues.map(formatIssue).join('\n'));
  }
}

export function formatIssue(i: InputIssue): string {
  const where = i.line !== undefined ? `${i.where}:${i.line}` : i.where;
  return i.path ? `${where}: ${i.path}: ${i.message}` : `${where}: ${i.message}`;
}

export class EtcdUnavailableError extends ClusterIpHaError {
  readonly code = 'etcdUnavailable';
  readonly recoverable = true;
}

/** A leader-only write whose fence (the campaign key's create revision) no longer holds. */
export class NotLeaderError extends ClusterIpHaError {
  readonly code = 'notLeader';
  readonly recoverable = false;
}

/** A compare-and-swap lost against a concurrent writer (spec apply, claims). */
export class ConflictError extends ClusterIpHaError {
  readonly code = 'conflict';
  readonly recoverable = false;
}

export type BackendErrorKind =
  | 'transient' // worth retrying: EBUSY, a timed-out nft, a failed exec hook
  | 'unsupported' // the kernel or tool lacks what the backend needs (CLUSTERIP on 6.3+, old nft)
  | 'bug' // the backend sent something the kernel calls malformed (EIO/EINVAL on the proc file)
  | 'invalid'; // a value failed validation before reaching the kernel

export class BackendError extends ClusterIpHaError {
  readonly code = 'backend';
  readonly recoverable: boolean;
  constructor(
    readonly kind: BackendErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.recoverable = kind === 'transient';
  }
}

/** Another live agent holds this node id (DESIGN §13): two agents with one id must never both run. */
export class NodeIdInUseError extends ClusterIpHaError {
  readonly code = 'nodeIdInUse';
  readonly recoverable = false;
}
