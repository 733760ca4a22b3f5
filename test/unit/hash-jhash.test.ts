import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import {
  bucketOf,
  clusteripBucket,
  ipv4ToU32,
  jhash,
  jhash1word,
  jhash2words,
  jhash3words,
  nftablesBucket,
  nftablesBucketFor,
  rawPortWord,
  reciprocalScale,
  u32ToIpv4,
} from '../../src/hash/index.js';
import type { VipSpec } from '../../src/config/types.js';

// The pure hashes against an independent implementation: the kernel's own C (jhash.h's macros and
// reciprocal_scale, transcribed into a tiny program compiled with cc, run on random inputs). The real proof is
// test/kernel/nft-hash.test.ts (nftables in a network namespace) and the qemu test of the CLUSTERIP module;
// this test skips when no C compiler is present.

const C_SOURCE = String.raw`
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef uint32_t u32; typedef uint8_t u8; typedef uint16_t u16; typedef uint64_t u64;
static inline u32 rol32(u32 w, unsigned s) { return (w << s) | (w >> ((-s) & 31)); }
#define __jhash_mix(a, b, c) { \
  a -= c; a ^= rol32(c, 4); c += b; b -= a; b ^= rol32(a, 6); a += c; \
  c -= b; c ^= rol32(b, 8); b += a; a -= c; a ^= rol32(c, 16); c += b; \
  b -= a; b ^= rol32(a, 19); a += c; c -= b; c ^= rol32(b, 4); b += a; }
#define __jhash_final(a, b, c) { \
  c ^= b; c -= rol32(b, 14); a ^= c; a -= rol32(c, 11); b ^= a; b -= rol32(a, 25); \
  c ^= b; c -= rol32(b, 16); a ^= c; a -= rol32(c, 4); b ^= a; b -= rol32(a, 14); \
  c ^= b; c -= rol32(b, 24); }
#define JHASH_INITVAL 0xdeadbeef
static u32 get32(const u8 *k) { u32 v; memcpy(&v, k, 4); return v; }
static u32 jhash(const void *key, u32 length, u32 initval) {
  u32 a, b, c; const u8 *k = key;
  a = b = c = JHASH_INITVAL + length + initval;
  while (length > 12) { a += get32(k); b += get32(k + 4); c += get32(k + 8); __jhash_mix(a, b, c); length -= 12; k += 12; }
  switch (length) {
  case 12: c += (u32)k[11] << 24; /* fall through */
  case 11: c += (u32)k[10] << 16; /* fall through */
  case 10: c += (u32)k[9] << 8; /* fall through */
  case 9: c += k[8]; /* fall through */
  case 8: b += (u32)k[7] << 24; /* fall through */
  case 7: b += (u32)k[6] << 16; /* fall through */
  case 6: b += (u32)k[5] << 8; /* fall through */
  case 5: b += k[4]; /* fall through */
  case 4: a += (u32)k[3] << 24; /* fall through */
  case 3: a += (u32)k[2] << 16; /* fall through */
  case 2: a += (u32)k[1] << 8; /* fall through */
  case 1: a += k[0]; __jhash_final(a, b, c); /* fall through */
  case 0: break;
  }
  return c;
}
static u32 nwords(u32 a, u32 b, u32 c, u32 initval) { a += initval; b += initval; c += initval; __jhash_final(a, b, c); return c; }
static u32 j3(u32 a, u32 b, u32 c, u32 iv) { return nwords(a, b, c, iv + JHASH_INITVAL + (3 << 2)); }
static u32 j2(u32 a, u32 b, u32 iv) { return nwords(a, b, 0, iv + JHASH_INITVAL + (2 << 2)); }
static u32 j1(u32 a, u32 iv) { return nwords(a, 0, 0, iv + JHASH_INITVAL + (1 << 2)); }
static u32 rscale(u32 val, u32 n) { return (u32)(((u64)val * n) >> 32); }
/* stdin lines: "bytes HEX SEED" | "words SADDR SPORT DPORT SEED N" ; stdout one line per input. */
int main(void) {
  char kind[16];
  while (scanf("%15s", kind) == 1) {
    if (strcmp(kind, "bytes") == 0) {
      char hex[512]; u32 seed; u8 buf[256]; scanf("%511s %u", hex, &seed);
      u32 len = strcmp(hex, "-") == 0 ? 0 : (u32)strlen(hex) / 2;
      for (u32 i = 0; i < len; i++) { unsigned x; sscanf(hex + 2 * i, "%2x", &x); buf[i] = (u8)x; }
      printf("%u\n", jhash(buf, len, seed));
    } else {
      u32 saddr, sport, dport, seed, n; scanf("%u %u %u %u %u", &saddr, &sport, &dport, &seed, &n);
      /* CLUSTERIP: ports are the raw header words loaded as u16 on this (little-endian) CPU. */
      u8 hdr[4] = { sport >> 8, sport & 255, dport >> 8, dport & 255 }; u16 ports[2]; memcpy(ports, hdr, 4);
      u32 h1 = j1(saddr, seed), h2 = j2(saddr, ports[0], seed), h3 = j3(saddr, ports[0], ports[1], seed);
      /* nftables: register holds the header bytes of saddr (network order). */
      u8 sa[4] = { saddr >> 24, (saddr >> 16) & 255, (saddr >> 8) & 255, saddr & 255 };
      u32 hn = jhash(sa, 4, seed);
      /* nftables concatenations: every field padded to 4 bytes, padding zeroed by nft_payload. */
      u32 reg[3] = { 0, 0, 0 }; memcpy(reg, sa, 4); memcpy(&reg[1], hdr, 2); memcpy(&reg[2], hdr + 2, 2);
      u32 hn2 = jhash(reg, 8, seed), hn3 = jhash(reg, 12, seed);
      printf("%u %u %u %u %u %u %u %u %u %u\n", h1, h2, h3, hn, rscale(h1, n) + 1, rscale(h2, n) + 1, rscale(h3, n) + 1, rscale(hn, n) + 1, rscale(hn2, n) + 1, rscale(hn3, n) + 1);
    }
  }
  return 0;
}
`;

function haveCc(): boolean {
  try {
    execFileSync('cc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const dir = mkdtempSync(join(tmpdir(), 'cipha-jhash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const cc = haveCc() && littleEndian;
if (!cc) console.warn('SKIP C cross-check: no cc on this machine (or a big-endian CPU)');

function runC(lines: string[]): string[] {
  const bin = join(dir, 'jhash');
  writeFileSync(join(dir, 'jhash.c'), C_SOURCE);
  execFileSync('cc', ['-O1', '-o', bin, join(dir, 'jhash.c')], { stdio: 'pipe' });
  return execFileSync(bin, { input: lines.join('\n') + '\n', encoding: 'utf8', maxBuffer: 64 << 20 })
    .trim()
    .split('\n');
}

const hex = (b: Uint8Array): string => (b.length === 0 ? '-' : Buffer.from(b).toString('hex'));

describe.runIf(cc)('jhash and the bucket functions agree with the kernel C code', () => {
  it('jhash over byte strings of every tail length (0..40 bytes)', () => {
    const inputs = fc.sample(
      fc.record({ bytes: fc.uint8Array({ minLength: 0, maxLength: 40 }), seed: fc.nat({ max: 0xffffffff }) }),
      { numRuns: 3000, seed: 42 },
    );
    const out = runC(inputs.map((i) => `bytes ${hex(i.bytes)} ${i.seed}`));
    inputs.forEach((i, k) => expect(jhash(i.bytes, i.seed), `case ${k}`).toBe(Number(out[k])));
  });

  it('CLUSTERIP (three modes) and nftables buckets for random packets, seeds and bucket counts', () => {
    const inputs = fc.sample(
      fc.record({
        saddr: fc.nat({ max: 0xffffffff }),
        sport: fc.nat({ max: 0xffff }),
        dport: fc.nat({ max: 0xffff }),
        seed: fc.nat({ max: 0xffffffff }),
        n: fc.oneof(
          fc.integer({ min: 1, max: 16 }),
          fc.integer({ min: 1, max: 4096 }),
          fc.integer({ min: 1, max: 0xffffffff }),
        ),
      }),
      { numRuns: 5000, seed: 7 },
    );
    const out = runC(inputs.map((i) => `words ${i.saddr} ${i.sport} ${i.dport} ${i.seed} ${i.n}`));
    inputs.forEach((i, k) => {
      const [, , , , b1, b2, b3, bn, bn2, bn3] = out[k]!.split(' ').map(Number);
      const p = { saddr: i.saddr, sport: i.sport, dport: i.dport };
      expect(clusteripBucket('sourceip', p, i.n, i.seed), `case ${k}`).toBe(b1);
      expect(clusteripBucket('sourceip-sourceport', p, i.n, i.seed), `case ${k}`).toBe(b2);
      expect(clusteripBucket('sourceip-sourceport-destport', p, i.n, i.seed), `case ${k}`).toBe(b3);
      expect(nftablesBucket(i.saddr, i.n, i.seed), `case ${k}`).toBe(bn);
      expect(nftablesBucketFor('sourceip', p, i.n, i.seed), `case ${k}`).toBe(bn);
      expect(nftablesBucketFor('sourceip-sourceport', p, i.n, i.seed), `case ${k}`).toBe(bn2);
      expect(nftablesBucketFor('sourceip-sourceport-destport', p, i.n, i.seed), `case ${k}`).toBe(bn3);
    });
  });
});

describe('hash helpers', () => {
  it('reciprocalScale equals the exact 64-bit product shifted right by 32', () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff }), (v, n) => {
        const exact = Number((BigInt(v) * BigInt(n)) >> 32n);
        expect(reciprocalScale(v, n)).toBe(exact);
      }),
      { numRuns: 10_000 },
    );
    expect(reciprocalScale(0xffffffff, 0xffffffff)).toBe(0xfffffffe);
  });

  it('jhash_Nwords equal jhash2 over the same words (the kernel identity jhash2(k, n, iv) == jhash_nwords)', () => {
    // jhash of 4/8/12 little-endian bytes == jhash_{1,2,3}words: the word functions add the length (n << 2) to
    // initval just as jhash adds the byte length, so both paths must agree on every input.
    fc.assert(
      fc.property(
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        (a, b, c, iv) => {
          const le = (...w: number[]): Uint8Array => new Uint8Array(new Uint32Array(w).buffer);
          expect(jhash1word(a, iv)).toBe(jhash(le(a), iv));
          expect(jhash2words(a, b, iv)).toBe(jhash(le(a, b), iv));
          expect(jhash3words(a, b, c, iv)).toBe(jhash(le(a, b, c), iv));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('buckets are always in 1..N and cover every bucket', () => {
    for (const n of [1, 2, 7, 16, 4096]) {
      const seen = new Set<number>();
      for (let i = 0; i < 64 * n && seen.size < n; i++) {
        const b = nftablesBucket((0x0a000000 + i * 2654435761) >>> 0, n, 0x5eed1234);
        const c = clusteripBucket('sourceip', { saddr: (0x0a000000 + i * 2654435761) >>> 0 }, n, 0x5eed1234);
        expect(b).toBeGreaterThanOrEqual(1);
        expect(b).toBeLessThanOrEqual(n);
        expect(c).toBeGreaterThanOrEqual(1);
        expect(c).toBeLessThanOrEqual(n);
        seen.add(b);
      }
      expect(seen.size).toBe(n);
    }
  });

  it('ports are hashed as the raw header word (byte-swapped on little-endian CPUs)', () => {
    expect(rawPortWord(80)).toBe(0x5000);
    expect(rawPortWord(0x1234)).toBe(0x3412);
    const seed = 0x5eed1234;
    expect(clusteripBucket('sourceip-sourceport', { saddr: '10.0.0.1', sport: 80 }, 4096, seed)).not.toBe(
      clusteripBucket('sourceip-sourceport', { saddr: '10.0.0.1', sport: 0x5000 }, 4096, seed),
    );
  });

  it('parses and formats addresses, rejecting malformed ones', () => {
    expect(ipv4ToU32('10.77.0.100')).toBe(0x0a4d0064);
    expect(u32ToIpv4(0x0a4d0064)).toBe('10.77.0.100');
    for (const bad of ['10.0.0', '10.0.0.256', '1.2.3.4.5', 'a.b.c.d', '01.2.3.4', '']) {
      expect(() => ipv4ToU32(bad), bad).toThrow(RangeError);
    }
    expect(() => clusteripBucket('sourceip', { saddr: '1.2.3.4' }, 0, 1)).toThrow(RangeError);
  });

  it('bucketOf follows the backend and the hash mode', () => {
    const vip: VipSpec = {
      address: '10.77.0.100',
      interface: 'eth0',
      buckets: 16,
      hashMode: 'sourceip-sourceport',
      seed: 0x5eed1234,
      clusterMac: '01:00:5e:4d:00:64',
      sticky: false,
    };
    const p = { saddr: '192.0.2.7', sport: 40000, dport: 80 };
    expect(bucketOf(vip, 'clusterip', p)).toBe(clusteripBucket('sourceip-sourceport', p, 16, vip.seed));
    expect(bucketOf(vip, 'nftables', p)).toBe(nftablesBucketFor('sourceip-sourceport', p, 16, vip.seed, 1));
    const sourceOnly = { ...vip, hashMode: 'sourceip' as const };
    expect(bucketOf(sourceOnly, 'nftables', p)).toBe(nftablesBucket('192.0.2.7', 16, vip.seed, 1));
  });
});
