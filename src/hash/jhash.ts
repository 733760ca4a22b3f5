// Linux's Jenkins hash (include/linux/jhash.h, lookup3 as adapted by Jozsef Kadlecsik), bit for bit, in 32-bit
// unsigned arithmetic: `Math.imul` is not needed (jhash only adds, xors and rotates), `>>> 0` keeps values u32.
// Byte loads follow `__get_unaligned_cpu32` on a little-endian CPU (x86, arm64 LE): the kernels we target.

export const JHASH_INITVAL = 0xdeadbeef;

function rol32(x: number, s: number): number {
  return ((x << s) | (x >>> (32 - s))) >>> 0;
}

/** Mutable (a, b, c) state; one object per call keeps the mix readable without allocating per round. */
interface Abc {
  a: number;
  b: number;
  c: number;
}

// __jhash_mix: mixes 3 words reversibly (only used for keys longer than 12 bytes).
function mix(s: Abc): void {
  let { a, b, c } = s;
  a = (a - c) >>> 0;
  a = (a ^ rol32(c, 4)) >>> 0;
  c = (c + b) >>> 0;
  b = (b - a) >>> 0;
  b = (b ^ rol32(a, 6)) >>> 0;
  a = (a + c) >>> 0;
  c = (c - b) >>> 0;
  c = (c ^ rol32(b, 8)) >>> 0;
  b = (b + a) >>> 0;
  a = (a - c) >>> 0;
  a = (a ^ rol32(c, 16)) >>> 0;
  c = (c + b) >>> 0;
  b = (b - a) >>> 0;
  b = (b ^ rol32(a, 19)) >>> 0;
  a = (a + c) >>> 0;
  c = (c - b) >>> 0;
  c = (c ^ rol32(b, 4)) >>> 0;
  b = (b + a) >>> 0;
  s.a = a;
  s.b = b;
  s.c = c;
}

// __jhash_final: final mixing of (a, b, c) into c.
function final(s: Abc): void {
  let { a, b, c } = s;
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 14)) >>> 0;
  a = (a ^ c) >>> 0;
  a = (a - rol32(c, 11)) >>> 0;
  b = (b ^ a) >>> 0;
  b = (b - rol32(a, 25)) >>> 0;
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 16)) >>> 0;
  a = (a ^ c) >>> 0;
  a = (a - rol32(c, 4)) >>> 0;
  b = (b ^ a) >>> 0;
  b = (b - rol32(a, 14)) >>> 0;
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 24)) >>> 0;
  s.a = a;
  s.b = b;
  s.c = c;
}

function le32(k: Uint8Array, i: number): number {
  return (k[i]! | (k[i + 1]! << 8) | (k[i + 2]! << 16) | (k[i + 3]! << 24)) >>> 0;
}

/** `jhash(key, length, initval)`: hashes an arbitrary byte string. */
export function jhash(key: Uint8Array, initval: number): number {
  let length = key.length;
  const init = (JHASH_INITVAL + length + (initval >>> 0)) >>> 0;
  const s: Abc = { a: init, b: init, c: init };
  let i = 0;
  while (length > 12) {
    s.a = (s.a + le32(key, i)) >>> 0;
    s.b = (s.b + le32(key, i + 4)) >>> 0;
    s.c = (s.c + le32(key, i + 8)) >>> 0;
    mix(s);
    length -= 12;
    i += 12;
  }
  if (length === 0) return s.c; // the kernel returns c without the final mix
  // The kernel's fall-through switch: byte j of the tail lands in word j>>2 at bit 8*(j&3).
  const tail = [0, 0, 0];
  for (let j = 0; j < length; j++) tail[j >> 2] = (tail[j >> 2]! + (key[i + j]! << (8 * (j & 3)))) >>> 0;
  s.a = (s.a + tail[0]!) >>> 0;
  s.b = (s.b + tail[1]!) >>> 0;
  s.c = (s.c + tail[2]!) >>> 0;
  final(s);
  return s.c;
}

// __jhash_nwords: exactly 1, 2 or 3 words.
function nwords(a: number, b: number, c: number, initval: number): number {
  const s: Abc = { a: (a + initval) >>> 0, b: (b + initval) >>> 0, c: (c + initval) >>> 0 };
  final(s);
  return s.c;
}

export function jhash3words(a: number, b: number, c: number, initval: number): number {
  return nwords(a >>> 0, b >>> 0, c >>> 0, (initval + JHASH_INITVAL + (3 << 2)) >>> 0);
}

export function jhash2words(a: number, b: number, initval: number): number {
  return nwords(a >>> 0, b >>> 0, 0, (initval + JHASH_INITVAL + (2 << 2)) >>> 0);
}

export function jhash1word(a: number, initval: number): number {
  return nwords(a >>> 0, 0, 0, (initval + JHASH_INITVAL + (1 << 2)) >>> 0);
}

/**
 * The kernel's `reciprocal_scale(val, n)`: `(u32)(((u64)val * n) >> 32)`, mapping a u32 hash onto 0..n-1.
 * Split in 16-bit halves so every intermediate stays below 2^53 (exact in a double).
 */
export function reciprocalScale(val: number, n: number): number {
  const v = val >>> 0;
  const m = n >>> 0;
  const hi = v >>> 16;
  const lo = v & 0xffff;
  const u = hi * m; // < 2^48
  const t = lo * m; // < 2^48
  // (u * 2^16 + t) >> 32 = floor(u / 2^16) + floor(((u mod 2^16) * 2^16 + t) / 2^32)
  const uHigh = Math.floor(u / 0x10000);
  const uLow = u % 0x10000;
  return (uHigh + Math.floor((uLow * 0x10000 + t) / 0x100000000)) >>> 0;
}
