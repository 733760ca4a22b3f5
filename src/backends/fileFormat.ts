import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BackendError } from '../errors.js';
import type { HeldBuckets } from './backend.js';
import { formatProcHeld, parseProcHeld } from './procFormat.js';
import { isVipAddress } from './validate.js';

// The file backend's on-disk format, shared by the backend (writer) and the invariant observer (readers in
// other processes). One file per VIP, `<dir>/<vip>`, always replaced by rename, so a reader sees either the old
// or the new file, never a torn one:
//
//   1,3,7\n                       <- line 1: the CLUSTERIP proc format (0 bytes in all when nothing is held)
//   expires 1=1717000000000,3=…\n <- line 2 (optional): absolute wall-clock expiry in ms per bucket
//
// A bucket without an `expires` entry never expires. A bucket whose expiry is <= now is not held: readers apply
// expiry themselves, nobody rewrites the file when a bucket expires (like nftables element timeouts).

/** Bucket -> absolute expiry (Date.now() ms), or null for no expiry. */
export type FileEntries = Map<number, number | null>;

export type FileParse = { ok: true; entries: FileEntries } | { ok: false; reason: string };

export function parseFileBackendText(text: string): FileParse {
  if (text === '') return { ok: true, entries: new Map() };
  const lines = text.split('\n');
  // A well-formed file ends with a newline, so the last split element is empty.
  if (lines[lines.length - 1] !== '') return { ok: false, reason: 'missing trailing newline' };
  lines.pop();
  if (lines.length > 2) return { ok: false, reason: 'more than two lines' };
  const held = parseProcHeld(`${lines[0]}\n`);
  if (held === null) return { ok: false, reason: `line 1 is not in the proc format: ${JSON.stringify(lines[0])}` };
  const entries: FileEntries = new Map(held.map((b) => [b, null]));
  if (lines.length === 2) {
    const m = /^expires (\d+=\d+(,\d+=\d+)*)$/.exec(lines[1]!);
    if (!m) return { ok: false, reason: `line 2 is not "expires b=ms,…": ${JSON.stringify(lines[1])}` };
    for (const pair of m[1]!.split(',')) {
      const [b, ms] = pair.split('=').map(Number) as [number, number];
      if (!entries.has(b)) return { ok: false, reason: `expiry for bucket ${b}, which line 1 does not hold` };
      if (!Number.isSafeInteger(ms)) return { ok: false, reason: `bad expiry for bucket ${b}` };
      entries.set(b, ms);
    }
  }
  return { ok: true, entries };
}

export function formatFileBackendText(entries: FileEntries): string {
  const buckets = [...entries.keys()].sort((a, b) => a - b);
  const first = formatProcHeld(buckets);
  const exp = buckets.filter((b) => entries.get(b) != null).map((b) => `${b}=${entries.get(b)}`);
  return exp.length === 0 ? first : `${first}expires ${exp.join(',')}\n`;
}

/** Buckets not expired at nowMs. */
export function heldAt(entries: FileEntries, nowMs: number): Set<number> {
  const out = new Set<number>();
  for (const [b, exp] of entries) if (exp === null || exp > nowMs) out.add(b);
  return out;
}

/** Entries without the ones expired at nowMs (what a writer carries forward). */
export function unexpired(entries: FileEntries, nowMs: number): FileEntries {
  return new Map([...entries].filter(([, exp]) => exp === null || exp > nowMs));
}

/** Sync pure-ish parser for one file's text with expiry applied; throws BackendError('bug') when malformed. */
export function parseFileBackendHeld(text: string, nowMs: number, where = 'file backend'): Set<number> {
  const p = parseFileBackendText(text);
  if (!p.ok) throw new BackendError('bug', `${where}: ${p.reason}`);
  return heldAt(p.entries, nowMs);
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}

/**
 * Every VIP file in `dir` with expiry applied. A missing directory holds nothing. Temp files (dot-prefixed)
 * and anything not named like a VIP address are ignored; a file removed while listing counts as absent.
 */
export async function readFileBackendDir(dir: string, nowMs: number): Promise<HeldBuckets> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (isMissing(err)) return new Map();
    throw err;
  }
  const out: HeldBuckets = new Map();
  for (const name of names.filter(isVipAddress).sort()) {
    let text: string;
    try {
      text = await readFile(join(dir, name), 'utf8');
    } catch (err) {
      if (isMissing(err)) continue;
      throw err;
    }
    out.set(name, parseFileBackendHeld(text, nowMs, join(dir, name)));
  }
  return out;
}

/** The same as readFileBackendDir, synchronously (for the observer's 10 ms poll loop). */
export function readFileBackendDirSync(dir: string, nowMs: number): HeldBuckets {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if (isMissing(err)) return new Map();
    throw err;
  }
  const out: HeldBuckets = new Map();
  for (const name of names.filter(isVipAddress).sort()) {
    let text: string;
    try {
      text = readFileSync(join(dir, name), 'utf8');
    } catch (err) {
      if (isMissing(err)) continue;
      throw err;
    }
    out.set(name, parseFileBackendHeld(text, nowMs, join(dir, name)));
  }
  return out;
}
