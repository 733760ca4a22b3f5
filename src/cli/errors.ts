import { CommanderError } from 'commander';
import { ClusterIpHaError, ConfigError, ConflictError, EtcdUnavailableError } from '../errors.js';

// Exit codes are part of the CLI's contract (monitoring scripts test them): 0 ok, 1 error, 2 usage or invalid
// input, 3 unhealthy (`status --check`), 4 degraded (`status --check`: serving, but a known node is down).
export const EXIT = { ok: 0, error: 1, usage: 2, unhealthy: 3, degraded: 4 } as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** A bad flag combination or argument the parser could not catch. */
export class UsageError extends ClusterIpHaError {
  readonly code = 'usage';
  readonly recoverable = false;
}

/** The command worked but what it found is unhealthy (exit 3). */
export class UnhealthyError extends ClusterIpHaError {
  readonly code = 'unhealthy';
  readonly recoverable = false;
}

/** Any other failure that carries its own "what to do next". */
export class CliError extends ClusterIpHaError {
  readonly code = 'cli';
  readonly recoverable = false;
  constructor(
    message: string,
    readonly hint?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface ErrorReport {
  exitCode: ExitCode;
  /** One line for stderr, `what happened — what to do next`. */
  line: string;
}

const oneLine = (s: string): string => s.replace(/\s*\n\s*/g, '; ').trim();

/** Map any thrown value to an exit code and one stderr line. Pure, so it is unit-tested. */
export function describeError(err: unknown, command = 'clusterip-ha'): ErrorReport {
  const help = `run \`${command} --help\``;
  if (err instanceof CommanderError) {
    const ok =
      err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help';
    return { exitCode: ok ? EXIT.ok : EXIT.usage, line: `${oneLine(err.message.replace(/^error: /, ''))} — ${help}` };
  }
  if (err instanceof UsageError) return { exitCode: EXIT.usage, line: `${oneLine(err.message)} — ${help}` };
  if (err instanceof UnhealthyError) return { exitCode: EXIT.unhealthy, line: oneLine(err.message) };
  if (err instanceof ConfigError) {
    // Every issue at once, still on one line, so a script's log keeps them together.
    return { exitCode: EXIT.usage, line: `invalid input: ${oneLine(err.message)} — fix the named fields and retry` };
  }
  const tls = tlsProblem(err);
  if (tls) return { exitCode: EXIT.error, line: tls };
  if (err instanceof ConflictError) {
    return {
      exitCode: EXIT.error,
      line: `${oneLine(err.message)} — someone else wrote it meanwhile: re-run the command`,
    };
  }
  if (err instanceof EtcdUnavailableError) {
    return {
      exitCode: EXIT.error,
      line: `${oneLine(err.message)} — check --etcd-endpoints (or CLUSTERIP_HA_ETCD_ENDPOINTS), TLS/auth flags, and that etcd runs`,
    };
  }
  if (err instanceof CliError) {
    return { exitCode: EXIT.error, line: err.hint ? `${oneLine(err.message)} — ${err.hint}` : oneLine(err.message) };
  }
  const msg = err instanceof Error ? err.message : String(err);
  return {
    exitCode: EXIT.error,
    line: `${oneLine(msg)} — rerun with --log-level debug, or report a bug with this line`,
  };
}

/** OpenSSL's codes (`error:05800074:x509 certificate routines::key values mismatch`) in words, or null. */
export function tlsProblem(err: unknown): string | null {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const m = e.message;
    if (/key values mismatch/i.test(m))
      return 'the client certificate and key do not belong together — check --etcd-cert and --etcd-key (etcd.cert, etcd.key)';
    if (/no start line|PEM routines|bad base64|wrong tag/i.test(m))
      return 'a TLS file is not a PEM certificate or key — check --etcd-ca, --etcd-cert and --etcd-key';
    if (/self[- ]signed|unable to (get|verify)|certificate verify failed|UNABLE_TO_VERIFY/i.test(m))
      return "etcd's certificate is not signed by the CA given — check --etcd-ca (etcd.ca) and the etcd server's certificate";
    if (/Hostname\/IP does not match|ERR_TLS_CERT_ALTNAME_INVALID|altnames/i.test(m))
      return "etcd's certificate does not name the endpoint's host — use a host or IP its certificate lists (SAN)";
  }
  return null;
}
