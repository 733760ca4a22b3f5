import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

const sh = promisify(execFile);
const PREFIX = `cipha-hash-${process.pid}-`;
const CLIENT = `${PREFIX}c`;
const SERVER = `${PREFIX}s`;
const SERVER_IP = '10.200.0.1';
const SERVER_MAC = '02:00:00:c1:a5:01';
const TABLE = 'cipha_hash';
const SOURCES = 300;

const enabled = requireCapability('nft hash', netnsCapability());

async function run(cmd: string, args: string[], input?: string, timeoutMs = 30_000): Promise<string> {
  const child = sh(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20 });
  if (input !== undefined) {
    child.child.stdin!.end(input);
  }
  const { stdout } = await child;
  return stdout;
}

const inNs = (ns: string, cmd: string[], input?: string): Promise<string> =>
  run('ip', ['netns', 'exec', ns, ...cmd], input);

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

// Runs inside the client namespace: one datagram per source, at most 32 sockets open at once.
const SENDER = `
import dgram from 'node:dgram';
const [dst, ...sources] = process.argv.slice(2);
const sendFrom = (arg) => new Promise((resolve) => {
  const [src, dport] = arg.split(':');
  const s = dgram.createSocket('udp4');
  const done = (err) => { s.close(); resolve(err ? arg + ': ' + err.message : null); };
  s.once('error', done);
  s.bind({ address: src, port: 0 }, () => s.send('x', Number(dport), dst, done));
});
const errors = [];
for (let i = 0; i < sources.length; i += 32) {
  for (const e of await Promise.all(sources.slice(i, i + 32).map(sendFrom))) if (e) errors.push(e);
}
if (errors.length) { console.error(errors.join('\\n')); process.exit(1); }
`;

type Elem = string | { concat: [string, number | string] } | { elem: { val: unknown } };

async function listSet(name: string): Promise<Elem[]> {
  const json = JSON.parse(await inNs(SERVER, ['nft', '-j', 'list', 'set', 'ip', TABLE, name])) as {
    nftables: { set?: { elem?: Elem[] } }[];
  };
  return json.nftables.find((x) => x.set)?.set?.elem ?? [];
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

async function teardown(): Promise<void> {
  for (const ns of [CLIENT, SERVER]) {
    await run('ip', ['netns', 'del', ns], undefined, 10_000).catch(() => undefined);
  }
}

describe.runIf(enabled)('nftables jhash in a real kernel equals nftablesBucket()', () => {
  const sources = sourceAddresses();
  const dir = mkdtempSync(join(tmpdir(), 'cipha-hash-'));

  beforeAll(async () => {
    try {
      await run('ip', ['netns', 'add', CLIENT]);
      await run('ip', ['netns', 'add', SERVER]);
      // Both ends are created from inside the server namespace: the root namespace never sees the link.
      await run('ip', [
        '-n',
        SERVER,
        'link',
        'add',
        'eth0',
        'address',
        SERVER_MAC,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'netns',
        CLIENT,
      ]);
      const serverCmds = [`address add ${SERVER_IP}/24 dev eth0`, 'link set lo up', 'link set eth0 up'];
      const clientCmds = [
        'address add 10.200.0.2/24 dev eth0',
        'link set lo up',
        'link set eth0 up',
        `neighbour replace ${SERVER_IP} lladdr ${SERVER_MAC} dev eth0 nud permanent`,
        ...sources.map((a) => `address add ${a}/32 dev eth0`),
      ];
      await run('ip', ['-n', SERVER, '-batch', '-'], serverCmds.join('\n') + '\n');
      await run('ip', ['-n', CLIENT, '-batch', '-'], clientCmds.join('\n') + '\n');
      await inNs(SERVER, ['nft', '-f', '-'], ruleset());
      writeFileSync(join(dir, 'send.mjs'), SENDER);
      // Send; re-send to sources the server has not recorded yet (bounded: 3 rounds).
      let missing = sources;
      for (let round = 0; round < 3 && missing.length > 0; round++) {
        const args = missing.map((a) => `${a}:${dportOf(a)}`);
        await inNs(CLIENT, [process.execPath, join(dir, 'send.mjs'), SERVER_IP, ...args]);
        await new Promise((r) => setTimeout(r, 200));
        const seen = await markSet(MARK_CASES[0]!.name);
        missing = missing.filter((a) => !seen.has(a));
      }
    } catch (err) {
      await teardown();
      throw err;
    }
  }, 120_000);

  afterAll(async () => {
    await teardown();
    rmSync(dir, { recursive: true, force: true });
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
