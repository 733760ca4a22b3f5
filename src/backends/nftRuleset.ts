import { familyOf } from '../config/address.js';
import type { HashMode, VipSpec } from '../config/types.js';
import type { BucketChange, HeldBuckets } from './backend.js';

// Pure text of the nft batches the nftables backend sends (one `nft -f -` each, so each is atomic), and the
// parser of `nft -j list table`. All values were validated (validate.ts) before they get here.
//
// Layout (DESIGN §7), table `ip <table>` for IPv4 VIPs and `ip6 <table>` beside it for IPv6 ones:
//   set owned_10_77_0_100 / owned6_2001_db8__100 { typeof numgen inc mod N; flags timeout; }   owned buckets
//   chain pre        (prerouting, priority raw):    non-sticky VIPs; drop before conntrack sees the packet
//   chain pre_sticky (prerouting, priority mangle): sticky VIPs; needs conntrack's verdict, so after it
// With arpMangle, table `arp <table>` chain out rewrites the sender MAC of ARP replies for each IPv4 VIP, and
// chain `out` of the ip6 table the target link-layer address of neighbour advertisements for each IPv6 VIP.
//
// Two tables rather than one `inet` table: an IPv4 cluster's table is exactly what earlier versions made, so an
// upgrade (a hitless restart adopts the kernel state as it finds it) changes nothing there, and a node without
// IPv6 VIPs has no ip6 table at all.

export type NftFamily = 'ip' | 'ip6';

export function familyOfVip(vip: string): NftFamily {
  return familyOf(vip) === 'ipv6' ? 'ip6' : 'ip';
}

/** nft 1.0.6 cannot list a set typed `typeof jhash …` (segfault); numgen has the same 32-bit integer type. */
const SET_TYPE = (buckets: number) => `typeof numgen inc mod ${buckets}`;

export function setName(vip: string): string {
  return familyOfVip(vip) === 'ip6' ? `owned6_${vip.replaceAll(':', '_')}` : `owned_${vip.replaceAll('.', '_')}`;
}

/** The VIP of an owned-set name, or null for other sets. */
export function vipOfSet(name: string): string | null {
  const m = /^owned_(\d{1,3})_(\d{1,3})_(\d{1,3})_(\d{1,3})$/.exec(name);
  if (m) return `${m[1]}.${m[2]}.${m[3]}.${m[4]}`;
  const m6 = /^owned6_([0-9a-f_]{2,39})$/.exec(name);
  return m6 ? m6[1]!.replaceAll('_', ':') : null;
}

/** `<family> <table> <set>` of a VIP's owned set. */
function setRef(table: string, vip: string): string {
  return `${familyOfVip(vip)} ${table} ${setName(vip)}`;
}

function seedHex(seed: number): string {
  return `0x${seed.toString(16).padStart(8, '0')}`;
}

/**
 * The jhash input per hash mode. nft concatenations pad each field to 4 bytes, so the port modes hash
 * saddr(4 or 16) . sport(2)+pad(2) [. dport(2)+pad(2)] — the bucket numbers differ from CLUSTERIP's
 * jhash_2words/3words (as sourceip's do: DESIGN §8). `th` reads the first transport-header words whatever the
 * protocol.
 */
export function hashInput(mode: HashMode, family: NftFamily = 'ip'): string {
  const saddr = `${family} saddr`;
  switch (mode) {
    case 'sourceip':
      return saddr;
    case 'sourceip-sourceport':
      return `${saddr} . th sport`;
    case 'sourceip-sourceport-destport':
      return `${saddr} . th sport . th dport`;
  }
}

export function hashExpr(vip: VipSpec): string {
  const input = hashInput(vip.hashMode, familyOfVip(vip.address));
  return `jhash ${input} mod ${vip.buckets} seed ${seedHex(vip.seed)} offset 1`;
}

function match(vip: VipSpec): string {
  return `${familyOfVip(vip.address)} daddr ${vip.address} iifname "${vip.interface}"`;
}

/**
 * Neighbour discovery and Packet Too Big addressed to an IPv6 VIP are accepted on every node, before the hash: a node
 * solicits the next hop of a reply from the VIP (the reply's source), so the advertisement comes back to the VIP from
 * the router's or the client's address, which hashes to whichever node owns that address's bucket, not to the node
 * that asked (and in the port modes the hash reads ICMPv6 type and checksum as ports). Dropped, the node never
 * resolves its next hop and its replies die; Packet Too Big is what IPv6 path MTU rests on. Every node answering a
 * solicitation for the VIP is harmless: all answer with the cluster MAC.
 */
const ND_ACCEPT = 'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, packet-too-big } accept';

/** The rules of one VIP, and the chain they go to. */
export function vipRules(vip: VipSpec): { chain: 'pre' | 'pre_sticky'; rules: string[] } {
  const m = match(vip);
  const owned = `@${setName(vip.address)}`;
  // Without pkttype host, TCP drops the packet addressed to the multicast cluster MAC (UDP does not care).
  const setHost = `${m} meta pkttype multicast meta pkttype set host`;
  const v6 = familyOfVip(vip.address) === 'ip6';
  if (!vip.sticky) {
    // IPv4's order is the one earlier versions wrote (an upgrade rewrites the same rules).
    if (!v6) return { chain: 'pre', rules: [`${m} ${hashExpr(vip)} != ${owned} drop`, setHost] };
    return { chain: 'pre', rules: [setHost, `${m} ${ND_ACCEPT}`, `${m} ${hashExpr(vip)} != ${owned} drop`] };
  }
  return {
    chain: 'pre_sticky',
    rules: [
      setHost,
      ...(v6 ? [`${m} ${ND_ACCEPT}`] : []),
      // Connections this node already tracks stay here even after their bucket moved away.
      `${m} meta l4proto tcp ct state established,related accept`,
      // A mid-stream packet of a connection another node tracks: never answer it (the RST would kill it there).
      `${m} meta l4proto tcp ct state new tcp flags & (fin|syn|rst|ack) != syn drop`,
      `${m} ${hashExpr(vip)} != ${owned} drop`,
    ],
  };
}

/**
 * The rule of a VIP the spec dropped (DESIGN §12): drop all of its traffic. The address may still be configured on
 * the node, and without a drop rule every node would accept every client. Its owned set stays (emptied) as the
 * marker that keeps the VIP dark across restarts, until the table is uninstalled. No interface match: the spec
 * that named it is gone, and a fresh process must write the same rule.
 */
export function darkRule(address: string): string {
  return `${familyOfVip(address)} daddr ${address} drop`;
}

function hexBytes(bytes: readonly number[]): string {
  return `0x${bytes.map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function macBytes(mac: string): number[] {
  return mac.split(':').map((h) => parseInt(h, 16));
}

/**
 * The neighbour discovery rewrites for an IPv6 VIP, as arp mangling is for IPv4: the link-layer address option of
 * the node's own advertisements for the VIP (target link-layer address), and of its solicitations sent from the VIP
 * (source link-layer address: a node resolving a client it answers solicits from the reply's source, the VIP, and
 * the client would learn the node's own MAC for the VIP from it — IPv6 has no arp_announce), becomes the cluster
 * MAC. nft updates no checksum for a raw payload write (1.0.6 measured: the client counted Icmp6InCsumErrors), so
 * each rule also writes a compensating 16-bit word into the message's reserved bits (RFC 4861 §4.3, §4.4: senders
 * zero them, receivers ignore them): the ones-complement sum of the message, and with it the checksum, stays what
 * it was. The rules match the node's own MAC, the value the compensation was computed for, so a message they do
 * not expect passes untouched. Bit offsets from the ICMPv6 header: reserved low word 48, target 64, option
 * type/length 192, its MAC 208 (the same in both messages).
 */
export function ndMangleRules(
  vip: string,
  targetBytes: readonly number[],
  ifaceMac: string,
  clusterMac: string,
): string[] {
  const from = macBytes(ifaceMac);
  const to = macBytes(clusterMac);
  const words = (b: number[]) => b[0]! * 256 + b[1]! + b[2]! * 256 + b[3]! + b[4]! * 256 + b[5]!;
  const compensation = (((words(from) - words(to)) % 0xffff) + 0xffff) % 0xffff;
  const rewrite = `@th,48,16 0 @th,208,48 set ${hexBytes(to)} @th,48,16 set ${compensation}`;
  return [
    `icmpv6 type nd-neighbor-advert @th,64,128 ${hexBytes(targetBytes)} @th,192,64 ${hexBytes([2, 1, ...from])} ${rewrite} comment "na ${vip}"`,
    `ip6 saddr ${vip} icmpv6 type nd-neighbor-solicit @th,192,64 ${hexBytes([1, 1, ...from])} ${rewrite} comment "ns ${vip}"`,
  ];
}

export interface EnsureInput {
  table: string;
  vips: readonly VipSpec[];
  /** Owned sets that exist now (from the listing); the ones of VIPs no longer in the spec are emptied (dark). */
  existingSets: readonly string[];
  arpMangle: boolean;
  /** Per IPv6 VIP with arpMangle: the 16 address bytes and the MAC of its interface (see ndMangleRule). */
  nd?: ReadonlyMap<string, { target: readonly number[]; ifaceMac: string }>;
}

/** Whether the batch for `i` has an ip6 table: an IPv6 VIP, or the dark set of one that left the spec. */
export function needsIp6(vips: readonly VipSpec[], existingSets: readonly string[]): boolean {
  return vips.some((v) => familyOfVip(v.address) === 'ip6') || existingSets.some((s) => s.startsWith('owned6_'));
}

/** The whole table (tables: one per family in use) in one idempotent batch; owned sets keep their elements. */
export function ensureBatch(i: EnsureInput): string {
  const lines: string[] = [];
  const wanted = new Set(i.vips.map((v) => setName(v.address)));
  const dark = [...new Set(i.existingSets)].filter((s) => !wanted.has(s) && vipOfSet(s)).sort();
  const families: NftFamily[] = needsIp6(i.vips, i.existingSets) ? ['ip', 'ip6'] : ['ip'];
  for (const f of families) {
    const t = `${f} ${i.table}`;
    lines.push(
      `add table ${t}`,
      `add chain ${t} pre { type filter hook prerouting priority raw; policy accept; }`,
      `add chain ${t} pre_sticky { type filter hook prerouting priority mangle; policy accept; }`,
      // Flush and refill in the same transaction: packets see the old rules or the new ones, never none.
      `flush chain ${t} pre`,
      `flush chain ${t} pre_sticky`,
    );
  }
  for (const v of i.vips)
    lines.push(
      `add set ${familyOfVip(v.address)} ${i.table} ${setName(v.address)} { ${SET_TYPE(v.buckets)}; flags timeout; }`,
    );
  for (const v of i.vips) {
    const { chain, rules } = vipRules(v);
    for (const r of rules) lines.push(`add rule ${familyOfVip(v.address)} ${i.table} ${chain} ${r}`);
  }
  // VIPs the spec dropped stay dark: set emptied, every packet to them dropped (see darkRule).
  for (const s of dark) {
    const vip = vipOfSet(s)!;
    lines.push(`flush set ${setRef(i.table, vip)}`, `add rule ${familyOfVip(vip)} ${i.table} pre ${darkRule(vip)}`);
  }
  const a = `arp ${i.table}`;
  // add-then-delete makes the delete idempotent (nft 1.0.6 has no `destroy`).
  lines.push(`add table ${a}`, `delete table ${a}`);
  const v4 = i.vips.filter((v) => familyOfVip(v.address) === 'ip');
  if (i.arpMangle && v4.length > 0) {
    lines.push(`add table ${a}`, `add chain ${a} out { type filter hook output priority filter; policy accept; }`);
    for (const v of v4) {
      lines.push(`add rule ${a} out arp operation reply arp saddr ip ${v.address} arp saddr ether set ${v.clusterMac}`);
    }
  }
  if (families.includes('ip6')) {
    const t6 = `ip6 ${i.table}`;
    lines.push(
      `add chain ${t6} out { type filter hook output priority filter; policy accept; }`,
      `flush chain ${t6} out`,
    );
    for (const v of i.vips) {
      const nd = i.nd?.get(v.address);
      if (!i.arpMangle || !nd) continue;
      for (const r of ndMangleRules(v.address, nd.target, nd.ifaceMac, v.clusterMac))
        lines.push(`add rule ${t6} out ${r}`);
    }
  }
  return lines.join('\n') + '\n';
}

function elems(buckets: readonly number[], hold?: number): string {
  const t = hold === undefined ? '' : ` timeout ${hold}ms expires ${hold}ms`;
  return `{ ${buckets.map((b) => `${b}${t}`).join(', ')} }`;
}

/**
 * One batch for every change. Removes are `add` then `delete` (deleting an absent element fails the whole
 * batch; after the add it cannot be absent), so "already removed" is not an error and the batch stays atomic.
 * Adds with a hold time set timeout and expires, which also resets an existing element's expiry. Adds without
 * one are add, delete, add: the element ends up with no timeout even if it had one.
 */
/**
 * How an existing element's timeout is renewed. Linux 6.18 (measured) updates timeout and expiry when an existing
 * element is added again with both; older kernels (Debian 12's 6.1 among them) silently keep the old ones, so
 * there the element is deleted and added again in the same batch (atomic: never absent in between).
 */
export type TimeoutRenewal = 'update' | 'replace';

export function applyBatch(
  table: string,
  changes: readonly BucketChange[],
  holdForMs?: number,
  renewal: TimeoutRenewal = 'update',
): string {
  const lines: string[] = [];
  for (const c of changes) {
    const s = setRef(table, c.vip);
    if (c.remove.length > 0)
      lines.push(`add element ${s} ${elems(c.remove)}`, `delete element ${s} ${elems(c.remove)}`);
    if (c.add.length > 0) {
      if (holdForMs !== undefined && renewal === 'update') lines.push(`add element ${s} ${elems(c.add, holdForMs)}`);
      // Otherwise make sure the element exists, then replace it: it ends with exactly the wanted timeout (or none).
      else
        lines.push(
          `add element ${s} ${elems(c.add)}`,
          `delete element ${s} ${elems(c.add)}`,
          `add element ${s} ${elems(c.add, holdForMs)}`,
        );
    }
  }
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}

/** Re-add every held element with a fresh timeout and expiry: one batch. */
export function refreshBatch(
  table: string,
  held: HeldBuckets,
  holdForMs: number,
  renewal: TimeoutRenewal = 'update',
): string {
  const lines: string[] = [];
  for (const [vip, buckets] of held) {
    if (buckets.size === 0) continue;
    const sorted = [...buckets].sort((a, b) => a - b);
    // The elements were just listed, so the delete cannot fail on an absent one (unless it expires in between:
    // then the batch fails as a whole and the agent retries; nothing is revived).
    if (renewal === 'replace') lines.push(`delete element ${setRef(table, vip)} ${elems(sorted)}`);
    lines.push(`add element ${setRef(table, vip)} ${elems(sorted, holdForMs)}`);
  }
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}

/** Empty every owned set at once (the rules stay: without them every node would accept every bucket). */
export function clearBatch(table: string, sets: readonly string[]): string {
  const vips = sets.map(vipOfSet).filter((v): v is string => v !== null);
  const lines = vips.map((v) => `flush set ${setRef(table, v)}`);
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}

export interface TableListing {
  /** Owned sets by name with their (unexpired: the kernel does not list expired ones) elements. */
  sets: Map<string, Set<number>>;
}

/** Parses `nft -j list table <family> <table>`; throws on a shape it does not know. */
export function parseTableListing(json: string): TableListing {
  const doc = JSON.parse(json) as { nftables?: unknown };
  if (!Array.isArray(doc.nftables)) throw new Error('no "nftables" array');
  const sets = new Map<string, Set<number>>();
  for (const item of doc.nftables as Record<string, unknown>[]) {
    const set = item.set as { name?: unknown; elem?: unknown } | undefined;
    if (!set || typeof set.name !== 'string') continue;
    const held = new Set<number>();
    for (const e of (set.elem as unknown[] | undefined) ?? []) {
      // A bare number, or {elem: {val, timeout, expires}} when the element carries a timeout.
      const val = typeof e === 'number' ? e : (e as { elem?: { val?: unknown } })?.elem?.val;
      if (typeof val !== 'number' || !Number.isInteger(val)) throw new Error(`unexpected element ${JSON.stringify(e)}`);
      held.add(val);
    }
    sets.set(set.name, held);
  }
  return { sets };
}

/** Owned sets of a listing as held buckets per VIP. */
export function heldFromListing(listing: TableListing): HeldBuckets {
  const out: HeldBuckets = new Map();
  for (const [name, buckets] of listing.sets) {
    const vip = vipOfSet(name);
    if (vip) out.set(vip, buckets);
  }
  return out;
}

export const MIN_NFT_VERSION: readonly [number, number, number] = [1, 0, 0];

export type NftVersionVerdict = { ok: true; version: string } | { ok: false; message: string };

/** `nft --version` prints "nftables v1.0.6 (Lester Gooch #5)". */
export function checkNftVersion(output: string): NftVersionVerdict {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(output);
  if (!m) return { ok: false, message: `cannot parse nft version from ${JSON.stringify(output.trim())}` };
  const v = [Number(m[1]), Number(m[2]), Number(m[3])];
  const min = MIN_NFT_VERSION;
  for (let i = 0; i < 3; i++) {
    if (v[i]! > min[i]!) break;
    if (v[i]! < min[i]!) {
      return {
        ok: false,
        message: `nft ${v.join('.')} is too old: the nftables backend needs ${min.join('.')} or newer (set element timeouts with expires, typeof sets)`,
      };
    }
  }
  return { ok: true, version: v.join('.') };
}

/** A throwaway table exercising every kernel feature the backend uses; sent with `nft -c` (nothing committed). */
export function probeBatch(table: string): string {
  const t = `ip ${table}`;
  return [
    `add table ${t}`,
    `add set ${t} s { ${SET_TYPE(16)}; flags timeout; }`,
    `add chain ${t} c { type filter hook prerouting priority raw; policy accept; }`,
    `add rule ${t} c ip daddr 127.0.0.9 jhash ip saddr . th sport . th dport mod 16 seed 0x00000001 offset 1 != @s drop`,
    `add rule ${t} c ip daddr 127.0.0.9 meta pkttype multicast meta pkttype set host`,
    `add rule ${t} c ip daddr 127.0.0.9 meta l4proto tcp ct state established,related accept`,
    `add element ${t} s { 1 timeout 1000ms expires 1000ms }`,
    '',
  ].join('\n');
}

/** Batches of the timeout-renewal probe (see TimeoutRenewal): create with 1 s, re-add with 1 h, then list. */
export function renewalProbeBatches(table: string): { create: string; renew: string; drop: string } {
  const t = `ip ${table}`;
  return {
    create: [
      `add table ${t}`,
      `add set ${t} s { ${SET_TYPE(16)}; flags timeout; }`,
      `add element ${t} s { 1 timeout 1000ms expires 1000ms }`,
      '',
    ].join('\n'),
    renew: `add element ${t} s { 1 timeout 3600000ms expires 3600000ms }\n`,
    drop: `add table ${t}\ndelete table ${t}\n`,
  };
}

/** From `nft -j list set` of the probe: did the re-add move the expiry (JSON gives whole seconds)? */
export function renewalFromProbeListing(json: string): TimeoutRenewal {
  const doc = JSON.parse(json) as { nftables?: { set?: { elem?: unknown[] } }[] };
  const elem = doc.nftables?.find((x) => x.set)?.set?.elem?.[0] as { elem?: { expires?: unknown } } | undefined;
  const expires = elem?.elem?.expires;
  return typeof expires === 'number' && expires > 60 ? 'update' : 'replace';
}
