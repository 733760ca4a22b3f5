// The CLUSTERIP proc file's text format and command semantics (DESIGN §7), as pure functions. The clusterip
// backend parses the kernel's reads with them; the file backend emulates the kernel with them, so both
// backends share one definition of "the same errors".

/** Errors the kernel's clusterip_proc_write returns. */
export type ProcErrno = 'ENOMEM' | 'ENOENT' | 'EIO' | 'EINVAL';

/** The kernel refuses writes longer than this (PROC_WRITELEN). */
export const PROC_WRITE_MAX = 10;

/** Read format: claimed numbers ascending, comma-separated, one trailing newline; nothing claimed: 0 bytes. */
export function formatProcHeld(held: Iterable<number>): string {
  const sorted = [...new Set(held)].sort((a, b) => a - b);
  return sorted.length === 0 ? '' : `${sorted.join(',')}\n`;
}

/** Parses a read; returns null when the text is not in the kernel's format. */
export function parseProcHeld(text: string): number[] | null {
  if (text === '' || text === '\n') return [];
  if (!/^[0-9]+(,[0-9]+)*\n?$/.test(text)) return null;
  const nums = text.trimEnd().split(',').map(Number);
  for (const n of nums) if (!Number.isSafeInteger(n) || n < 1) return null;
  return nums;
}

export function procCommand(op: '+' | '-', bucket: number): string {
  return `${op}${bucket}\n`;
}

export type ProcWriteResult = { ok: true; held: Set<number> } | { ok: false; errno: ProcErrno };

/**
 * What the kernel does with one write(2) of `input` to a proc file that holds `held` with `total` buckets
 * (ipt_CLUSTERIP.c clusterip_proc_write + kstrtoul). Pure: returns the new held set.
 */
export function procWrite(held: ReadonlySet<number>, total: number, input: string): ProcWriteResult {
  const next = new Set(held);
  const errno = procWriteInPlace(next, total, input);
  return errno === null ? { ok: true, held: next } : { ok: false, errno };
}

/** The same, mutating `held` (the file backend applies thousands of commands per change). Null on success. */
export function procWriteInPlace(held: Set<number>, total: number, input: string): ProcErrno | null {
  if (Buffer.byteLength(input) > PROC_WRITE_MAX) return 'EIO';
  const op = input[0];
  if (op !== '+' && op !== '-') return 'EIO';
  // kstrtoul(s, 10): an optional '+' sign, decimal digits, at most one trailing newline; anything else is EINVAL.
  // Ten bytes cannot overflow an unsigned long, so no ERANGE.
  const m = /^\+?([0-9]+)\n?$/.exec(input.slice(1));
  if (!m) return 'EINVAL';
  // clusterip_add_node/del_node take a u16: the kernel truncates (measured under qemu: "-65537" releases 1).
  const n = Number(m[1]) % 65536;
  if (op === '+') {
    if (n === 0 || n > total || held.has(n)) return 'ENOMEM';
    held.add(n);
  } else {
    if (n === 0 || n > total || !held.has(n)) return 'ENOENT';
    held.delete(n);
  }
  return null;
}
