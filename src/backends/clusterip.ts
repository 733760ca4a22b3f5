import { release } from 'node:os';
import { join } from 'node:path';
import { MAX_BUCKETS, type ClusterSpec, type VipSpec } from '../config/types.js';
import { BackendError } from '../errors.js';
import type { ApplyOptions, Backend, BackendDescription, BucketChange, HeldBuckets } from './backend.js';
import {
  GUARD_CHAIN,
  INIT_CHAIN,
  RULE_LOCAL_NODE,
  clusteripRuleArgs,
  guardRuleArgs,
  iptablesFlavor,
  kernelSupportsClusterip,
  parseClusteripRules,
  parseGuardedVips,
  planRule,
  type RulePlan,
} from './clusteripRule.js';
import { parseProcHeld, procCommand } from './procFormat.js';
import { realProcIo, type ProcIo, type ProcWriteOutcome } from './procIo.js';
import { execaRunner, tail, type Runner } from './run.js';
import { Serial } from './serial.js';
import { checkBucket, checkDistinctVips, checkIpv4, checkVip, isIpv4 } from './validate.js';

export const DEFAULT_PROC_DIR = '/proc/net/ipt_CLUSTERIP';

export interface ClusteripBackendOptions {
  /** Default /proc/net/ipt_CLUSTERIP. */
  procDir?: string;
  /** Install the iptables-legacy CLUSTERIP rule per VIP when absent (and remove rules of VIPs no longer in the spec). */
  manageRule?: boolean;
  /** Default 'iptables-legacy'. */
  iptablesPath?: string;
  /** Kernel release for the 6.3 check; default os.release(). */
  kernelRelease?: string;
  /** Injected for unit tests; default the real filesystem. */
  io?: ProcIo;
  /** Injected for unit tests; default execa. */
  run?: Runner;
  /** Timeout of one iptables command. Default 15 s (iptables -w waits for the xtables lock). */
  commandTimeoutMs?: number;
}

/** The outcome of one command on one proc file, as the backend understood it. */
export type ProcCommandVerdict =
  | 'done'
  | 'alreadySo' // ENOMEM on +N / ENOENT on -N and the read-back agrees
  | 'refused'; // ENOMEM/ENOENT and the read-back disagrees

/**
 * One CLUSTERIP proc file (DESIGN §7): one command per write(2), reads parsed strictly. Exposed for the qemu test,
 * which drives every errno through it.
 */
export class ProcFile {
  constructor(
    readonly path: string,
    private readonly io: ProcIo = realProcIo,
  ) {}

  /** Claimed buckets, ascending; null when the file does not exist (no rule for this VIP). */
  async read(): Promise<number[] | null> {
    let text: string | null;
    try {
      text = await this.io.read(this.path);
    } catch (err) {
      throw ioError(this.path, 'read', err);
    }
    if (text === null) return null;
    const held = parseProcHeld(text);
    if (held === null) throw new BackendError('bug', `${this.path}: unexpected content ${JSON.stringify(text)}`);
    return held;
  }

  /** One raw write(2). */
  write(data: string): Promise<ProcWriteOutcome> {
    return this.io.write(this.path, data);
  }
}

/**
 * The CLUSTERIP backend: claims and releases buckets through /proc/net/ipt_CLUSTERIP/<vip>. The kernel has no
 * expiry, so it does not enforce the fence deadline (`clusterip-ha fence` in ExecStopPost= covers crashes).
 */
export class ClusteripBackend implements Backend {
  readonly kind = 'clusterip' as const;
  readonly procDir: string;
  private readonly manageRule: boolean;
  private readonly iptablesPath: string;
  private readonly kernelRelease: string;
  private readonly io: ProcIo;
  private readonly run: Runner;
  private readonly commandTimeoutMs: number;
  private readonly serial = new Serial();
  private vips: Map<string, VipSpec> | undefined;

  constructor(opts: ClusteripBackendOptions = {}) {
    this.procDir = opts.procDir ?? DEFAULT_PROC_DIR;
    this.manageRule = opts.manageRule ?? false;
    this.iptablesPath = opts.iptablesPath ?? 'iptables-legacy';
    this.kernelRelease = opts.kernelRelease ?? release();
    this.io = opts.io ?? realProcIo;
    this.run = opts.run ?? execaRunner;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 15_000;
  }

  procFile(vip: string): ProcFile {
    return new ProcFile(join(this.procDir, checkIpv4(vip)), this.io);
  }

  ensure(spec: ClusterSpec): Promise<void> {
    return this.serial.run(async () => {
      for (const v of spec.vips) checkVip(v, MAX_BUCKETS.clusterip);
      const v6 = spec.vips.find((v) => !isIpv4(v.address));
      if (v6) {
        throw new BackendError(
          'unsupported',
          `VIP ${v6.address} is IPv6: the clusterip backend is IPv4 only (Linux never had an ip6 CLUSTERIP target); use the nftables backend`,
        );
      }
      checkDistinctVips(spec.vips);
      if (spec.vips.length > 0) {
        const k = kernelSupportsClusterip(this.kernelRelease);
        if (!k.ok && k.reason === 'removedIn6_3') throw new BackendError('unsupported', k.message);
      }
      const kept = this.manageRule ? await this.ensureRules(spec) : [];
      for (const v of spec.vips) {
        if ((await this.procFile(v.address).read()) === null) {
          throw new BackendError('unsupported', this.missingProcMessage(v));
        }
      }
      // VIPs the spec dropped go dark: every bucket released, the rule kept (see ensureRules).
      const wanted = new Set(spec.vips.map((v) => v.address));
      const dropped = new Set([...kept, ...(this.vips?.keys() ?? [])].filter((a) => !wanted.has(a)));
      for (const vip of [...dropped].sort()) {
        const held = await this.procFile(vip).read();
        if (held && held.length > 0) await this.applyOne(vip, [], held);
      }
      this.vips = new Map(spec.vips.map((v) => [v.address, v]));
    });
  }

  read(): Promise<HeldBuckets> {
    return this.serial.run(async () => {
      const out: HeldBuckets = new Map();
      for (const vip of await this.knownVips()) {
        const held = await this.procFile(vip).read();
        if (held !== null) out.set(vip, new Set(held));
      }
      return out;
    });
  }

  apply(changes: BucketChange[], _opts?: ApplyOptions): Promise<void> {
    // holdForMs is ignored: the CLUSTERIP module has no expiry.
    return this.serial.run(async () => {
      for (const c of changes) this.validateChange(c);
      for (const c of changes) await this.applyOne(c.vip, c.add, c.remove);
    });
  }

  async refresh(_holdForMs?: number): Promise<null> {
    // Nothing to extend: the kernel cannot enforce the deadline (describe().enforcesDeadline is false).
    return null;
  }

  clear(): Promise<void> {
    return this.serial.run(async () => {
      // Every proc file, not just the spec's: a VIP the spec dropped keeps its rule (dark) and must stay dark.
      const listed = (await this.io.list(this.procDir).catch(() => null)) ?? [];
      const vips = new Set([...(await this.knownVips()), ...listed.filter(isIpv4)]);
      for (const vip of [...vips].sort()) {
        const held = await this.procFile(vip).read();
        if (held === null || held.length === 0) continue;
        await this.applyOne(vip, [], held);
      }
    });
  }

  describe(): BackendDescription {
    return {
      kind: 'clusterip',
      enforcesDeadline: false,
      detail: { procDir: this.procDir, manageRule: this.manageRule, iptables: this.iptablesPath },
    };
  }

  async close(): Promise<void> {
    // Rules and claims stay: the agent releases explicitly, and `fence` clears after a crash.
  }

  private validateChange(c: BucketChange): void {
    checkIpv4(c.vip);
    const total = this.vips?.get(c.vip)?.buckets ?? MAX_BUCKETS.clusterip;
    for (const b of [...c.add, ...c.remove]) checkBucket(b, total, c.vip);
    const both = c.add.filter((b) => c.remove.includes(b));
    if (both.length > 0) throw new BackendError('invalid', `VIP ${c.vip}: bucket ${both[0]} both added and removed`);
  }

  /** Removes first (the safe direction), one command per write, then one read-back that must agree. */
  private async applyOne(vip: string, add: readonly number[], remove: readonly number[]): Promise<void> {
    const file = this.procFile(vip);
    const outcomes: { op: '+' | '-'; bucket: number; out: ProcWriteOutcome }[] = [];
    for (const [op, list] of [
      ['-', remove],
      ['+', add],
    ] as const) {
      for (const bucket of list) {
        const out = await file.write(procCommand(op, bucket));
        if (!out.ok) {
          if (out.phase === 'open') throw this.openError(vip, out);
          if (out.code === 'EIO' || out.code === 'EINVAL') {
            throw new BackendError(
              'bug',
              `${file.path}: "${op}${bucket}" rejected as malformed (${out.code}): ${out.message}`,
            );
          }
          if (out.code !== 'ENOMEM' && out.code !== 'ENOENT') {
            throw new BackendError('transient', `${file.path}: "${op}${bucket}" failed: ${out.code} ${out.message}`);
          }
        }
        outcomes.push({ op, bucket, out });
      }
    }
    const heldList = await file.read();
    if (heldList === null)
      throw new BackendError('transient', `${file.path} vanished during the change (rule removed?)`);
    const held = new Set(heldList);
    for (const o of outcomes) {
      const verdict = judge(o.op, o.bucket, o.out, held);
      if (verdict === 'refused') {
        const errno = o.out.ok ? 'success' : o.out.code;
        throw new BackendError(
          o.out.ok ? 'transient' : 'invalid',
          `${file.path}: "${o.op}${o.bucket}" returned ${errno} but the read-back holds ${heldList.join(',') || 'nothing'}` +
            (o.op === '+' && !o.out.ok ? " (is the rule's --total-nodes smaller than the spec's buckets?)" : ''),
        );
      }
    }
  }

  private async knownVips(): Promise<string[]> {
    if (this.vips) return [...this.vips.keys()];
    let names: string[] | null;
    try {
      names = await this.io.list(this.procDir);
    } catch (err) {
      throw ioError(this.procDir, 'list', err);
    }
    return (names ?? []).filter(isIpv4).sort();
  }

  private openError(vip: string, out: Extract<ProcWriteOutcome, { ok: false }>): BackendError {
    if (out.code === 'ENOENT') {
      const v = this.vips?.get(vip);
      return new BackendError(
        'invalid',
        v ? this.missingProcMessage(v) : `${join(this.procDir, vip)} does not exist: no CLUSTERIP rule for ${vip}`,
      );
    }
    if (out.code === 'EACCES' || out.code === 'EPERM') {
      return new BackendError(
        'unsupported',
        `${join(this.procDir, vip)}: ${out.code} (the clusterip backend must run as root)`,
      );
    }
    return new BackendError('transient', `${join(this.procDir, vip)}: open failed: ${out.code} ${out.message}`);
  }

  private missingProcMessage(v: VipSpec): string {
    const k = kernelSupportsClusterip(this.kernelRelease);
    const hint = this.manageRule
      ? 'the rule was installed but the kernel created no proc file'
      : `install the rule first (${this.iptablesPath} -I INPUT ${clusteripRuleArgs(v).join(' ')}) or set manageRule`;
    return `${join(this.procDir, v.address)} does not exist: no CLUSTERIP rule for ${v.address}; ${hint}${k.ok ? '' : ` (${k.message})`}`;
  }

  // ---- rule management (manageRule) ----

  private async iptables(
    args: string[],
  ): Promise<{ ok: boolean; exitCode: number | undefined; stderr: string; stdout: string }> {
    const r = await this.run(this.iptablesPath, ['-w', '5', ...args], { timeoutMs: this.commandTimeoutMs });
    if (r.spawnError) {
      throw new BackendError(
        'unsupported',
        `cannot run ${this.iptablesPath} (${r.spawnError}); the clusterip backend with manageRule needs iptables-legacy (Debian: apt-get install iptables)`,
      );
    }
    if (r.timedOut)
      throw new BackendError(
        'transient',
        `${this.iptablesPath} ${args.join(' ')} timed out after ${this.commandTimeoutMs} ms`,
      );
    return { ok: r.exitCode === 0, exitCode: r.exitCode, stderr: r.stderr, stdout: r.stdout };
  }

  /** Installs or replaces the spec's rules; returns the VIPs whose rules stay although the spec dropped them. */
  private async ensureRules(spec: ClusterSpec): Promise<string[]> {
    const version = await this.run(this.iptablesPath, ['--version'], { timeoutMs: this.commandTimeoutMs });
    if (version.spawnError) {
      throw new BackendError(
        'unsupported',
        `cannot run ${this.iptablesPath} (${version.spawnError}); install iptables-legacy (Debian: apt-get install iptables)`,
      );
    }
    const flavor = iptablesFlavor(version.stdout + version.stderr, this.iptablesPath);
    if (!flavor.ok) throw new BackendError('unsupported', flavor.message);

    const listing = await this.listInput();
    const rules = parseClusteripRules(listing);
    const guarded = parseGuardedVips(listing);
    for (const v of spec.vips) {
      const mine = rules.filter((r) => r.vip === v.address);
      const procExists = (await this.procFile(v.address).read()) !== null;
      const plan = planRule(v, mine, procExists, guarded.has(v.address));
      if (plan.action === 'keep') continue;
      if (plan.action === 'install') await this.bornRule(v);
      else await this.rebuildRule(v, mine, plan.reason);
    }
    // Rules of VIPs no longer in the spec stay (DESIGN §12): the address may still be configured, and without its
    // rule every node would accept every client. ensure() releases their buckets; CLUSTERIP with no bucket claimed
    // accepts nothing (dark) until an operator removes the rule.
    return rules.filter((r) => !spec.vips.some((v) => v.address === r.vip) && isIpv4(r.vip)).map((r) => r.vip);
  }

  private async listInput(): Promise<string> {
    const listing = await this.iptables(['-S', 'INPUT']);
    if (!listing.ok) throw this.iptablesError('list', undefined, listing.stderr);
    return listing.stdout;
  }

  /**
   * Replaces the VIP's config (DESIGN §12): guard (drop the VIP's traffic), delete every old rule (the config dies
   * with the last one, its proc file with it), create the config anew, then lift the guard. The VIP is dark
   * throughout, never open to every client. The agent released the VIP's buckets before; buckets still claimed under
   * a live rule are refused rather than silently dropped with the old config.
   */
  private async rebuildRule(
    v: VipSpec,
    old: readonly { spec: string[] }[],
    reason: Extract<RulePlan, { action: 'rebuild' }>['reason'],
  ): Promise<void> {
    const file = this.procFile(v.address);
    const held = await file.read();
    if (reason !== 'interrupted' && old.length > 0 && held !== null && held.length > 0) {
      throw new BackendError(
        'transient',
        `${file.path}: the CLUSTERIP rule for ${v.address} must be replaced (${reason}) but buckets ${held.join(',')} are still claimed; release every bucket of the VIP first`,
      );
    }
    const mk = await this.iptables(['-N', GUARD_CHAIN]);
    if (!mk.ok && !/exists/i.test(mk.stderr)) throw this.iptablesError('create guard chain', v, mk.stderr);
    if (!(await this.iptables(['-C', GUARD_CHAIN, '-j', 'DROP'])).ok) {
      const drop = await this.iptables(['-A', GUARD_CHAIN, '-j', 'DROP']);
      if (!drop.ok) throw this.iptablesError('fill guard chain', v, drop.stderr);
    }
    const guard = guardRuleArgs(v.address);
    if (!(await this.iptables(['-C', 'INPUT', ...guard])).ok) {
      const ins = await this.iptables(['-I', 'INPUT', ...guard]);
      if (!ins.ok) throw this.iptablesError('insert the guard before replacing', v, ins.stderr);
    }
    for (const r of old) {
      const del = await this.iptables(['-D', 'INPUT', ...r.spec]);
      if (!del.ok) throw this.iptablesError('delete', v, del.stderr);
    }
    // A config born by an interrupted install lives on through the init chain's rule.
    await this.iptables(['-F', INIT_CHAIN]).catch(() => undefined);
    await this.iptables(['-X', INIT_CHAIN]).catch(() => undefined);
    if ((await file.read()) !== null) {
      throw new BackendError(
        'invalid',
        `${file.path} outlived every CLUSTERIP rule for ${v.address} in INPUT: another rule (another chain or table) keeps the old config alive, so a new --total-nodes/--hashmode/--hash-init would be ignored; delete it (the VIP stays dark until then)`,
      );
    }
    await this.bornRule(v);
    const lift = await this.iptables(['-D', 'INPUT', ...guard]);
    if (!lift.ok) throw this.iptablesError('delete the guard', v, lift.stderr);
  }

  /**
   * `--new --local-node 1` makes the kernel claim bucket 1 the moment the rule is checked. To never own a bucket
   * without a claim, the config is born from a rule in an unhooked user chain (no packet can reach it), bucket 1
   * is unclaimed through the proc file, the total is confirmed, and only then is the real INPUT rule inserted (it
   * finds the existing config and does not reset its claims). Precondition: no config exists for the VIP.
   */
  private async bornRule(v: VipSpec): Promise<void> {
    const args = clusteripRuleArgs(v);
    const file = this.procFile(v.address);
    const mk = await this.iptables(['-N', INIT_CHAIN]);
    if (!mk.ok && !/exists/i.test(mk.stderr)) throw this.iptablesError('create chain', v, mk.stderr);
    try {
      const born = await this.iptables(['-A', INIT_CHAIN, ...args]);
      if (!born.ok) throw this.iptablesError('insert', v, born.stderr);
      const held = await file.read();
      if (held === null) throw new BackendError('unsupported', this.missingProcMessage(v));
      if (held.includes(RULE_LOCAL_NODE)) await this.applyOne(v.address, [], [RULE_LOCAL_NODE]);
      await this.confirmTotal(v);
      const ins = await this.iptables(['-I', 'INPUT', ...args]);
      if (!ins.ok) throw this.iptablesError('insert', v, ins.stderr);
    } finally {
      await this.iptables(['-F', INIT_CHAIN]).catch(() => undefined);
      await this.iptables(['-X', INIT_CHAIN]).catch(() => undefined);
    }
  }

  /**
   * The proc file accepts `+total` and refuses `+(total+1)`: the config has the spec's total. Only while no packet
   * can reach the config (before its INPUT rule exists); leaves nothing claimed.
   */
  private async confirmTotal(v: VipSpec): Promise<void> {
    const file = this.procFile(v.address);
    const top = await file.write(procCommand('+', v.buckets));
    const over = v.buckets < MAX_BUCKETS.clusterip ? await file.write(procCommand('+', v.buckets + 1)) : null;
    const held = (await file.read()) ?? [];
    const extra = held.filter((b) => b === v.buckets || b === v.buckets + 1);
    if (extra.length > 0) await this.applyOne(v.address, [], extra);
    const overRefused = over === null || (!over.ok && over.code === 'ENOMEM' && !held.includes(v.buckets + 1));
    if (!top.ok || !held.includes(v.buckets) || !overRefused) {
      throw new BackendError(
        'invalid',
        `${file.path}: the new CLUSTERIP config does not have ${v.buckets} buckets (+${v.buckets}: ${top.ok ? 'ok' : top.code}, read back ${held.join(',') || 'nothing'})`,
      );
    }
  }

  private iptablesError(what: string, v: VipSpec | undefined, stderr: string): BackendError {
    const vip = v ? ` for ${v.address}` : '';
    if (
      /CLUSTERIP/.test(stderr) &&
      /(No chain\/target\/match|Couldn't load target|Extension CLUSTERIP)/i.test(stderr)
    ) {
      const k = kernelSupportsClusterip(this.kernelRelease);
      return new BackendError(
        'unsupported',
        `${this.iptablesPath}: cannot ${what} the CLUSTERIP rule${vip}: ${tail(stderr)} (the ipt_CLUSTERIP module is missing${k.ok ? '' : `; ${k.message}`})`,
      );
    }
    return new BackendError(
      'invalid',
      `${this.iptablesPath}: cannot ${what} the CLUSTERIP rule${vip}: ${tail(stderr)}`,
    );
  }
}

/** How one command's result reads against the read-back (pure; DESIGN §7). */
export function judge(
  op: '+' | '-',
  bucket: number,
  out: ProcWriteOutcome,
  held: ReadonlySet<number>,
): ProcCommandVerdict {
  const wantHeld = op === '+';
  const agrees = held.has(bucket) === wantHeld;
  if (out.ok) return agrees ? 'done' : 'refused';
  const benign = (op === '+' && out.code === 'ENOMEM') || (op === '-' && out.code === 'ENOENT');
  return benign && agrees ? 'alreadySo' : 'refused';
}

function ioError(path: string, what: string, err: unknown): BackendError {
  const code = (err as NodeJS.ErrnoException).code;
  const kind = code === 'EACCES' || code === 'EPERM' ? 'unsupported' : 'transient';
  return new BackendError(kind, `${path}: ${what} failed: ${(err as Error).message}`, { cause: err });
}
