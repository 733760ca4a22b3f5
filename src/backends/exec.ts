import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { MAX_BUCKETS, type ClusterSpec, type VipSpec } from '../config/types.js';
import { BackendError } from '../errors.js';
import type { ApplyOptions, Backend, BackendDescription, BucketChange, HeldBuckets } from './backend.js';
import { execaRunner, tail, type Runner } from './run.js';
import { Serial } from './serial.js';
import { checkBucket, checkDistinctVips, checkHoldMs, checkVipAddress, checkVip } from './validate.js';

export interface ExecBackendOptions {
  /** argv of the operator's command; run directly, never through a shell. */
  command: string[];
  timeoutMs: number;
  nodeId: string;
  /**
   * Where the backend remembers what the command was told to hold, so a restarted agent or `clusterip-ha fence`
   * can tell the command what to remove. Without it the notion lives in memory only.
   */
  stateFile?: string;
  run?: Runner;
}

/** The environment one run of the command sees. */
export interface ExecEnv {
  CLUSTERIP_HA_OP: 'apply' | 'clear';
  CLUSTERIP_HA_VIP: string;
  CLUSTERIP_HA_ADD: string;
  CLUSTERIP_HA_REMOVE: string;
  CLUSTERIP_HA_HELD: string;
  CLUSTERIP_HA_NODE: string;
  /** Empty when no expiry was requested. */
  CLUSTERIP_HA_HOLD_MS: string;
}

const list = (s: Iterable<number>) => [...s].sort((a, b) => a - b).join(',');

/** The effective change against what is held (pure): what the command must be told, and the result. */
export function execPlan(
  held: ReadonlySet<number>,
  change: BucketChange,
): { add: number[]; remove: number[]; after: Set<number> } {
  const add = [...new Set(change.add)].filter((b) => !held.has(b)).sort((a, b) => a - b);
  const remove = [...new Set(change.remove)].filter((b) => held.has(b)).sort((a, b) => a - b);
  const after = new Set(held);
  for (const b of remove) after.delete(b);
  for (const b of add) after.add(b);
  return { add, remove, after };
}

/**
 * Runs the operator's command (keepalived-style notify) once per VIP whose buckets change, with the change in
 * environment variables. A failing or timed-out command is a transient BackendError: the agent retries it and
 * reports it like a failed kernel write, and the held notion changes only when the command succeeded.
 */
export class ExecBackend implements Backend {
  readonly kind = 'exec' as const;
  private readonly opts: ExecBackendOptions;
  private readonly run: Runner;
  private readonly serial = new Serial();
  private held: HeldBuckets | undefined;
  private vips: Map<string, VipSpec> | undefined;

  constructor(opts: ExecBackendOptions) {
    if (!Array.isArray(opts.command) || opts.command.length === 0 || opts.command.some((a) => typeof a !== 'string')) {
      throw new BackendError('invalid', 'exec backend: command must be a non-empty argv array');
    }
    if (!Number.isInteger(opts.timeoutMs) || opts.timeoutMs < 1) {
      throw new BackendError('invalid', `exec backend: invalid timeoutMs ${opts.timeoutMs}`);
    }
    this.opts = opts;
    this.run = opts.run ?? execaRunner;
  }

  ensure(spec: ClusterSpec): Promise<void> {
    return this.serial.run(async () => {
      for (const v of spec.vips) checkVip(v, MAX_BUCKETS.exec);
      checkDistinctVips(spec.vips);
      const held = await this.load();
      const wanted = new Set(spec.vips.map((v) => v.address));
      for (const [vip, buckets] of [...held]) {
        if (!wanted.has(vip)) await this.runChange('clear', vip, { vip, add: [], remove: [...buckets] });
      }
      this.vips = new Map(spec.vips.map((v) => [v.address, v]));
    });
  }

  read(): Promise<HeldBuckets> {
    return this.serial.run(async () => {
      const held = await this.load();
      return new Map([...held].map(([vip, b]) => [vip, new Set(b)]));
    });
  }

  apply(changes: BucketChange[], opts: ApplyOptions = {}): Promise<void> {
    return this.serial.run(async () => {
      // The hold time matters only for adds; a remove must work even after the deadline passed.
      const hold =
        opts.holdForMs === undefined || !changes.some((c) => c.add.length > 0)
          ? undefined
          : checkHoldMs(opts.holdForMs);
      for (const c of changes) {
        checkVipAddress(c.vip);
        const total = this.vips?.get(c.vip)?.buckets ?? MAX_BUCKETS.exec;
        for (const b of [...c.add, ...c.remove]) checkBucket(b, total, c.vip);
      }
      await this.load();
      for (const c of changes) await this.runChange('apply', c.vip, c, hold);
    });
  }

  async refresh(_holdForMs?: number): Promise<null> {
    // The command has no notion of a deadline; describe().enforcesDeadline is false.
    return null;
  }

  clear(): Promise<void> {
    return this.serial.run(async () => {
      const held = await this.load();
      for (const [vip, buckets] of [...held]) {
        if (buckets.size > 0) await this.runChange('clear', vip, { vip, add: [], remove: [...buckets] });
      }
    });
  }

  describe(): BackendDescription {
    return {
      kind: 'exec',
      enforcesDeadline: false,
      detail: {
        command: this.opts.command.join(' '),
        timeoutMs: this.opts.timeoutMs,
        ...(this.opts.stateFile ? { stateFile: this.opts.stateFile } : {}),
      },
    };
  }

  async close(): Promise<void> {}

  private async runChange(op: 'apply' | 'clear', vip: string, change: BucketChange, hold?: number): Promise<void> {
    const held = this.held!;
    const plan = execPlan(held.get(vip) ?? new Set(), change);
    if (plan.add.length === 0 && plan.remove.length === 0) return;
    const env: ExecEnv = {
      CLUSTERIP_HA_OP: op,
      CLUSTERIP_HA_VIP: vip,
      CLUSTERIP_HA_ADD: list(plan.add),
      CLUSTERIP_HA_REMOVE: list(plan.remove),
      CLUSTERIP_HA_HELD: list(plan.after),
      CLUSTERIP_HA_NODE: this.opts.nodeId,
      CLUSTERIP_HA_HOLD_MS: hold === undefined ? '' : String(hold),
    };
    const [file, ...args] = this.opts.command as [string, ...string[]];
    const r = await this.run(file, args, { timeoutMs: this.opts.timeoutMs, env: { ...env } });
    const what = `exec backend: ${this.opts.command.join(' ')} (${vip} +[${env.CLUSTERIP_HA_ADD}] -[${env.CLUSTERIP_HA_REMOVE}])`;
    if (r.spawnError) throw new BackendError('transient', `${what}: cannot start: ${r.spawnError}`);
    if (r.timedOut) throw new BackendError('transient', `${what}: timed out after ${this.opts.timeoutMs} ms`);
    if (r.exitCode !== 0)
      throw new BackendError('transient', `${what}: exit ${r.exitCode ?? 'by signal'}: ${tail(r.stderr)}`);
    if (plan.after.size === 0) held.delete(vip);
    else held.set(vip, plan.after);
    await this.save();
  }

  private async load(): Promise<HeldBuckets> {
    // With a state file, the file is the truth: the fence worker's instance and the main thread's share it, and
    // a notion cached at one instance's first use would have the other's later changes missing (a clear that
    // tells the command nothing).
    if (this.held && !this.opts.stateFile) return this.held;
    const held: HeldBuckets = new Map();
    if (this.opts.stateFile) {
      let text: string | undefined;
      try {
        text = await readFile(this.opts.stateFile, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
          throw new BackendError('transient', `exec backend state ${this.opts.stateFile}: ${(err as Error).message}`);
      }
      if (text !== undefined) {
        try {
          const doc = JSON.parse(text) as { held?: Record<string, number[]> };
          for (const [vip, buckets] of Object.entries(doc.held ?? {})) {
            checkVipAddress(vip);
            held.set(vip, new Set(buckets.map((b) => checkBucket(b, MAX_BUCKETS.exec, vip))));
          }
        } catch (err) {
          throw new BackendError(
            'invalid',
            `exec backend state ${this.opts.stateFile} is malformed: ${(err as Error).message}`,
          );
        }
      }
    }
    this.held = held;
    return held;
  }

  private async save(): Promise<void> {
    if (!this.opts.stateFile) return;
    const doc = {
      version: 1,
      held: Object.fromEntries([...this.held!].map(([vip, b]) => [vip, [...b].sort((x, y) => x - y)])),
    };
    const tmp = `${this.opts.stateFile}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await mkdir(dirname(this.opts.stateFile), { recursive: true });
      await writeFile(tmp, JSON.stringify(doc) + '\n');
      await rename(tmp, this.opts.stateFile);
    } catch (err) {
      throw new BackendError('transient', `exec backend state ${this.opts.stateFile}: ${(err as Error).message}`);
    }
  }
}
