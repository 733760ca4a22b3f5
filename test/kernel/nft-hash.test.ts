import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalVip } from '../../src/config/address.js';
import { hashInput } from '../../src/backends/nftRuleset.js';
import { createHashBed, listSet as listSetIn, valOf, type HashBed } from '../helpers/hashBed.js';
import { nftablesBucket, nftablesBucketFor, NFT_HASH_INPUT, u32ToIpv4 } from '../../src/hash/index.js';
import type { HashMode } from '../../src/config/types.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// The nftables hash against the real kernel: a client namespace sends one UDP datagram from each of 300
// source addresses over a veth pair to a server namespace, whose prerouting chain evaluates
// `jhash ip saddr mod N seed S offset O` and records the result per source three ways:
//   - `meta mark set jhash …` then `add @seen { ip saddr . meta mark }` (many N and seeds in one pass),
//   - a verdict map from the hash to one chain per bucket, each adding the source to its own set,
//   - the nftables backend's own rule shape: `jhash … != @owned drop`, then recording what got through,
//   - the port modes' concatenations (`jhash ip saddr . th sport [. th dport]`), recording the ports seen.
// Every recorded bucket must equal nftablesBucket(). Nothing leaves the two namespaces the test creates.

const PREFIX = `cipha-hash-${process.pid}-`;
const CLIENT = `${PREFIX}c`;
const SERVER = `${PREFIX}s`;
const SERVER_IP = '10.200.0.1';
const SERVER_MAC = '02:00:00:c1:a5:01';
const TABLE = 'cipha_hash';
const SOURCES = 300;

const enabled = requireCapability('nft hash', netnsCapability());

/** 300 distinct unicast sources spread over the address space (deterministic), plus a few corner cases. */
function sourceAddresses(): string[] {
  const out = new Set<string>(['1.0.0.1', '223.255.255.254', '10.200.1.1', '192.168.0.1', '100.64.0.1']);
  let s = 0x9e3779b9;
  while (out.size < SOURCES) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const a = s >>> 24;
    if (a === 0 || a === 127 || a >= 224 || s >>> 8 === 0x0ac800) continue; // not 0/8, lo, mcast, 10.200.0/24
    out.add(u32ToIpv4(s));
  }
  return [...out];
}

interface MarkCase {
  name: string;
  buckets: number;
  seed: number;
  offset: number;
}

const MARK_CASES: MarkCase[] = [
  { name: 'm0', buckets: 2, seed: 0, offset: 1 },
  { name: 'm1', buckets: 7, seed: 0x5eed1234, offset: 1 },
  { name: 'm2', buckets: 16, seed: 0xdeadbeef, offset: 1 },
  { name: 'm3', buckets: 16, seed: 0xffffffff, offset: 1 },
  { name: 'm4', buckets: 100, seed: 1, offset: 1 },
  { name: 'm5', buckets: 4096, seed: 0x5eed1234, offset: 1 },
  { name: 'm6', buckets: 4096, seed: 0x01020304, offset: 1 },
  { name: 'm7', buckets: 16, seed: 7, offset: 0 },
];
const VMAP_CASES = [
  { name: 'v0', buckets: 7, seed: 0x5eed1234 },
  { name: 'v1', buckets: 16, seed: 0xabcdef01 },
];
const PORT_CASES: { name: string; mode: HashMode; buckets: number; seed: number }[] = [
  { name: 'p0', mode: 'sourceip-sourceport', buckets: 16, seed: 0x5eed1234 },
  { name: 'p1', mode: 'sourceip-sourceport', buckets: 4096, seed: 0xfeedf00d },
  { name: 'p2', mode: 'sourceip-sourceport-destport', buckets: 16, seed: 0x5eed1234 },
  { name: 'p3', mode: 'sourceip-sourceport-destport', buckets: 4096, seed: 3 },
];
const OWNED = { buckets: 16, seed: 0x5eed1234, owned: [1, 3, 5, 8, 13, 16] };

const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

function ruleset(): string {
  const lines: string[] = [`table ip ${TABLE} {`];
  for (const c of MARK_CASES) lines.push(`  set ${c.name} { type ipv4_addr . mark; flags dynamic; size 65535; }`);
  for (const v of VMAP_CASES) {
    for (let b = 1; b <= v.buckets; b++) {
      lines.push(`  set ${v.name}_${b} { type ipv4_addr; flags dynamic; size 65535; }`);
      lines.push(`  chain ${v.name}_${b} { add @${v.name}_${b} { ip saddr }; }`);
    }
  }
  for (const p of PORT_CASES) {
    lines.push(`  set ${p.name} { type ipv4_addr . inet_service . inet_service . mark; flags dynamic; size 65535; }`);
  }
  lines.push(`  set owned { typeof numgen inc mod ${OWNED.buckets}; elements = { ${OWNED.owned.join(', ')} } }`);
  lines.push('  set accepted { type ipv4_addr; flags dynamic; size 65535; }');
  lines.push('  chain pre {', '    type filter hook prerouting priority raw; policy accept;');
  lines.push(`    ip daddr != ${SERVER_IP} return`);
  for (const c of MARK_CASES) {
    lines.push(
      `    meta mark set jhash ip saddr mod ${c.buckets} seed ${hex(c.seed)} offset ${c.offset} add @${c.name} { ip saddr . meta mark }`,
    );
  }
  for (const p of PORT_CASES) {
    lines.push(
      `    meta mark set jhash ${NFT_HASH_INPUT[p.mode]} mod ${p.buckets} seed ${hex(p.seed)} offset 1 add @${p.name} { ip saddr . udp sport . udp dport . meta mark }`,
    );
  }
  for (const v of VMAP_CASES) {
    const map = Array.from({ length: v.buckets }, (_, i) => `${i + 1} : jump ${v.name}_${i + 1}`).join(', ');
    lines.push(`    jhash ip saddr mod ${v.buckets} seed ${hex(v.seed)} offset 1 vmap { ${map} }`);
  }
  lines.push(`    jhash ip saddr mod ${OWNED.buckets} seed ${hex(OWNED.seed)} offset 1 != @owned drop`);
  lines.push('    add @accepted { ip saddr }', '  }', '}');
  return lines.join('\n') + '\n';
}

type Elem = string | { concat: [string, number | string] } | { elem: { val: unknown } };

async function listSet(name: string): Promise<Elem[]> {
  return (await listSetIn(SERVER, 'ip', TABLE, name)) as Elem[];
}

async function addressSet(name: string): Promise<Set<string>> {
  const out = new Set<string>();
  for (const e of await listSet(name)) {
    const v = typeof e === 'object' && 'elem' in e ? e.elem.val : e;
    out.add(String(v));
  }
  return out;
}

async function markSet(name: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const e of await listSet(name)) {
    const v = (typeof e === 'object' && 'elem' in e ? e.elem.val : e) as { concat: [string, number | string] };
    const [addr, mark] = v.concat;
    out.set(addr, typeof mark === 'number' ? mark : Number(mark));
  }
  return out;
}

/** Destination port per source (varied so the destport mode hashes different values). */
function dportOf(addr: string): number {
  return (
    1024 + ((addr.split('.').reduce((h, x) => Math.imul(h ^ Number(x), 16777619) >>> 0, 2166136261) >>> 0) % 60000)
  );
}

async function portTuples(name: string): Promise<{ saddr: string; sport: number; dport: number; mark: number }[]> {
  return (await listSet(name)).map((e) => {
    const v = (typeof e === 'object' && 'elem' in e ? e.elem.val : e) as { concat: unknown[] };
    const [saddr, sport, dport, mark] = v.concat;
    for (const x of [sport, dport, mark]) {
      if (typeof x !== 'number' && !/^(0x)?[0-9a-f]+$/i.test(String(x))) throw new Error(`not numeric: ${String(x)}`);
    }
    return { saddr: String(saddr), sport: Number(sport), dport: Number(dport), mark: Number(mark) };
  });
}

describe.runIf(enabled)('nftables jhash in a real kernel equals nftablesBucket()', () => {
  const sources = sourceAddresses();
  let bed: HashBed | undefined;

  beforeAll(async () => {
    bed = await createHashBed({
      client: CLIENT,
      server: SERVER,
      serverIp: SERVER_IP,
      serverMac: SERVER_MAC,
      clientAddress: '10.200.0.2/24',
      sources,
      ruleset: ruleset(),
      dportOf,
      seen: async () => new Set((await markSet(MARK_CASES[0]!.name)).keys()),
    });
  }, 120_000);

  afterAll(async () => {
    await bed?.teardown();
  });

  for (const c of MARK_CASES) {
    it(`jhash ip saddr mod ${c.buckets} seed ${hex(c.seed)} offset ${c.offset} (meta mark)`, async () => {
      const seen = await markSet(c.name);
      expect(seen.size).toBe(sources.length);
      const wrong = sources.filter((a) => seen.get(a) !== nftablesBucket(a, c.buckets, c.seed, c.offset));
      expect(
        wrong.map((a) => `${a}: kernel ${seen.get(a)}, ours ${nftablesBucket(a, c.buckets, c.seed, c.offset)}`),
      ).toEqual([]);
      // The cases are not degenerate: the sources land in many different buckets.
      expect(new Set(seen.values()).size).toBeGreaterThanOrEqual(0.8 * Math.min(c.buckets, sources.length));
    });
  }

  for (const v of VMAP_CASES) {
    it(`jhash ip saddr mod ${v.buckets} seed ${hex(v.seed)} offset 1 (vmap to one chain per bucket)`, async () => {
      const byBucket = new Map<string, number>();
      for (let b = 1; b <= v.buckets; b++) {
        for (const a of await addressSet(`${v.name}_${b}`)) {
          expect(byBucket.has(a), `${a} seen in two buckets`).toBe(false);
          byBucket.set(a, b);
        }
      }
      expect(byBucket.size).toBe(sources.length);
      for (const a of sources) expect(byBucket.get(a), a).toBe(nftablesBucket(a, v.buckets, v.seed));
    });
  }

  for (const p of PORT_CASES) {
    it(`jhash ${NFT_HASH_INPUT[p.mode]} mod ${p.buckets} seed ${hex(p.seed)} offset 1 (concatenation)`, async () => {
      const tuples = await portTuples(p.name);
      expect(new Set(tuples.map((t) => t.saddr)).size).toBe(sources.length);
      for (const t of tuples) expect(t.dport).toBe(dportOf(t.saddr));
      const wrong = tuples.filter((t) => t.mark !== nftablesBucketFor(p.mode, t, p.buckets, p.seed));
      expect(wrong).toEqual([]);
      // The ports matter: hashing the source alone would put many of these packets elsewhere.
      const sourceOnly = tuples.filter((t) => t.mark === nftablesBucket(t.saddr, p.buckets, p.seed)).length;
      expect(sourceOnly).toBeLessThan(tuples.length / 2);
    });
  }

  it('the backend rule shape `jhash … != @owned drop` lets through exactly the owned buckets', async () => {
    const accepted = await addressSet('accepted');
    const owned = new Set(OWNED.owned);
    const expected = sources.filter((a) => owned.has(nftablesBucket(a, OWNED.buckets, OWNED.seed)));
    expect(expected.length).toBeGreaterThan(50);
    expect(expected.length).toBeLessThan(sources.length - 50);
    expect([...accepted].sort()).toEqual(expected.sort());
  });
});

// IPv6 clients (issue 14): the same against `jhash ip6 saddr [. th sport [. th dport]]` and the backend's rule shape
// on `ip6 saddr`, in a second pair of namespaces.
const SERVER6 = `${PREFIX}s6`;
const SERVER6_IP = 'fd00:200::1';
const TABLE6 = 'cipha_hash6';

/** 300 distinct global and unique-local unicast sources (deterministic), written in canonical form. */
function sourceAddresses6(): string[] {
  const out = new Set<string>(['2001:db8::1', 'fd77::1:1', '2a00:1450:4001:80b::200e', '3fff:ffff:ffff:ffff::ffff']);
  let s = 0x2545f491;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 16;
  while (out.size < SOURCES) {
    const w = Array.from({ length: 8 }, next);
    w[0] = out.size % 5 === 0 ? 0xfd00 | (w[0]! & 0xff) : 0x2000 | (w[0]! & 0x1fff);
    if (out.size % 7 === 0) w[3] = w[4] = w[5] = 0; // some compressed forms too
    out.add(canonicalVip(w.map((x) => x.toString(16)).join(':')));
  }
  return [...out];
}

const CASES6: { name: string; mode: HashMode; buckets: number; seed: number }[] = [
  { name: 'a', mode: 'sourceip', buckets: 2, seed: 0 },
  { name: 'b', mode: 'sourceip', buckets: 7, seed: 0x5eed1234 },
  { name: 'c', mode: 'sourceip', buckets: 16, seed: 0xdeadbeef },
  { name: 'd', mode: 'sourceip', buckets: 100, seed: 1 },
  { name: 'e', mode: 'sourceip', buckets: 4096, seed: 0xffffffff },
  { name: 'f', mode: 'sourceip-sourceport', buckets: 16, seed: 0x5eed1234 },
  { name: 'g', mode: 'sourceip-sourceport-destport', buckets: 4096, seed: 3 },
];
const OWNED6 = { buckets: 16, seed: 0x5eed1234, owned: [2, 3, 7, 11, 12, 16] };

function ruleset6(): string {
  const lines = [`table ip6 ${TABLE6} {`];
  for (const c of CASES6)
    lines.push(`  set ${c.name} { type ipv6_addr . inet_service . inet_service . mark; flags dynamic; size 65535; }`);
  lines.push(`  set owned { typeof numgen inc mod ${OWNED6.buckets}; elements = { ${OWNED6.owned.join(', ')} } }`);
  lines.push('  set accepted { type ipv6_addr; flags dynamic; size 65535; }');
  lines.push('  chain pre {', '    type filter hook prerouting priority raw; policy accept;');
  lines.push(`    ip6 daddr != ${SERVER6_IP} return`, '    meta l4proto != udp return');
  for (const c of CASES6) {
    lines.push(
      `    meta mark set jhash ${hashInput(c.mode, 'ip6')} mod ${c.buckets} seed ${hex(c.seed)} offset 1 add @${c.name} { ip6 saddr . udp sport . udp dport . meta mark }`,
    );
  }
  lines.push(`    jhash ip6 saddr mod ${OWNED6.buckets} seed ${hex(OWNED6.seed)} offset 1 != @owned drop`);
  lines.push('    add @accepted { ip6 saddr }', '  }', '}');
  return lines.join('\n') + '\n';
}

function dportOf6(addr: string): number {
  return 1024 + ([...addr].reduce((h, c) => Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0, 2166136261) % 60000);
}

interface Tuple {
  saddr: string;
  sport: number;
  dport: number;
  mark: number;
}

interface Tuple {
  saddr: string;
  sport: number;
  dport: number;
  mark: number;
}

async function tuples6(name: string): Promise<Tuple[]> {
  return (await listSetIn(SERVER6, 'ip6', TABLE6, name)).map((e) => {
    const [saddr, sport, dport, mark] = (valOf(e) as { concat: unknown[] }).concat;
    return { saddr: canonicalVip(String(saddr)), sport: Number(sport), dport: Number(dport), mark: Number(mark) };
  });
}

describe.runIf(enabled)('nftables jhash of ip6 saddr in a real kernel equals whois', () => {
  const sources = sourceAddresses6();
  let bed: HashBed | undefined;

  beforeAll(async () => {
    bed = await createHashBed({
      client: `${PREFIX}c6`,
      server: SERVER6,
      serverIp: SERVER6_IP,
      serverMac: SERVER_MAC,
      clientAddress: 'fd00:200::2/64',
      sources,
      ruleset: ruleset6(),
      dportOf: dportOf6,
      seen: async () => new Set((await tuples6(CASES6[0]!.name)).map((t) => t.saddr)),
    });
  }, 120_000);

  afterAll(async () => {
    await bed?.teardown();
  });

  for (const c of CASES6) {
    it(`jhash ${hashInput(c.mode, 'ip6')} mod ${c.buckets} seed ${hex(c.seed)} offset 1`, async () => {
      const got = await tuples6(c.name);
      expect(new Set(got.map((t) => t.saddr))).toEqual(new Set(sources));
      for (const t of got) expect(t.dport).toBe(dportOf6(t.saddr));
      const wrong = got.filter((t) => t.mark !== nftablesBucketFor(c.mode, t, c.buckets, c.seed));
      expect(
        wrong.map((t) => `${t.saddr}: kernel ${t.mark}, ours ${nftablesBucketFor(c.mode, t, c.buckets, c.seed)}`),
      ).toEqual([]);
      expect(new Set(got.map((t) => t.mark)).size).toBeGreaterThanOrEqual(0.8 * Math.min(c.buckets, sources.length));
    });
  }

  it('the backend rule shape `jhash ip6 saddr … != @owned drop` lets through exactly the owned buckets', async () => {
    const accepted = new Set(
      (await listSetIn(SERVER6, 'ip6', TABLE6, 'accepted')).map((e) => canonicalVip(String(valOf(e)))),
    );
    const owned = new Set(OWNED6.owned);
    const expected = sources.filter((a) =>
      owned.has(nftablesBucketFor('sourceip', { saddr: a }, OWNED6.buckets, OWNED6.seed)),
    );
    expect(expected.length).toBeGreaterThan(50);
    expect(expected.length).toBeLessThan(sources.length - 50);
    expect([...accepted].sort()).toEqual(expected.sort());
  });
});
