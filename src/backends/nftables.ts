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
  applyBatch,
  checkNftVersion,
  clearBatch,
  ensureBatch,
  familyOfVip,
  heldFromListing,
  needsIp6,
  parseTableListing,
  probeBatch,
  refreshBatch,
  renewalFromProbeListing,
  setName,
  renewalProbeBatches,
  type TableListing,
  type TimeoutRenewal,
} from './nftRuleset.js';
import type { NftTransportChoice } from '../config/types.js';
import { tail, type Runner } from './run.js';
import { openLibnftables } from './libnftables.js';
import { ProcessTransport, type NftResult, type NftTransport } from './nftTransport.js';
import { Serial } from './serial.js';
import { linkIo, MulticastSubscriptions, type LinkIo, type Subscription } from './multicastMac.js';
import { ipv6Bytes } from '../hash/ipv6.js';
import { arpAnnouncement, sendAnnouncements, unsolicitedNa } from './announce.js';
import { checkBucket, checkDistinctVips, checkHoldMs, checkVipAddress, checkNftName, checkVip } from './validate.js';

export interface NftablesBackendOptions {
  /** Table name in families ip (and arp with arpMangle). Default 'clusterip_ha'. */
  table?: string;
  /** Default 'nft'. */
  nftPath?: string;
  /** Install the ARP (IPv4) and neighbour advertisement (IPv6) rewrites: replies for each VIP carry the cluster MAC. */
  arpMangle?: boolean;
  /** Keep each VIP's cluster MAC on its interface's multicast list (see multicastMac.ts). Default false. */
  multicastSubscribe?: boolean;
  /** Injected for unit tests: the interface side (multicast lists, interface MACs). */
  links?: LinkIo;
  /** Run nft inside this network namespace (`ip netns exec NS nft …`); for tests and benchmarks. */
  netns?: string;
  /**
   * libnftables in process, or an `nft` process per command. Default `auto`: the library, unless it cannot be
   * loaded, `nftPath` names another binary than `nft` (a wrapper the operator wants run) or `netns` is set.
   */
  transport?: NftTransportChoice;
  /** Timeout of one nft command. Default 5 s. */
  commandTimeoutMs?: number;
  /** Injected for unit tests; default execa. */
  run?: Runner;
  /** How to renew element timeouts; default: probed at the first ensure (see TimeoutRenewal). */
  renewal?: TimeoutRenewal;
}

/** Statistics for benchmarks and status: how many nft processes the last call needed. */
export interface NftCallStats {
  batches: number;
  lists: number;
}

/**
 * The nftables backend (DESIGN §7): one table, a set of owned buckets per VIP whose elements carry the fence
 * deadline as a kernel timeout, every change in one atomic `nft -f -` batch.
 */
export class NftablesBackend implements Backend {
  readonly kind = 'nftables' as const;
  readonly table: string;
  private readonly nftPath: string;
  private readonly arpMangle: boolean;
  private readonly links: LinkIo;
  /** null: not asked to subscribe. */
  private readonly mcast: MulticastSubscriptions | null;
  /** The subscriptions were dropped by clear(); the next add takes them again first. */
  private mcastReleased = false;
  /** Per VIP, the announcement of its cluster MAC this process sent ("<iface> <mac> sent" or why not). */
  private readonly announced = new Map<string, string>();
  /** Per IPv6 VIP with arpMangle: the interface MAC its rewrite matches (null: the interface was missing). */
  private readonly ndMacs = new Map<string, string | null>();
  /** Whether an ip6 table may exist (undefined: not known yet, so listings look). */
  private ip6: boolean | undefined;
  private readonly netns: string | undefined;
  private readonly timeoutMs: number;
  private readonly run: Runner | undefined;
  private readonly choice: NftTransportChoice;
  private transport: NftTransport | undefined;
  /** Why `auto` fell back to `nft` (null: it did not, or it was not asked to try). */
  private fallback: string | null = null;
  /** After close(), a later call (a bug, or a last read) spawns nft rather than leak a new library context. */
  private closed = false;
  private readonly serial = new Serial();
  private vips: Map<string, VipSpec> | undefined;
  private spec: ClusterSpec | undefined;
  private preflightDone = false;
  private renewal: TimeoutRenewal | undefined;
  /** Counts of the last public call, for the benchmark's "one batch for any number of changes". */
  lastCall: NftCallStats = { batches: 0, lists: 0 };

  constructor(opts: NftablesBackendOptions = {}) {
    this.table = checkNftName(opts.table ?? 'clusterip_ha');
    this.nftPath = opts.nftPath ?? 'nft';
    this.arpMangle = opts.arpMangle ?? false;
    this.netns = opts.netns;
    this.timeoutMs = opts.commandTimeoutMs ?? 5000;
    this.links =
      opts.links ??
      linkIo({
        // `ip` runs inside the backend's serial queue: a hung one must not hold queued removes for long.
        timeoutMs: Math.min(this.timeoutMs, 2000),
        ...(opts.netns ? { netns: opts.netns } : {}),
        ...(opts.run ? { run: opts.run } : {}),
      });
    this.mcast = opts.multicastSubscribe ? new MulticastSubscriptions(this.links) : null;
    this.run = opts.run;
    this.choice = opts.transport ?? 'auto';
    this.renewal = opts.renewal;
  }

  ensure(spec: ClusterSpec): Promise<void> {
    return this.call(async () => {
      for (const v of spec.vips) checkVip(v, MAX_BUCKETS.nftables);
      checkDistinctVips(spec.vips);
      if (!this.preflightDone) {
        await this.preflight();
        this.preflightDone = true;
      }
      await this.ensureNow(spec);
    });
  }

  read(): Promise<HeldBuckets> {
    return this.call(async () => {
      // The periodic resync reads: a subscription that vanished (an interface re-created) is taken again here.
      if (this.mcast && this.spec && !this.mcastReleased) await this.mcast.check();
      // The neighbour discovery rewrite matches the interface's own MAC: a re-created interface has a new one.
      if (this.spec && (await this.ndChanged(this.spec))) await this.ensureRules(this.spec);
      return this.readNow();
    });
  }

  apply(changes: BucketChange[], opts: ApplyOptions = {}): Promise<void> {
    const calledAt = performance.now();
    return this.call(async () => {
      // The hold time matters only for adds; a remove must work even after the deadline passed.
      const hold =
        opts.holdForMs === undefined || !changes.some((c) => c.add.length > 0)
          ? undefined
          : checkHoldMs(opts.holdForMs);
      for (const c of changes) this.validateChange(c);
      if (hold !== undefined) this.renewal ??= await this.probeRenewal();
      if (this.mcast && this.mcastReleased && this.spec && changes.some((c) => c.add.length > 0)) {
        // After a clear: frames first, then the buckets (a failure is recorded and shown, see multicastMac.ts).
        await this.subscribe(this.spec);
      }
      const batch = applyBatch(
        this.table,
        changes,
        hold === undefined ? undefined : remaining(hold, calledAt),
        this.renewal,
      );
      if (batch !== '') {
        try {
          await this.batch(batch, 'apply');
        } catch (err) {
          // The table or a set vanished (someone flushed the ruleset): rebuild it from the last spec, retry once.
          if (!(err instanceof MissingObjectError) || !this.spec) throw err;
          await this.ensureRules(this.spec);
          await this.batch(batch, 'apply');
        }
      }
      if (changes.some((c) => c.remove.length > 0)) {
        // Confirm removes by reading back: the claim protocol deletes the claim only after the kernel let go.
        const held = await this.readNow();
        for (const c of changes) {
          const still = c.remove.filter((b) => held.get(c.vip)?.has(b));
          if (still.length > 0) {
            throw new BackendError(
              'transient',
              `nft table ${this.table}: VIP ${c.vip} still holds ${still.join(',')} after the remove batch`,
            );
          }
        }
      }
    });
  }

  refresh(holdForMs: number, opts: RefreshOptions = {}): Promise<HeldBuckets> {
    const calledAt = performance.now();
    return this.call(async () => {
      const hold = checkHoldMs(holdForMs);
      this.renewal ??= await this.probeRenewal();
      // Only what the kernel still holds is refreshed: an element that already expired stays expired. With
      // `only`, just the caller's buckets: an element beyond its model has no claim and must run out.
      if (opts.only && (await this.open()).kind === 'libnftables') {
        // The common case in one command: delete and re-add every bucket in one transaction, which the kernel
        // rejects whole if any of them is gone (ran out, or removed behind us): then the listing decides. Only in
        // process: an nft process loads the set's elements to evaluate a delete, slower than listing first
        // (measured: 16 buckets p50 16 ms against 7.8 ms).
        const fast = refreshBatch(this.table, opts.only, remaining(hold, calledAt), 'replace');
        if (fast === '') return new Map();
        try {
          await this.batch(fast, 'refresh');
          return new Map([...opts.only].filter(([, b]) => b.size > 0).map(([v, b]) => [v, new Set(b)]));
        } catch (err) {
          if (!(err instanceof MissingObjectError)) throw err;
        }
      }
      const listed = await this.readNow();
      const held: HeldBuckets = opts.only ? intersect(listed, opts.only) : listed;
      const batch = refreshBatch(this.table, held, remaining(hold, calledAt), this.renewal);
      if (batch !== '') await this.batch(batch, 'refresh');
      return held;
    });
  }

  clear(): Promise<void> {
    return this.call(async () => {
      // Fast path when the sets are known (the agent's instance): no listing before the flush.
      const known = this.vips ? [...this.vips.keys()].map(setName) : [];
      let flushed = false;
      if (known.length > 0) {
        try {
          await this.batch(clearBatch(this.table, known), 'clear');
          flushed = true;
        } catch (err) {
          if (!(err instanceof MissingObjectError)) throw err;
        }
      }
      if (!flushed) {
        const listing = await this.list();
        const batch = listing ? clearBatch(this.table, [...listing.sets.keys()]) : '';
        if (batch !== '') await this.batch(batch, 'clear');
      }
      const after = heldFromListing((await this.list()) ?? { sets: new Map() });
      const left = [...after].filter(([, b]) => b.size > 0);
      if (left.length > 0)
        throw new BackendError('transient', `nft table ${this.table}: buckets still held after clear`);
      // Nothing held, nothing to receive; a failed unsubscribe is recorded for status, not a failed clear.
      if (this.mcast) {
        await this.mcast.release();
        this.mcastReleased = true;
      }
    });
  }

  describe(): BackendDescription {
    return {
      kind: 'nftables',
      enforcesDeadline: true,
      detail: {
        table: this.table,
        nft: this.nftPath,
        transport: this.transport?.kind ?? 'unopened',
        ...(this.fallback ? { transportFallback: this.fallback } : {}),
        arpMangle: this.arpMangle,
        ...(this.announced.size > 0 ? { announced: [...this.announced.values()].join('; ') } : {}),
        multicast: this.mcast
          ? this.mcastReleased
            ? 'released (cleared)'
            : this.mcast.describe().join('; ') || 'none'
          : 'off',
        timeoutRenewal: this.renewal ?? 'unprobed',
        ...(this.netns ? { netns: this.netns } : {}),
      },
    };
  }

  async close(): Promise<void> {
    // The table stays: removing it would make this node accept every bucket; element timeouts do the rest.
    await this.serial.run(async () => {
      this.closed = true;
      this.transport?.close();
      this.transport = undefined;
    });
  }

  private call<T>(op: () => Promise<T>): Promise<T> {
    return this.serial.run(async () => {
      this.lastCall = { batches: 0, lists: 0 };
      return op();
    });
  }

  private validateChange(c: BucketChange): void {
    checkVipAddress(c.vip);
    const vip = this.vips?.get(c.vip);
    if (!vip)
      throw new BackendError(
        'invalid',
        `VIP ${c.vip} is not set up in nft table ${this.table} (ensure a spec naming it first)`,
      );
    for (const b of [...c.add, ...c.remove]) checkBucket(b, vip.buckets, c.vip);
    const both = c.add.filter((b) => c.remove.includes(b));
    if (both.length > 0) throw new BackendError('invalid', `VIP ${c.vip}: bucket ${both[0]} both added and removed`);
  }

  private async ensureNow(spec: ClusterSpec): Promise<void> {
    await this.ensureRules(spec);
    // After the rules: the frames that now arrive meet the drop rule of buckets this node does not own.
    if (this.mcast) await this.subscribe(spec);
    if (this.arpMangle) await this.announce(spec);
  }

  private async subscribe(spec: ClusterSpec): Promise<void> {
    await this.mcast!.ensure(this.subscriptions(spec));
    this.mcastReleased = false;
  }

  /** Tables, sets and rules for the spec, in one batch. */
  private async ensureRules(spec: ClusterSpec): Promise<void> {
    const listing = await this.list();
    const existingSets = [...(listing?.sets.keys() ?? [])];
    await this.batch(
      ensureBatch({
        table: this.table,
        vips: spec.vips,
        existingSets,
        arpMangle: this.arpMangle,
        nd: await this.ndInputs(spec),
      }),
      'ensure',
    );
    this.ip6 = needsIp6(spec.vips, existingSets);
    this.spec = spec;
    this.vips = new Map(spec.vips.map((v) => [v.address, v]));
  }

  /**
   * Once per VIP (and cluster MAC, and interface) and process: a gratuitous ARP reply or an unsolicited neighbour
   * advertisement carrying the cluster MAC, so clients and routers with an entry for the VIP from before (another
   * owner, an earlier MAC) switch now rather than when it ages out. Best effort: nothing here fails the ensure.
   */
  private async announce(spec: ClusterSpec): Promise<void> {
    for (const v of spec.vips) {
      const what = `${v.interface} ${v.clusterMac}`;
      if (this.announced.get(v.address)?.startsWith(`${what} sent`)) continue;
      if (this.netns) {
        this.announced.set(v.address, `${what} not sent (the agent runs outside namespace ${this.netns})`);
        continue;
      }
      const ifaceMac = await this.links.linkAddress(v.interface);
      if (ifaceMac === null) continue;
      const input = { vip: v.address, clusterMac: v.clusterMac, ifaceMac };
      const frame = familyOfVip(v.address) === 'ip6' ? unsolicitedNa(input) : arpAnnouncement(input);
      // Twice, as keepalived does by default: one lost frame should not leave a client on the old MAC.
      const r = await sendAnnouncements(v.interface, [frame, frame]);
      this.announced.set(v.address, 'error' in r ? `${what} not sent (${r.error})` : `${what} sent`);
    }
  }

  private subscriptions(spec: ClusterSpec): Subscription[] {
    return spec.vips.map((v) => ({ iface: v.interface, mac: v.clusterMac }));
  }

  /** What the neighbour advertisement rewrite of each IPv6 VIP needs: its bytes and its interface's own MAC. */
  private async ndInputs(spec: ClusterSpec): Promise<Map<string, { target: number[]; ifaceMac: string }>> {
    const out = new Map<string, { target: number[]; ifaceMac: string }>();
    this.ndMacs.clear();
    if (!this.arpMangle) return out;
    for (const v of spec.vips) {
      if (familyOfVip(v.address) !== 'ip6') continue;
      // An interface that does not exist yet gets its rewrite once it appears (ndChanged, at the next read).
      const mac = await this.links.linkAddress(v.interface);
      this.ndMacs.set(v.address, mac);
      if (mac !== null) out.set(v.address, { target: [...ipv6Bytes(v.address)], ifaceMac: mac });
    }
    return out;
  }

  /** Whether an IPv6 VIP's interface MAC differs from the one its rewrite was written for. */
  private async ndChanged(spec: ClusterSpec): Promise<boolean> {
    for (const [vip, mac] of this.ndMacs) {
      const v = spec.vips.find((x) => x.address === vip);
      if (v && (await this.links.linkAddress(v.interface)) !== mac) return true;
    }
    return false;
  }

  private async readNow(): Promise<HeldBuckets> {
    const listing = await this.list();
    const held = listing ? heldFromListing(listing) : new Map<string, Set<number>>();
    if (!this.vips) return held;
    return new Map([...held].filter(([vip]) => this.vips!.has(vip)));
  }

  private async preflight(): Promise<void> {
    const t = await this.open();
    // Through nft even with the library (which has no version call): the fence worker runs this binary.
    const v = await this.proc().version();
    if (v.exitCode !== 0) throw new BackendError('unsupported', `${this.nftPath} --version failed: ${tail(v.stderr)}`);
    const verdict = checkNftVersion(v.stdout);
    if (!verdict.ok) throw new BackendError('unsupported', verdict.message);
    // Check mode: the kernel validates the transaction and nothing is committed.
    const p = await t.batch(probeBatch(`${this.table}_probe`), { check: true });
    if (p.exitCode !== 0) {
      throw new BackendError(
        'unsupported',
        `the kernel lacks an nf_tables feature the backend needs (jhash, set timeouts, meta pkttype set, conntrack): ${tail(p.stderr)}`,
      );
    }
    this.renewal ??= await this.probeRenewal();
  }

  /** Whether re-adding an element renews its timeout on this kernel: a real (tiny, throwaway) table. */
  private async probeRenewal(): Promise<TimeoutRenewal> {
    const b = renewalProbeBatches(`${this.table}_probe`);
    try {
      for (const [what, text] of [
        ['create', b.create],
        ['renew', b.renew],
      ] as const) {
        const r = await (await this.open()).batch(text);
        if (r.exitCode !== 0)
          throw new BackendError('unsupported', `nft timeout probe (${what}) failed: ${tail(r.stderr)}`);
      }
      const l = await (await this.open()).json(['list', 'set', 'ip', `${this.table}_probe`, 's']);
      if (l.exitCode !== 0) throw new BackendError('unsupported', `nft timeout probe (list) failed: ${tail(l.stderr)}`);
      return renewalFromProbeListing(l.stdout);
    } finally {
      await (await this.open()).batch(b.drop).catch(() => undefined);
    }
  }

  /** The owned sets of both tables (ip6 only where one may exist); null when neither exists. */
  private async list(): Promise<TableListing | null> {
    // A fresh instance (the fence path) asks once which tables exist rather than listing an ip6 table blind.
    if (this.ip6 === undefined) this.ip6 = await this.hasIp6Table();
    const v4 = await this.listFamily('ip');
    const v6 = this.ip6 === false ? null : await this.listFamily('ip6');
    if (!v4 && !v6) return null;
    return { sets: new Map([...(v4?.sets ?? []), ...(v6?.sets ?? [])]) };
  }

  private async hasIp6Table(): Promise<boolean> {
    this.lastCall.lists++;
    const r = await (await this.open()).json(['list', 'tables', 'ip6']);
    if (r.exitCode !== 0) {
      if (/No such file or directory/.test(r.stderr)) return false;
      throw this.failure('list', r);
    }
    const doc = JSON.parse(r.stdout) as { nftables?: { table?: { name?: string } }[] };
    return (doc.nftables ?? []).some((x) => x.table?.name === this.table);
  }

  /** `nft -j list table <family> <table>`; null when the table does not exist. */
  private async listFamily(family: 'ip' | 'ip6'): Promise<TableListing | null> {
    this.lastCall.lists++;
    const r = await (await this.open()).json(['list', 'table', family, this.table]);
    if (r.exitCode !== 0) {
      if (/No such file or directory/.test(r.stderr)) return null;
      throw this.failure('list', r);
    }
    try {
      return parseTableListing(r.stdout);
    } catch (err) {
      throw new BackendError('bug', `nft -j list table ${family} ${this.table}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  private async batch(text: string, what: string): Promise<void> {
    this.lastCall.batches++;
    const r = await (await this.open()).batch(text);
    if (r.exitCode === 0) return;
    if (/No such file or directory/.test(r.stderr)) {
      throw new MissingObjectError(
        `nft ${what} batch: table, set or element missing in ${this.table}: ${tail(r.stderr)}`,
      );
    }
    throw this.failure(what, r);
  }

  /** The transport, chosen at the first call (see `transport` in the options). */
  private async open(): Promise<NftTransport> {
    // A hung library command keeps its context: start over with a fresh one (the hung one is left, not freed).
    if (this.transport?.usable) return this.transport;
    this.transport = undefined;
    const why = this.closed ? 'the backend was closed' : this.libraryUnfit();
    if (this.choice === 'libnftables' && why) throw new BackendError('unsupported', `libnftables: ${why}`);
    if (this.choice === 'nft' || why) return (this.transport = this.proc());
    // Through one nft process first: the fence worker spawns nft, so it must run here, and libnftables exits the
    // whole process when it cannot open its netlink socket, which nft's own exit code shows harmlessly.
    const p = await this.proc().batch(probeBatch(`${this.table}_probe`), { check: true });
    const lib = p.exitCode === 0 ? await openLibnftables(this.timeoutMs) : { error: `nft probe: ${tail(p.stderr)}` };
    if ('error' in lib) {
      if (this.choice === 'libnftables') throw new BackendError('unsupported', `libnftables: ${lib.error}`);
      this.fallback = lib.error;
      return (this.transport = this.proc());
    }
    return (this.transport = lib);
  }

  private proc(): ProcessTransport {
    return new ProcessTransport({
      nftPath: this.nftPath,
      timeoutMs: this.timeoutMs,
      ...(this.netns ? { netns: this.netns } : {}),
      ...(this.run ? { run: this.run } : {}),
    });
  }

  /** Why the library cannot stand in for the configured `nft` here (null: it can). */
  private libraryUnfit(): string | null {
    if (this.netns) return `it runs in the agent's own network namespace, not in ${this.netns}`;
    if (this.nftPath !== 'nft' && !SYSTEM_NFT.includes(this.nftPath))
      return `nftPath ${this.nftPath} is not the system nft the library would stand in for`;
    if (this.run) return 'a command runner was injected';
    return null;
  }

  private failure(what: string, r: NftResult): BackendError {
    const msg = `nft ${what} failed (exit ${r.exitCode}): ${tail(r.stderr)}`;
    if (/Operation not permitted/.test(r.stderr))
      return new BackendError('unsupported', `${msg} (the nftables backend must run as root or with CAP_NET_ADMIN)`);
    // nft refused the text itself: our batch is malformed, retrying cannot help.
    if (/syntax error|datatype mismatch|unexpected|Could not parse/i.test(r.stderr))
      return new BackendError('bug', msg);
    return new BackendError('transient', msg);
  }
}

/**
 * The hold time left now of one granted at `calledAt`: the kernel counts a timeout from its commit, so time spent
 * queued behind another call (or listing) must not extend the hold past the caller's deadline. nft's own latency
 * from spawn to commit is not subtracted: the fence margin covers it (see the backend bench for its p99).
 */
function remaining(holdMs: number, calledAt: number): number {
  const left = Math.floor(holdMs - (performance.now() - calledAt));
  if (left < 1) {
    throw new BackendError('transient', `the fence deadline passed while the change waited (${holdMs} ms granted)`);
  }
  return left;
}

/** Where distributions install nft: an nftPath naming one of them is the binary the library is part of. */
const SYSTEM_NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft', '/bin/nft'];

/** A batch failed because the table or a set does not exist (ENOENT from the kernel). */
class MissingObjectError extends BackendError {
  constructor(message: string) {
    super('transient', message);
  }
}

function intersect(a: HeldBuckets, b: HeldBuckets): HeldBuckets {
  const out: HeldBuckets = new Map();
  for (const [vip, s] of a) {
    const keep = b.get(vip);
    if (!keep) continue;
    const both = new Set([...s].filter((x) => keep.has(x)));
    if (both.size > 0) out.set(vip, both);
  }
  return out;
}
