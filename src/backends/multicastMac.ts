import { readFile } from 'node:fs/promises';
import { BackendError } from '../errors.js';
import { execaRunner, tail, type RunResult, type Runner } from './run.js';

// The cluster MAC on the VIP's interface's multicast list. A real NIC (and a macvlan, the usual interface of VMs
// and containers) delivers a frame addressed to a multicast MAC only if that MAC is on the interface's list;
// veths and bridges deliver everything, which is why nothing else would notice. CLUSTERIP subscribes itself; for
// nftables the backend does what `ip maddr add MAC dev IFACE` does, while the VIP's rule is installed, and checks
// the list again at every read (from /proc/net/dev_mcast: no process in steady state).

export interface Subscription {
  iface: string;
  mac: string;
}

export interface McastEntry extends Subscription {
  /** Added from user space (`ip maddr add`, SIOCADDMULTI), not by a protocol or driver of the kernel. */
  global: boolean;
}

/** Per subscription, what the last check found. */
export type SubscriptionState =
  | { state: 'subscribed' }
  /** The interface filters nothing (loopback, and devices without a receive filter): nothing to subscribe. */
  | { state: 'notNeeded'; reason: string }
  | { state: 'failed'; reason: string };

/** `/proc/net/dev_mcast`: "ifindex ifname refcount global_use hexaddr" per line. */
export function parseDevMcast(text: string): McastEntry[] {
  const out: McastEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length !== 5 || !/^[0-9a-f]{12}$/.test(f[4]!)) continue;
    const mac = f[4]!.match(/../g)!.join(':');
    out.push({ iface: f[1]!, mac, global: f[3] !== '0' });
  }
  return out;
}

const key = (s: Subscription): string => `${s.iface} ${s.mac}`;

/** The wanted subscriptions a listing lacks. A MAC a protocol joined (not global) can still go, so it counts not. */
export function missingSubscriptions(wanted: readonly Subscription[], present: readonly McastEntry[]): Subscription[] {
  const have = new Set(present.filter((e) => e.global).map(key));
  const seen = new Set<string>();
  return wanted.filter((w) => !have.has(key(w)) && !seen.has(key(w)) && (seen.add(key(w)), true));
}

/** The kernel side, local or in a foreign network namespace (tests and benches). */
export interface LinkIo {
  readMulticast(): Promise<string>;
  /** The interface's own MAC, or null when it does not exist. */
  linkAddress(iface: string): Promise<string | null>;
  maddr(op: 'add' | 'del', s: Subscription): Promise<RunResult>;
}

export function linkIo(opts: { netns?: string; run?: Runner; timeoutMs: number }): LinkIo {
  const run = opts.run ?? execaRunner;
  const ip = (args: string[]) => run('ip', opts.netns ? ['-n', opts.netns, ...args] : args, opts);
  return {
    async readMulticast() {
      if (!opts.netns) return readFile('/proc/net/dev_mcast', 'utf8');
      const r = await ip(['maddr', 'show']);
      if (r.exitCode !== 0) throw new BackendError('transient', `ip maddr show: ${tail(r.stderr)}`);
      return maddrShowToDevMcast(r.stdout);
    },
    async linkAddress(iface) {
      if (!opts.netns) {
        return readFile(`/sys/class/net/${iface}/address`, 'utf8').then(
          (t) => t.trim(),
          () => null,
        );
      }
      const r = await ip(['-j', 'link', 'show', 'dev', iface]);
      if (r.exitCode !== 0) return null;
      return (JSON.parse(r.stdout) as { address?: string }[])[0]?.address ?? null;
    },
    maddr: (op, s) => ip(['maddr', op, s.mac, 'dev', s.iface]),
  };
}

/** `ip maddr show` as dev_mcast lines (link layer entries only; "static" marks the global ones). */
function maddrShowToDevMcast(text: string): string {
  const lines: string[] = [];
  let iface = '';
  for (const line of text.split('\n')) {
    const dev = /^\d+:\s+(\S+)/.exec(line);
    if (dev) iface = dev[1]!;
    const link = /^\s+link\s+([0-9a-f:]{17})(?:\s+users\s+\d+)?(\s+static)?/.exec(line);
    if (link && iface) lines.push(`0 ${iface} 1 ${link[2] ? 1 : 0} ${link[1]!.replaceAll(':', '')}`);
  }
  return lines.join('\n');
}

/**
 * Keeps the cluster MACs of the installed VIPs subscribed. `ensure` subscribes what is missing, then drops what no
 * VIP wants any more (in that order: a changed MAC or interface never leaves a gap); `check` re-adds what vanished
 * (a re-created interface, an operator's `ip maddr del`); `release` drops what this process added, and only that
 * (an operator's own entry stays). Nothing here throws: a subscription that cannot be made is recorded as failed
 * and shown in status (`multicastFailed`) and retried at every check, while the node keeps serving every other VIP
 * — one VIP on a missing interface must not take a node, or, as the spec is shared, every node out.
 */
export class MulticastSubscriptions {
  private wanted: Subscription[] = [];
  private readonly states = new Map<string, SubscriptionState>();
  /** Entries this process added: the only ones it deletes. */
  private readonly added = new Set<string>();

  constructor(private readonly io: LinkIo) {}

  async ensure(wanted: readonly Subscription[]): Promise<void> {
    const gone = this.wanted.filter((w) => !wanted.some((x) => key(x) === key(w)));
    this.wanted = [...wanted];
    await this.check();
    for (const s of gone) await this.drop(s);
  }

  /** True when some wanted subscription could not be made. */
  get failing(): boolean {
    return this.wanted.some((w) => this.states.get(key(w))?.state === 'failed');
  }

  /** Subscribes what is missing; records the outcome per subscription (for status), throws nothing. */
  async check(): Promise<void> {
    if (this.wanted.length === 0) return;
    let present: McastEntry[];
    try {
      present = parseDevMcast(await this.io.readMulticast());
    } catch (err) {
      for (const w of this.wanted) this.states.set(key(w), { state: 'failed', reason: (err as Error).message });
      return;
    }
    const missing = new Set(missingSubscriptions(this.wanted, present).map(key));
    for (const w of this.wanted) {
      const was = this.states.get(key(w))?.state;
      // An interface without a receive filter stays so: asking again would spawn `ip` at every check.
      if (was === 'notNeeded') continue;
      if (!missing.has(key(w))) {
        this.states.set(key(w), { state: 'subscribed' });
        continue;
      }
      if ((await this.io.linkAddress(w.iface)) === null) {
        this.states.set(key(w), { state: 'failed', reason: `interface ${w.iface} does not exist` });
        continue;
      }
      const r = await this.io.maddr('add', w);
      if (r.exitCode === 0) {
        this.states.set(key(w), { state: 'subscribed' });
        this.added.add(key(w));
      }
      // SIOCADDMULTI answers EINVAL for a device without a receive filter (lo): it receives every frame anyway.
      else if (/Invalid argument/.test(r.stderr))
        this.states.set(key(w), { state: 'notNeeded', reason: 'the interface has no multicast filter' });
      else
        this.states.set(key(w), {
          state: 'failed',
          reason: `ip maddr add: ${tail(r.stderr || r.spawnError || '', 160)}`,
        });
    }
  }

  /** Drops what this process subscribed (clear); failures are ignored: the drop rule keeps the VIP's frames out. */
  async release(): Promise<void> {
    for (const s of this.wanted) await this.drop(s);
    this.wanted = [];
  }

  /** For status: "eth0 01:00:5e:4d:00:64 subscribed", one per wanted subscription, each at most 250 characters. */
  describe(): string[] {
    return this.wanted.map((w) => {
      const s = this.states.get(key(w));
      const text = `${key(w)} ${s ? s.state + ('reason' in s ? ` (${s.reason})` : '') : 'unchecked'}`;
      return text.replaceAll('; ', ', ').slice(0, 250);
    });
  }

  private async drop(s: Subscription): Promise<void> {
    this.states.delete(key(s));
    if (!this.added.delete(key(s))) return;
    await this.io.maddr('del', s).catch(() => undefined);
  }
}
