// The kernel's initramfs format: "newc" cpio, uncompressed (the kernel unpacks it without a decompressor, and
// an uncompressed archive of a few MB is faster to load under TCG than to inflate).

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Buffer; mode?: number }
  | { kind: 'symlink'; path: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

function header(ino: number, mode: number, size: number, name: string): Buffer {
  const nameBuf = Buffer.from(`${name}\0`, 'utf8');
  const fields = [
    ino,
    mode,
    0, // uid
    0, // gid
    mode & S_IFDIR ? 2 : 1, // nlink
    0, // mtime: fixed, so the archive is reproducible
    size,
    0, // devmajor
    0, // devminor
    0, // rdevmajor
    0, // rdevminor
    nameBuf.length,
    0, // check
  ];
  const text = Buffer.from(`070701${fields.map(hex8).join('')}`, 'latin1');
  return Buffer.concat([text, nameBuf, pad4(text.length + nameBuf.length)]);
}

/** Encode entries (parents before children; paths without a leading slash) as one newc archive. */
export function encodeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const path = e.path.replace(/^\/+/, '');
    if (e.kind === 'dir') {
      parts.push(header(ino++, S_IFDIR | (e.mode ?? 0o755), 0, path));
    } else {
      const data = e.kind === 'file' ? e.data : Buffer.from(e.target, 'utf8');
      const mode = e.kind === 'file' ? S_IFREG | (e.mode ?? 0o644) : S_IFLNK | 0o777;
      parts.push(header(ino++, mode, data.length, path), data, pad4(data.length));
    }
  }
  parts.push(header(0, 0, 0, 'TRAILER!!!'));
  return Buffer.concat(parts);
}
