import { nsRun } from './run.js';

// A hand-written nftables ruleset following DESIGN §7, for proving the dataplane without an agent (and for
// checking the agent's nftables backend against a known-good reference). Not the backend: no timeouts, no
// reconciliation, just "this node owns these buckets".

export interface StaticRulesetOptions {
  table: string;
  vip: string;
  buckets: number;
  seed: number;
}

const TABLE_RE = /^[a-z][a-z0-9_]{0,30}$/;
const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function check(o: StaticRulesetOptions): void {
  if (!TABLE_RE.test(o.table)) throw new RangeError(`table name ${JSON.stringify(o.table)}`);
  const m = IPV4_RE.exec(o.vip);
  if (!m || m.slice(1).some((x) => Number(x) > 255)) throw new RangeError(`vip ${JSON.stringify(o.vip)}`);
  if (!Number.isInteger(o.buckets) || o.buckets < 1 || o.buckets > 4096) throw new RangeError('buckets');
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) throw new RangeError('seed');
}

function elements(owned: readonly number[]): string {
  return owned.length ? ` elements = { ${owned.join(', ')} };` : '';
}

/** The whole table, replacing any previous version of it (one atomic `nft -f`). */
export function renderStaticRuleset(o: StaticRulesetOptions, owned: readonly number[]): string {
  check(o);
  for (const b of owned) if (!Number.isInteger(b) || b < 1 || b > o.buckets) throw new RangeError(`bucket ${b}`);
  const seed = `0x${o.seed.toString(16).padStart(8, '0')}`;
  return [
    `table ip ${o.table}`,
    `delete table ip ${o.table}`,
    `table ip ${o.table} {`,
    `  set owned { typeof numgen inc mod ${o.buckets} ; flags timeout ;${elements(owned)} }`,
    `  chain pre {`,
    `    type filter hook prerouting priority raw; policy accept;`,
    `    ip daddr ${o.vip} jhash ip saddr mod ${o.buckets} seed ${seed} offset 1 != @owned drop`,
    `    ip daddr ${o.vip} meta pkttype multicast meta pkttype set host`,
    `  }`,
    `}`,
    '',
  ].join('\n');
}

export async function applyStaticRuleset(ns: string, o: StaticRulesetOptions, owned: readonly number[]): Promise<void> {
  await nsRun(ns, 'nft', ['-f', '-'], { input: renderStaticRuleset(o, owned) });
}

/** Replace the owned set's elements in one batch. */
export async function setStaticOwned(ns: string, o: StaticRulesetOptions, owned: readonly number[]): Promise<void> {
  check(o);
  const batch = [`flush set ip ${o.table} owned`];
  if (owned.length) batch.push(`add element ip ${o.table} owned { ${owned.join(', ')} }`);
  await nsRun(ns, 'nft', ['-f', '-'], { input: batch.join('\n') + '\n' });
}
