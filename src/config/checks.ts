import { isIP } from 'node:net';
import { z } from 'zod';
import { NODE_ID_RE } from './nodeId.js';
import { expected } from './issues.js';
import { CHECK_TYPES, HTTP_METHODS, type CheckConfig } from './types.js';

// The `checks:` list of the node config (DESIGN §14). Defaults follow keepalived's vrrp_script: interval 1 s,
// timeout = interval, rise 1, fall 1, initially up (`initial: down` is keepalived's init_fail).

function int(min: number, max: number, unit = ''): z.ZodType<number> {
  const e = { error: expected(`an integer${unit} ${min}..${max}`) };
  return z.number(e).int(e).min(min, e).max(max, e);
}

const nameWhat = 'a check name: letters, digits, ".", "_", "-", starting with a letter or digit, at most 63';
const nameSchema = z.string({ error: expected(nameWhat) }).regex(NODE_ID_RE, { error: expected(nameWhat) });

/** `host:port` (IPv6 in brackets) to connect to. */
export function parseHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[2]);
  const host = m[1]!.replace(/^\[|\]$/g, '');
  if (port < 1 || port > 65535 || (m[1]!.startsWith('[') && isIP(host) !== 6)) return undefined;
  return { host, port };
}

const common = {
  name: nameSchema,
  intervalMs: int(10, 3_600_000, ' (ms)').default(1000),
  timeoutMs: int(1, 3_600_000, ' (ms)').optional(),
  rise: int(1, 100).default(1),
  fall: int(1, 100).default(1),
  initial: z.enum(['up', 'down'], { error: expected('up or down') }).default('up'),
};

const argvWhat = 'a command as a list of its argv, like ["/usr/bin/pgrep", "-x", "nginx"]';
const execSchema = z.strictObject({
  ...common,
  type: z.literal('exec'),
  target: z
    .array(z.string({ error: expected('a non-empty string') }).min(1, { error: expected('a non-empty string') }), {
      error: expected(argvWhat),
    })
    .min(1, { error: expected(argvWhat) }),
});

const hostPortWhat = 'HOST:PORT like 127.0.0.1:80 or [::1]:80';
const tcpSchema = z.strictObject({
  ...common,
  type: z.literal('tcp'),
  target: z
    .string({ error: expected(hostPortWhat) })
    .refine((s) => parseHostPort(s) !== undefined, { error: expected(hostPortWhat) })
    .transform((s) => parseHostPort(s)!),
});

function urlSchema(scheme: 'http' | 'https') {
  const what = `a ${scheme}:// URL like ${scheme}://127.0.0.1:8080/healthz`;
  return z.string({ error: expected(what) }).refine(
    (s) => {
      try {
        const u = new URL(s);
        return u.protocol === `${scheme}:` && u.hostname !== '';
      } catch {
        return false;
      }
    },
    { error: expected(what) },
  );
}

const statusWhat = 'a list of HTTP status codes 100..599';
const httpExtra = {
  method: z.enum(HTTP_METHODS, { error: expected(`one of ${HTTP_METHODS.join(', ')}`) }).default('GET'),
  expectStatus: z.array(int(100, 599), { error: expected(statusWhat) }).default([]),
};
const httpSchema = z.strictObject({ ...common, type: z.literal('http'), target: urlSchema('http'), ...httpExtra });
const httpsSchema = z.strictObject({
  ...common,
  type: z.literal('https'),
  target: urlSchema('https'),
  ...httpExtra,
  ca: z
    .string({ error: expected('a file path') })
    .min(1, { error: expected('a file path') })
    .optional(),
});

const checkSchema = z
  .discriminatedUnion('type', [execSchema, tcpSchema, httpSchema, httpsSchema], {
    error: (iss) =>
      typeof iss.input === 'object' && iss.input !== null && !Array.isArray(iss.input)
        ? expected(`type: one of ${CHECK_TYPES.join(', ')}`)({ input: (iss.input as { type?: unknown }).type })
        : expected('a check: a mapping with name, type and target')(iss),
  })
  .superRefine((c, ctx) => {
    if (c.timeoutMs !== undefined && c.timeoutMs > c.intervalMs) {
      ctx.addIssue({
        code: 'custom',
        path: ['timeoutMs'],
        message: `timeoutMs ${c.timeoutMs} must not exceed intervalMs ${c.intervalMs}`,
      });
    }
  })
  .transform((c): CheckConfig => ({ ...c, timeoutMs: c.timeoutMs ?? c.intervalMs }));

export const checksWhat = 'a list of checks (name, type, target, ...)';
export const checksSchema: z.ZodType<CheckConfig[]> = z
  .array(checkSchema, { error: expected(checksWhat) })
  .max(32, { error: 'at most 32 checks' })
  .superRefine((checks, ctx) => {
    const first = new Map<string, number>();
    checks.forEach((c, i) => {
      const j = first.get(c.name);
      if (j !== undefined)
        ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `${c.name} is already the name of [${j}]` });
      else first.set(c.name, i);
    });
  }) as unknown as z.ZodType<CheckConfig[]>;
