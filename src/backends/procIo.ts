import { constants } from 'node:fs';
import { open, readdir, readFile } from 'node:fs/promises';

// The narrow I/O the clusterip backend does on /proc/net/ipt_CLUSTERIP. Injected so unit tests can check the
// backend's errno interpretation against the pure kernel model (procFormat.procWrite); the real proof against
// the kernel module is the qemu test.

export type ProcWriteOutcome = { ok: true } | { ok: false; phase: 'open' | 'write'; code: string; message: string };

export interface ProcIo {
  /** Exactly one write(2) of `data` (the kernel parses one command per write). */
  write(path: string, data: string): Promise<ProcWriteOutcome>;
  /** The file's text, or null when it does not exist. */
  read(path: string): Promise<string | null>;
  /** Entry names of a directory, or null when it does not exist. */
  list(dir: string): Promise<string[] | null>;
}

function errOf(err: unknown): { code: string; message: string } {
  const e = err as NodeJS.ErrnoException;
  return { code: e.code ?? 'UNKNOWN', message: e.message };
}

export const realProcIo: ProcIo = {
  async write(path, data) {
    let handle;
    try {
      // O_WRONLY without O_TRUNC/O_CREAT: a proc file is opened as is, and a missing one must stay missing.
      handle = await open(path, constants.O_WRONLY);
    } catch (err) {
      return { ok: false, phase: 'open', ...errOf(err) };
    }
    try {
      const buf = Buffer.from(data);
      // position null -> write(2), not pwrite; a small buffer the kernel accepts whole is one syscall.
      await handle.write(buf, 0, buf.length, null);
      return { ok: true };
    } catch (err) {
      return { ok: false, phase: 'write', ...errOf(err) };
    } finally {
      await handle.close().catch(() => undefined);
    }
  },
  async read(path) {
    try {
      return await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  },
  async list(dir) {
    try {
      return await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  },
};
