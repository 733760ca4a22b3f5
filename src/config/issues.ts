import type { z } from 'zod';
import type { InputIssue } from '../errors.js';

// Turning schema issues into InputIssues that name the field the way an operator writes it: vips[1].buckets.

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${String(seg)}` : String(seg);
  }
  return out;
}

/** A short rendering of a bad value for a message: strings quoted, long values cut. */
export function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  const s = typeof v === 'string' ? JSON.stringify(v) : String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** A zod error callback: "required: <what>" when absent, else "expected <what>, got <value>". */
export function expected(what: string) {
  return (iss: { input?: unknown }): string =>
    iss.input === undefined ? `required: ${what}` : `expected ${what}, got ${show(iss.input)}`;
}

/** Like expected, for a secret: the value is never shown. */
export function expectedSecret(what: string) {
  return (iss: { input?: unknown }): string =>
    iss.input === undefined
      ? `required: ${what}`
      : `expected ${what} (a string; quote it in YAML), got ${typeof iss.input === 'string' ? 'an empty one' : `a ${typeof iss.input}`} (not shown)`;
}

/** Like expected, with credentials in a URL (`//user:password@`) blanked. */
export function expectedRedacted(what: string) {
  return (iss: { input?: unknown }): string =>
    iss.input === undefined
      ? `required: ${what}`
      : `expected ${what}, got ${show(typeof iss.input === 'string' ? redactUrl(iss.input) : iss.input)}`;
}

/** `scheme://user:pass@host` → `scheme://***@host`, anywhere in a string. */
export function redactUrl(s: string): string {
  return s.replace(/(\/\/)[^/@\s]*@/g, '$1***@');
}

export interface Locator {
  where: string;
  lineOf?: (path: readonly PropertyKey[]) => number | undefined;
}

function issue(loc: Locator, path: readonly PropertyKey[], message: string): InputIssue {
  const line = loc.lineOf?.(path);
  return { where: loc.where, path: formatPath(path), message, ...(line !== undefined ? { line } : {}) };
}

interface Def {
  type: string;
  shape?: Record<string, { _zod: { def: Def } }>;
  innerType?: { _zod: { def: Def } };
  element?: { _zod: { def: Def } };
  in?: { _zod: { def: Def } };
}

/** The field names a strict object accepts at `path` of `schema`, for "did you mean" hints. */
export function knownFields(schema: z.ZodType, path: readonly PropertyKey[]): string[] | undefined {
  let def = (schema as unknown as { _zod: { def: Def } })._zod.def;
  const unwrap = () => {
    for (;;) {
      const next = def.innerType ?? (def.type === 'pipe' ? def.in : undefined);
      if (!next) return;
      def = next._zod.def;
    }
  };
  for (const seg of path) {
    unwrap();
    const next = def.type === 'object' ? def.shape?.[String(seg)] : def.type === 'array' ? def.element : undefined;
    if (!next) return undefined;
    def = next._zod.def;
  }
  unwrap();
  return def.type === 'object' && def.shape ? Object.keys(def.shape) : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/** "unknown field" plus the likely intended name, or the accepted names. */
export function unknownFieldMessage(key: string, known: readonly string[] | undefined): string {
  if (!known || known.length === 0) return 'unknown field';
  const k = key.toLowerCase();
  const close = known.find(
    (f) =>
      f.toLowerCase().startsWith(k) ||
      k.startsWith(f.toLowerCase()) ||
      editDistance(f.toLowerCase(), k) <= Math.max(1, Math.floor(f.length / 4)),
  );
  return close ? `unknown field; did you mean ${close}?` : `unknown field; expected one of ${known.join(', ')}`;
}

export function toInputIssues(issues: readonly z.core.$ZodIssue[], loc: Locator, schema?: z.ZodType): InputIssue[] {
  const out: InputIssue[] = [];
  for (const i of issues) {
    const path = i.path;
    if (i.code === 'unrecognized_keys') {
      // One issue per unknown key, on the key's own line.
      const known = schema ? knownFields(schema, path) : undefined;
      for (const k of i.keys) out.push(issue(loc, [...path, k], unknownFieldMessage(k, known)));
    } else if (i.code === 'invalid_type' && i.expected === 'object' && i.message.startsWith('Invalid input')) {
      out.push(issue(loc, path, `expected a mapping, got ${show(i.input)}`));
    } else if (i.code === 'invalid_type' && i.expected === 'array' && i.message.startsWith('Invalid input')) {
      out.push(issue(loc, path, `expected a list, got ${show(i.input)}`));
    } else {
      out.push(issue(loc, path, i.message));
    }
  }
  return out;
}

export function mkIssue(loc: Locator, path: readonly PropertyKey[], message: string): InputIssue {
  return issue(loc, path, message);
}

/** Stable order: by line where known, then by path, so messages read top to bottom. */
export function sortIssues(issues: InputIssue[]): InputIssue[] {
  return [...issues].sort(
    (a, b) =>
      (a.where < b.where ? -1 : a.where > b.where ? 1 : 0) ||
      (a.line ?? Infinity) - (b.line ?? Infinity) ||
      (a.path < b.path ? -1 : a.path > b.path ? 1 : 0),
  );
}
