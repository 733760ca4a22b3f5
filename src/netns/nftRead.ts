import { nsRun } from './run.js';

// Reads a node's owned set straight from its kernel, independently of the backend's own parser, so the tests
// check the backend against the kernel rather than against itself. The set name follows the nftables backend's
// layout (`owned_<vip with dots as underscores>` in table ip, `owned6_<colons as underscores>` in table ip6,
// src/backends/nftRuleset.ts).

export function ownedSetName(vip: string): string {
  return vip.includes(':') ? `owned6_${vip.replaceAll(':', '_')}` : `owned_${vip.replaceAll('.', '_')}`;
}

/** Buckets in the set (the kernel lists only unexpired elements); [] when the table or set does not exist. */
export async function readOwnedSet(ns: string, table: string, vip: string): Promise<number[]> {
  const r = await nsRun(ns, 'nft', ['-j', 'list', 'set', vip.includes(':') ? 'ip6' : 'ip', table, ownedSetName(vip)], {
    allowFail: true,
    timeoutMs: 5000,
  });
  if (r.exitCode !== 0) return [];
  return parseSetElements(r.stdout);
}

export function parseSetElements(json: string): number[] {
  const doc = JSON.parse(json) as { nftables?: { set?: { elem?: unknown[] } }[] };
  const out: number[] = [];
  for (const item of doc.nftables ?? []) {
    for (const e of item.set?.elem ?? []) {
      const v = typeof e === 'number' ? e : (e as { elem?: { val?: unknown } }).elem?.val;
      if (typeof v === 'number') out.push(v);
    }
  }
  return out.sort((a, b) => a - b);
}
