import { isIPv6 } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { arpAnnouncement, unsolicitedNa } from '../../src/backends/announce.js';
import { ipv6Bytes } from '../../src/hash/ipv6.js';

// The gratuitous announcements' bytes (issue 14) and the IPv6 text parser they and the nftables hash use;
// test/kernel/announce.test.ts shows a Linux client taking the frames (a stale entry switches to the cluster MAC),
// test/kernel/dataplane-macvlan.test.ts the agents sending them.

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** The ICMPv6 checksum verifies: the ones-complement sum of pseudo-header and message, checksum included. */
function icmp6Verifies(frame: Uint8Array): boolean {
  const ip = frame.subarray(14, 54);
  const icmp = frame.subarray(54);
  const bytes = [...ip.subarray(8, 40), 0, 0, 0, icmp.length, 0, 0, 0, 58, ...icmp];
  let sum = 0;
  for (let k = 0; k < bytes.length; k += 2) sum += (bytes[k]! << 8) | (bytes[k + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

const macArb = fc
  .uint8Array({ minLength: 6, maxLength: 6 })
  .map((b) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':'));

describe('gratuitous announcements', () => {
  it('ARP: a broadcast reply from the VIP to the VIP, the cluster MAC as sender and target, padded to 60 bytes', () => {
    const f = arpAnnouncement({ vip: '10.77.0.100', clusterMac: '01:00:5e:4d:00:64', ifaceMac: '02:11:22:33:44:55' });
    expect(f.length).toBe(60);
    expect(hex(f.subarray(0, 42))).toBe(
      'ffffffffffff' +
        '021122334455' +
        '0806' +
        '0001' +
        '0800' +
        '06' +
        '04' +
        '0002' +
        '01005e4d0064' +
        '0a4d0064' +
        '01005e4d0064' + // target hardware address = sender's: what Linux takes as gratuitous (see announce.ts)
        '0a4d0064',
    );
    expect(f.subarray(42).every((b) => b === 0)).toBe(true);
  });

  it('ARP: the kernel test’s frame, byte for byte', () => {
    const f = arpAnnouncement({ vip: '10.201.0.100', clusterMac: '01:00:5E:49:00:64', ifaceMac: '02:00:00:a0:00:02' });
    expect(hex(f)).toBe(
      'ffffffffffff' +
        '020000a00002' +
        '0806' +
        '0001080006040002' +
        '01005e490064' +
        '0ac90064' +
        '01005e490064' +
        '0ac90064' +
        '00'.repeat(18),
    );
  });

  it('NA: to all nodes, hop limit 255, override only, target the VIP, the cluster MAC as its link-layer address', () => {
    const f = unsolicitedNa({ vip: 'fd77::100', clusterMac: '33:33:00:00:01:00', ifaceMac: '02:11:22:33:44:55' });
    expect(f.length).toBe(14 + 40 + 32);
    expect(hex(f.subarray(0, 14))).toBe('333300000001' + '021122334455' + '86dd');
    expect(hex(f.subarray(14, 54))).toBe(
      '60000000' + '0020' + '3a' + 'ff' + 'fd770000000000000000000000000100' + 'ff020000000000000000000000000001',
    );
    expect(hex(f.subarray(54, 56))).toBe('8800'); // type 136, code 0
    expect(hex(f.subarray(58))).toBe('20000000' + 'fd770000000000000000000000000100' + '0201' + '333300000100');
    expect(icmp6Verifies(f)).toBe(true);
  });

  it('NA: the kernel test’s frame, byte for byte (checksum included), whatever the VIP’s spelling', () => {
    const input = { clusterMac: '33:33:00:00:01:00', ifaceMac: '02:00:00:a0:00:02' };
    const f = unsolicitedNa({ ...input, vip: 'fd01::100' });
    expect(hex(f)).toBe(
      '333300000001' +
        '0200' +
        '00a00002' +
        '86dd' +
        '60000000' +
        '0020' +
        '3a' +
        'ff' +
        'fd010000000000000000000000000100' +
        'ff020000000000000000000000000001' +
        '88' +
        '00' +
        '2669' + // the checksum (worked out with Python's struct; verified below as well)
        '20000000' +
        'fd010000000000000000000000000100' +
        '02' +
        '01' +
        '333300000100',
    );
    expect(icmp6Verifies(f)).toBe(true);
    for (const vip of ['FD01:0:0:0:0:0:0:100', 'fd01:0000::0100', 'fd01::0:100'])
      expect(hex(unsolicitedNa({ ...input, vip })), vip).toBe(hex(f));
  });

  it('the NA checksum verifies for every VIP and MAC', () => {
    const v6 = fc
      .array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 })
      .map((w) => w.map((x) => x.toString(16)).join(':'));
    fc.assert(
      fc.property(v6, macArb, macArb, (vip, clusterMac, ifaceMac) => {
        const f = unsolicitedNa({ vip, clusterMac, ifaceMac });
        expect(icmp6Verifies(f)).toBe(true);
        // A flipped bit anywhere in the message breaks it (the check is not vacuous).
        f[70] = f[70]! ^ 1;
        expect(icmp6Verifies(f)).toBe(false);
      }),
    );
  });

  it('refuses what is not an address or a MAC, rather than sending zeros', () => {
    const ok = { vip: '10.0.0.1', clusterMac: '01:00:5e:00:00:01', ifaceMac: '02:00:00:00:00:01' };
    for (const bad of [{ vip: '10.0.0' }, { clusterMac: '01:00:5e:00:00' }, { ifaceMac: '02:00:00:00:00:zz' }])
      expect(() => arpAnnouncement({ ...ok, ...bad }), JSON.stringify(bad)).toThrow(RangeError);
    expect(() => unsolicitedNa({ ...ok, vip: '10.0.0.1' })).toThrow(RangeError);
  });
});

/** One spelling of the 8 words: every choice RFC 4291 §2.2 allows (and URL canonicalisation makes some). */
interface Spelling {
  /** Which run of zero words `::` replaces (index into the runs of length >= 1), or none. */
  compress: number | null;
  /** Leading zeros per group (0..3, clipped to a 4-digit group). */
  pad: number[];
  upper: boolean[];
  /** The last 32 bits as a dotted quad (when no `::` ends inside them). */
  dotted: boolean;
}

function zeroRuns(w: readonly number[]): [number, number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < 8; i++) {
    if (w[i] !== 0) continue;
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    runs.push([i, j]);
    i = j;
  }
  return runs;
}

function spell(w: readonly number[], s: Spelling): string {
  const group = (x: number, i: number): string => {
    const h = x.toString(16);
    const g = '0'.repeat(Math.min(s.pad[i]!, 4 - h.length)) + h;
    return s.upper[i] ? g.toUpperCase() : g;
  };
  const runs = zeroRuns(w);
  const run = s.compress === null || runs.length === 0 ? null : runs[s.compress % runs.length]!;
  const dotted = s.dotted && (run === null || run[1] <= 6);
  const words = dotted ? w.slice(0, 6) : [...w];
  const quad = dotted ? `${w[6]! >>> 8}.${w[6]! & 0xff}.${w[7]! >>> 8}.${w[7]! & 0xff}` : null;
  let parts: string[];
  if (run === null) parts = words.map(group);
  else {
    const head = words.slice(0, run[0]).map(group).join(':');
    const tail = words
      .slice(run[1])
      .map((x, k) => group(x, run[1] + k))
      .join(':');
    // A dotted quad right after `::` needs no separator of its own: "::1.2.3.4", "1::1.2.3.4".
    parts = [`${head}::${tail}`];
    if (quad !== null) return tail === '' ? `${head}::${quad}` : `${head}::${tail}:${quad}`;
  }
  return quad === null ? parts.join(':') : `${parts.join(':')}:${quad}`;
}

/** RFC 5952 §4: lower case, no leading zeros, the longest run of two or more zero words (the first on a tie) as `::`. */
function rfc5952(w: readonly number[]): string {
  let best: [number, number] | null = null;
  for (const r of zeroRuns(w)) if (r[1] - r[0] >= 2 && (best === null || r[1] - r[0] > best[1] - best[0])) best = r;
  const g = (a: readonly number[]) => a.map((x) => x.toString(16)).join(':');
  return best === null ? g(w) : `${g(w.slice(0, best[0]))}::${g(w.slice(best[1]))}`;
}

const toBytes = (w: readonly number[]) => Uint8Array.from(w.flatMap((x) => [x >>> 8, x & 0xff]));

// Zeros often, so that `::` has runs to replace.
const wordsArb = fc.array(fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
  minLength: 8,
  maxLength: 8,
});
const spellingArb: fc.Arbitrary<Spelling> = fc.record({
  compress: fc.option(fc.nat(7)),
  pad: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 8, maxLength: 8 }),
  upper: fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
  dotted: fc.boolean(),
});

describe('ipv6Bytes', () => {
  it('reads the usual spellings', () => {
    expect(hex(ipv6Bytes('::'))).toBe('00'.repeat(16));
    expect(hex(ipv6Bytes('::1'))).toBe('00'.repeat(15) + '01');
    expect(hex(ipv6Bytes('2001:db8::100'))).toBe('20010db8' + '00'.repeat(10) + '0100');
    expect(hex(ipv6Bytes('2001:DB8::100'))).toBe(hex(ipv6Bytes('2001:db8::100')));
    expect(hex(ipv6Bytes('2001:0DB8:0000:0000:0000:0000:0000:0100'))).toBe(hex(ipv6Bytes('2001:db8::100')));
    expect(hex(ipv6Bytes('1::'))).toBe('0001' + '00'.repeat(14));
    expect(hex(ipv6Bytes('1:2:3:4:5:6:7::'))).toBe('0001000200030004000500060007' + '0000');
    expect(hex(ipv6Bytes('::2:3:4:5:6:7:8'))).toBe('0000' + '0002000300040005000600070008');
    // IPv4-mapped: the dotted quad is the last 32 bits, in any position the groups allow.
    expect(hex(ipv6Bytes('::ffff:1.2.3.4'))).toBe('00'.repeat(10) + 'ffff' + '01020304');
    expect(hex(ipv6Bytes('::FFFF:1.2.3.4'))).toBe(hex(ipv6Bytes('::ffff:102:304')));
    expect(hex(ipv6Bytes('::1.2.3.4'))).toBe('00'.repeat(12) + '01020304');
    expect(hex(ipv6Bytes('1:2:3:4:5:6:1.2.3.4'))).toBe('000100020003000400050006' + '01020304');
  });

  it('refuses malformed text with a RangeError', () => {
    for (const bad of [
      '',
      ':',
      ':::',
      '1::2::3',
      '::1::',
      ':1::2',
      '1::2:',
      '1:2:3:4:5:6:7',
      '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7:8::',
      '1:2:3:4:5:6:7::8', // `::` must stand for at least one group
      '12345::',
      'g::1',
      ' ::1',
      'fe80::1%eth0',
      '1.2.3.4',
      '1.2.3.4::', // the dotted quad only ends an address
      '1.2.3.4::1',
      '::1.2.3.4:1',
      '::ffff:1.2.3',
      '::ffff:1.2.3.4.5',
      '::ffff:01.2.3.4',
      '::ffff:1.2.3.256',
      '1:2:3:4:5:6:7:1.2.3.4', // 9 groups' worth
      '[::1]',
    ])
      expect(() => ipv6Bytes(bad), bad).toThrow(RangeError);
  });

  it('every spelling of an address gives its bytes', () => {
    fc.assert(
      fc.property(wordsArb, spellingArb, (w, s) => {
        const text = spell(w, s);
        expect(isIPv6(text), text).toBe(true); // the generator spells only addresses
        expect(hex(ipv6Bytes(text)), text).toBe(hex(toBytes(w)));
      }),
      { numRuns: 2000 },
    );
  });

  it('round trip with URL canonicalisation: bytes -> RFC 5952 text (as URL writes it) -> the same bytes', () => {
    fc.assert(
      fc.property(wordsArb, fc.boolean(), (w, upper) => {
        const canonical = rfc5952(w);
        const text = upper ? canonical.toUpperCase() : canonical;
        expect(new URL(`http://[${text}]/`).hostname).toBe(`[${canonical}]`);
        expect(hex(ipv6Bytes(text))).toBe(hex(toBytes(w)));
      }),
      { numRuns: 1000 },
    );
  });

  it('accepts exactly what net.isIPv6 accepts, also for near misses', () => {
    const alphabet = fc.constantFrom(...'0123456789abcdefABCDEF:.');
    const edit = fc.record({ at: fc.nat(), kind: fc.constantFrom('delete', 'insert', 'double'), ch: alphabet });
    const mutated = fc.tuple(wordsArb, spellingArb, fc.array(edit, { minLength: 1, maxLength: 3 })).map(([w, s, es]) =>
      es.reduce(
        (t, e) => {
          const i = e.at % (t.length + 1);
          if (e.kind === 'delete') return t.slice(0, i) + t.slice(i + 1);
          if (e.kind === 'insert') return t.slice(0, i) + e.ch + t.slice(i);
          return t.slice(0, i) + t.slice(i, i + 1) + t.slice(i);
        },
        spell(w, s),
      ),
    );
    const random = fc.string({ unit: alphabet, maxLength: 20 });
    // Groups, empty groups and dotted quads in any order: finds a quad that does not end the address ("1.2.3.4::").
    const token = fc.oneof(
      fc.constantFrom('', '', '0', 'ffff', '1.2.3.4', '01.2.3.4', 'abcde'),
      fc.integer({ min: 0, max: 0xffff }).map((x) => x.toString(16)),
    );
    const soup = fc.array(token, { minLength: 1, maxLength: 10 }).map((t) => t.join(':'));
    fc.assert(
      fc.property(fc.oneof(mutated, random, soup), (text) => {
        let ours: boolean;
        try {
          ipv6Bytes(text);
          ours = true;
        } catch (err) {
          expect(err).toBeInstanceOf(RangeError);
          ours = false;
        }
        expect(ours, JSON.stringify(text)).toBe(isIPv6(text));
      }),
      { numRuns: 5000 },
    );
  });
});
