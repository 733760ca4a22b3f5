import type { ClusterSpec, VipSpec } from '../config/types.js';

// What `apply` would change, as data (pure). `disruptive` marks changes that re-hash every client of a VIP
// (bucket count, hash mode, seed): all their connections move, so apply says so before writing.

export type SpecChange =
  | { kind: 'vipAdded'; vip: VipSpec }
  | { kind: 'vipRemoved'; vip: VipSpec }
  | { kind: 'vipChanged'; address: string; field: keyof VipSpec; from: unknown; to: unknown; disruptive: boolean }
  | { kind: 'rebalanceChanged'; field: keyof ClusterSpec['rebalance']; from: number; to: number };

const VIP_FIELDS: (keyof VipSpec)[] = ['interface', 'buckets', 'hashMode', 'seed', 'clusterMac', 'sticky'];
const DISRUPTIVE = new Set<keyof VipSpec>(['buckets', 'hashMode', 'seed', 'clusterMac', 'interface']);

export function diffSpecs(from: ClusterSpec | null, to: ClusterSpec): SpecChange[] {
  const out: SpecChange[] = [];
  const old = new Map((from?.vips ?? []).map((v) => [v.address, v]));
  const neu = new Map(to.vips.map((v) => [v.address, v]));
  for (const v of to.vips) {
    const o = old.get(v.address);
    if (!o) {
      out.push({ kind: 'vipAdded', vip: v });
      continue;
    }
    for (const f of VIP_FIELDS) {
      if (o[f] !== v[f])
        out.push({
          kind: 'vipChanged',
          address: v.address,
          field: f,
          from: o[f],
          to: v[f],
          disruptive: DISRUPTIVE.has(f),
        });
    }
  }
  for (const o of from?.vips ?? []) if (!neu.has(o.address)) out.push({ kind: 'vipRemoved', vip: o });
  if (from) {
    for (const f of ['joinMovesPerInterval', 'intervalMs'] as const) {
      if (from.rebalance[f] !== to.rebalance[f])
        out.push({ kind: 'rebalanceChanged', field: f, from: from.rebalance[f], to: to.rebalance[f] });
    }
  }
  return out;
}

const show = (f: string, v: unknown) =>
  f === 'seed' && typeof v === 'number' ? `0x${v.toString(16).padStart(8, '0')}` : String(v);

export function describeVip(v: VipSpec): string {
  return `${v.address} on ${v.interface}: ${v.buckets} buckets, ${v.hashMode}, seed ${show('seed', v.seed)}, mac ${v.clusterMac}${v.sticky ? ', sticky' : ''}`;
}

/** One line per change, diff-style (`+` added, `-` removed, `~` changed). */
export function renderDiff(changes: SpecChange[]): string[] {
  return changes.map((c) => {
    switch (c.kind) {
      case 'vipAdded':
        return `+ vip ${describeVip(c.vip)}`;
      case 'vipRemoved':
        return `- vip ${describeVip(c.vip)} (its buckets are released on every node)`;
      case 'vipChanged':
        return `~ vip ${c.address}: ${c.field} ${show(c.field, c.from)} -> ${show(c.field, c.to)}${c.disruptive ? '  (re-hashes every client of this VIP)' : ''}`;
      case 'rebalanceChanged':
        return `~ rebalance.${c.field}: ${c.from} -> ${c.to}`;
    }
  });
}
