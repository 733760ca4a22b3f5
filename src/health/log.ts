import type { HealthEvent } from './events.js';

// Log lines of the health events, in the daemon's fixed vocabulary (op, event, node, reason, ...).

type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';

export function healthLogLine(e: HealthEvent): {
  level: Level;
  op: string;
  fields: Record<string, unknown>;
  msg: string;
} {
  switch (e.event) {
    case 'checkResult':
      return {
        level: 'debug',
        op: 'check',
        fields: {
          check: e.check,
          ok: e.ok,
          state: e.state,
          durationMs: e.durationMs,
          output: e.output,
          ...(e.failure ? { reason: e.failure } : {}),
        },
        msg: e.ok ? 'check passed' : 'check failed',
      };
    case 'checkTransition':
      return {
        level: e.state === 'down' ? 'warn' : 'info',
        op: 'check',
        fields: { check: e.check, state: e.state, flap: e.flap, output: e.output },
        msg: `check ${e.state}`,
      };
    case 'maintenance':
      return {
        level: 'warn',
        op: 'health',
        fields: { file: e.file, present: e.present, reason: 'maintenance' },
        msg: e.present ? 'maintenance file present' : 'maintenance file gone',
      };
    case 'healthDrain':
      return {
        level: e.change === 'drain' ? 'warn' : 'info',
        op: 'health',
        fields: {
          change: e.change,
          ...(e.reason !== undefined ? { reason: e.reason } : {}),
          ...(e.holdLeftMs !== undefined ? { holdLeftMs: e.holdLeftMs } : {}),
        },
        msg:
          e.change === 'drain'
            ? 'health drain: giving buckets away'
            : e.change === 'undrain'
              ? 'health restored: taking buckets again'
              : e.change === 'hold'
                ? 'health restored: holding the drain for the hold time'
                : 'health drain reason changed',
      };
    case 'healthPanic':
      return e.panic
        ? {
            level: 'error',
            op: 'health',
            fields: { reason: 'panicThreshold', kept: e.kept, healthy: e.healthy, minHealthyNodes: e.minHealthyNodes },
            msg: `panic threshold: only ${e.healthy} healthy node(s), keeping failing ${e.kept.join(', ')} serving`,
          }
        : {
            level: 'info',
            op: 'health',
            fields: { reason: 'panicThreshold', healthy: e.healthy, minHealthyNodes: e.minHealthyNodes },
            msg: 'panic threshold cleared',
          };
  }
}
