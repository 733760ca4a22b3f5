import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MAX_BUCKETS, type ClusterSpec, type VipSpec } from '../config/types.js';
import { BackendError } from '../errors.js';
import type {
  ApplyOptions,
  Backend,
  BackendDescription,
  BucketChange,
  HeldBuckets,
  RefreshOptions,
} from './backend.js';
import {
  formatFileBackendText,
  heldAt,
  parseFileBackendText,
  readFileBackendDir,
  unexpired,
  type FileEntries,
} from './fileFormat.js';
import { procCommand, procWriteInPlace } from './procFormat.js';
import { Serial } from './serial.js';
import { writeFaultsFromEnv, type WriteFaults } from './writeFaults.js';
import { checkBucket, checkDistinctVips, checkHoldMs, checkVipAddress, checkVip, isVipAddress } from './validate.js';

export { readFileBackendDir, readFileBackendDirSync, parseFileBackendHeld } from './fileFormat.js';

export interface FileBackendOptions {
  dir: string;
  /** Wall clock for expiries (tests move it). Default Date.now. */
  now?: () => number;
  /** Injected write faults (chaos); default: from CLUSTERIP_HA_WRITE_FAULTS, usually none. */
  faults?: WriteFaults;
}

/**
 * The proc format in plain files, one per VIP, with per-bucket expiry. Each change goes through the same
 * command semantics as the kernel's proc file (procWrite), so adds/removes fail the same way; every write is a
 * new file renamed over the old one.
 */
export class FileBackend implements Backend {
  readonly kind = 'file' as const;
  private readonly dir: string;
  private readonly now: () => number;
  private readonly serial = new Serial();
  private vips: Map<string, VipSpec> | undefined;
  private readonly faults: WriteFaults | undefined;

  constructor(opts: FileBackendOptions) {
    this.dir = opts.dir;
    this.now = opts.now ?? Date.now;
    this.faults = opts.faults ?? writeFaultsFromEnv();
  }

  ensure(spec: ClusterSpec): Promise<void> {
    return this.serial.run(async () => {
      for (const v of spec.vips) checkVip(v, MAX_BUCKETS.file);
      checkDistinctVips(spec.vips);
      await mkdir(this.dir, { recursive: true });
      const existing = new Set((await readdir(this.dir)).filter(isVipAddress));
      for (const v of spec.vips) {
        if (!existing.has(v.address)) await this.writeEntries(v.address, new Map());
      }
      const wanted = new Set(spec.vips.map((v) => v.address));
      for (const name of existing) {
        if (!wanted.has(name)) await unlink(join(this.dir, name)).catch(ignoreMissing);
      }
      this.vips = new Map(spec.vips.map((v) => [v.address, v]));
    });
  }

  read(): Promise<HeldBuckets> {
    return this.serial.run(() => this.readNow());
  }

  apply(changes: BucketChange[], opts: ApplyOptions = {}): Promise<void> {
    // Expiries count from the call, not from when the serialized write runs: never hold past the caller's deadline.
    const calledAt = this.now();
    return this.serial.run(async () => {
      // The hold time matters only for adds; a remove must work even after the deadline passed.
      const hold =
        opts.holdForMs === undefined || !changes.some((c) => c.add.length > 0)
          ? undefined
          : checkHoldMs(opts.holdForMs);
      const plans = changes.map((c) => this.validateChange(c));
      for (const { change, total } of plans) {
        const now = this.now();
        let entries = unexpired(await this.readEntries(change.vip), now);
        const held = heldAt(entries, now);
        for (const b of change.remove) {
          const errno = procWriteInPlace(held, total, procCommand('-', b));
          // ENOENT on a remove means "not held": already so (the state it was checked against is the file's).
          if (errno !== null && (errno !== 'ENOENT' || held.has(b))) throw procError(change.vip, `-${b}`, errno);
          entries.delete(b);
        }
        const expiry = hold === undefined ? null : calledAt + hold;
        for (const b of change.add) {
          const errno = procWriteInPlace(held, total, procCommand('+', b));
          if (errno !== null && (errno !== 'ENOMEM' || !held.has(b))) throw procError(change.vip, `+${b}`, errno);
          entries.set(b, expiry);
        }
        await this.writeEntries(change.vip, entries);
        // Read back: the claim protocol deletes a claim only after the kernel (here: the file) let go.
        entries = await this.readEntries(change.vip);
        const after = heldAt(entries, this.now());
        for (const b of change.remove) {
          if (after.has(b))
            throw new BackendError('transient', `${this.path(change.vip)}: bucket ${b} still held after remove`);
        }
      }
    });
  }

  refresh(holdForMs: number, opts: RefreshOptions = {}): Promise<HeldBuckets> {
    // The file must hold wall-clock expiries (other processes read it) while the agent's deadline is
    // monotonic: the expiry is the wall time of the call plus the monotonic time left then, so only a wall
    // clock step during the hold can skew it.
    const calledAt = this.now();
    return this.serial.run(async () => {
      const hold = checkHoldMs(holdForMs);
      const renewed: HeldBuckets = new Map();
      for (const vip of await this.knownVips()) {
        const only = opts.only?.get(vip);
        if (opts.only && !only) continue;
        const now = this.now();
        const entries = unexpired(await this.readEntries(vip), now);
        if (entries.size === 0) continue;
        // Only what the caller holds is renewed; anything else keeps its expiry and runs out.
        const mine = [...entries.keys()].filter((b) => !only || only.has(b));
        for (const b of mine) entries.set(b, calledAt + hold);
        await this.writeEntries(vip, entries);
        if (mine.length > 0) renewed.set(vip, new Set(mine));
      }
      return renewed;
    });
  }

  clear(): Promise<void> {
    return this.serial.run(async () => {
      for (const vip of await this.knownVips()) await this.writeEntries(vip, new Map());
    });
  }

  describe(): BackendDescription {
    return { kind: 'file', enforcesDeadline: true, detail: { dir: this.dir } };
  }

  async close(): Promise<void> {
    // Nothing to release: the files are the state, and they must outlive the process (fence reads them).
  }

  private validateChange(change: BucketChange): { change: BucketChange; total: number } {
    checkVipAddress(change.vip);
    const vip = this.vips?.get(change.vip);
    if (!vip)
      throw new BackendError(
        'invalid',
        `VIP ${change.vip} is not set up in ${this.dir} (ensure a spec naming it first)`,
      );
    for (const b of [...change.add, ...change.remove]) checkBucket(b, vip.buckets, change.vip);
    const both = change.add.filter((b) => change.remove.includes(b));
    if (both.length > 0)
      throw new BackendError('invalid', `VIP ${change.vip}: bucket ${both[0]} both added and removed`);
    return { change, total: vip.buckets };
  }

  private async readNow(): Promise<HeldBuckets> {
    const all = await readFileBackendDir(this.dir, this.now());
    if (!this.vips) return all;
    return new Map([...all].filter(([vip]) => this.vips!.has(vip)));
  }

  private async knownVips(): Promise<string[]> {
    if (this.vips) return [...this.vips.keys()];
    return [...(await readFileBackendDir(this.dir, this.now())).keys()];
  }

  private path(vip: string): string {
    return join(this.dir, vip);
  }

  private async readEntries(vip: string): Promise<FileEntries> {
    let text: string;
    try {
      text = await readFile(this.path(vip), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new BackendError('invalid', `${this.path(vip)} does not exist (ensure a spec naming ${vip} first)`);
      }
      throw new BackendError('transient', `${this.path(vip)}: ${(err as Error).message}`, { cause: err });
    }
    const p = parseFileBackendText(text);
    if (!p.ok) throw new BackendError('bug', `${this.path(vip)}: ${p.reason}`);
    return p.entries;
  }

  /** Write a new file and rename it over the old one: readers in other processes never see a torn file. */
  private async writeEntries(vip: string, entries: FileEntries): Promise<void> {
    await this.faults?.beforeWrite(this.path(vip));
    const tmp = join(this.dir, `.${vip}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      await writeFile(tmp, formatFileBackendText(entries));
      await rename(tmp, this.path(vip));
    } catch (err) {
      await unlink(tmp).catch(ignoreMissing);
      throw new BackendError('transient', `${this.path(vip)}: ${(err as Error).message}`, { cause: err });
    }
  }
}

function procError(vip: string, cmd: string, errno: string): BackendError {
  // With commands built from validated numbers, only an out-of-range bucket can get here.
  return new BackendError('invalid', `file backend ${vip}: "${cmd}" refused with ${errno}`);
}

function ignoreMissing(err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
}
