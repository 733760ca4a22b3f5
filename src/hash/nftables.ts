import { jhash, reciprocalScale } from './jhash.js';
import { ipv4Bytes, type Ipv4 } from './ipv4.js';

// nftables `jhash ip saddr mod N seed S offset O` (net/netfilter/nft_hash.c, nft_jhash_eval):
//   h = reciprocal_scale(jhash(register bytes, len, seed), modulus) + offset
// `ip saddr` loads the 4 header bytes into the register as they are (network order), and jhash reads them
// back little-endian. Not the same numbers as CLUSTERIP's jhash_1word(ntohl(saddr)).

export function nftablesHash(saddr: Ipv4, seed: number): number {
  return jhash(ipv4Bytes(saddr), seed >>> 0);
}

/** The bucket nftables computes; with the default offset 1 buckets are 1..N like CLUSTERIP's. */
export function nftablesBucket(saddr: Ipv4, buckets: number, seed: number, offset = 1): number {
  // nft_jhash_init rejects modulus <= 1 with ERANGE; one bucket is still meaningful to us (everything → 1).
  if (!Number.isInteger(buckets) || buckets < 1 || buckets > 0xffffffff) {
    throw new RangeError(`bucket count out of range: ${buckets}`);
  }
  return (reciprocalScale(nftablesHash(saddr, seed), buckets) + offset) >>> 0;
}
