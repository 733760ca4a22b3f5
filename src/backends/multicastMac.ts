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
 * Keeps the cluster MACs of the installed VIPs subscribed. `ensure` subscribes what is missing and fails when an
 * interface does not exist or refuses (the node must not take buckets it would never receive); `check` re-adds
 * what vanished (an interface that was re-created, an operator's `ip maddr del`); `release` drops what this
 * process added.
 */
export class MulticastSubscriptions {
  private wanted: Subscription[] = [];
  private readonly states = new Map<string, SubscriptionState>();

  constructor(private readonly io: LinkIo) {}

  async ensure(wanted: readonly Subscription[]): Promise<void> {
    const gone = this.wanted.filter((w) => !wanted.some((x) => key(x) === key(w)));
    this.wanted = [...wanted];
    for (const s of gone) await this.drop(s);
    for (const w of wanted) {
      if ((await this.io.linkAddress(w.iface)) === null)
        throw new BackendError('unsupported', `interface ${w.iface} does not exist (the VIP's frames arrive there)`);
    }
    await this.check();
    const failed = [...this.states].filter(([, s]) => s.state === 'failed');
    if (failed.length > 0) {
      const [k, s] = failed[0]!;
      throw new BackendError('transient', `cannot subscribe ${k}: ${(s as { reason: string }).reason}`);
    }
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
      if (!missing.has(key(w))) {
        if (this.states.get(key(w))?.state !== 'notNeeded') this.states.set(key(w), { state: 'subscribed' });
        continue;
      }
      const r = await this.io.maddr('add', w);
      if (r.exitCode === 0) this.states.set(key(w), { state: 'subscribed' });
      // SIOCADDMULTI answers EINVAL for a device without a receive filter (lo): it receives every frame anyway.
      else if (/Invalid argument/.test(r.stderr))
        this.states.set(key(w), { state: 'notNeeded', reason: 'the interface has no multicast filter' });
      else
        this.states.set(key(w), { state: 'failed', reason: `ip maddr add: ${tail(r.stderr || r.spawnError || '')}` });
    }
  }

  /** Drops every subscription (clear, close of a cleared node); failures are recorded, not thrown. */
  async release(): Promise<void> {
    for (const s of this.wanted) await this.drop(s);
    this.wanted = [];
  }

  /** For status: "eth0 01:00:5e:4d:00:64 subscribed", one per wanted subscription. */
  describe(): string[] {
    return this.wanted.map((w) => {
      const s = this.states.get(key(w));
      return `${key(w)} ${s ? s.state + ('reason' in s ? ` (${s.reason})` : '') : 'unchecked'}`;
    });
  }

  private async drop(s: Subscription): Promise<void> {
    const state = this.states.get(key(s));
    this.states.delete(key(s));
    if (state?.state !== 'subscribed') return;
    await this.io.maddr('del', s).catch(() => undefined);
  }
}
