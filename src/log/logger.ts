import { pino, type Logger, type LevelWithSilent } from 'pino';

// The fixed log vocabulary. Every structured field a library event carries maps onto one of these names, so an
// operator can grep `"op":"acquire"` or `"reason":"ownerDead"` across every node's logs.
export interface LogFields {
  op?: string;
  event?: string;
  vip?: string;
  bucket?: number;
  node?: string;
  reason?: string;
  [extra: string]: unknown;
}

export type { Logger };

export function createLogger(opts: { level?: LevelWithSilent; name?: string; pretty?: boolean } = {}): Logger {
  const level = opts.level ?? 'info';
  const pretty = opts.pretty ?? (process.stdout.isTTY === true && !process.env.CI);
  const base = { name: opts.name ?? 'clusterip-ha' };
  if (pretty) {
    return pino({ level, base, transport: { target: 'pino-pretty', options: { colorize: true, destination: 2 } } });
  }
  // JSON to stderr: stdout stays free for command output (status --json, whois --json).
  return pino({ level, base, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: false }));
}

export const silentLogger: Logger = pino({ level: 'silent' });
