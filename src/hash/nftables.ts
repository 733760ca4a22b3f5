import type { HashMode } from '../config/types.js';
import { rawPortWord, type ClusteripPacket } from './clusterip.js';
import { jhash, reciprocalScale } from './jhash.js';
import { ipv4Bytes, type Ipv4 } from './ipv4.js';
import { ipv6Bytes } from './ipv6.js';

// nftables `jhash <input> mod N seed S offset O` (net/netfilter/nft_hash.c, nft_jhash_eval):
//   h = reciprocal_scale(jhash(register bytes, len, seed), modulus) + offset
// `ip saddr` loads the 4 header bytes into the register as they are (network order), and jhash reads them
// back little-endian. A concatenation (`ip saddr . th sport`) pads every field to 4 bytes and nft_payload
// zeroes the padding, so the key is saddr(4) sport(2) 0 0 [dport(2) 0 0] and len is 8 or 12. These are not
// the same numbers as CLUSTERIP's jhash_Nwords(ntohl(saddr), …). IPv6 (`ip6 saddr`) is the same with the
// 16 address bytes: len 16, 20 or 24.

/** The hash input each hash mode uses in the nftables backend's rule (src/backends/nftRuleset.ts). */
export const NFT_HASH_INPUT: Record<HashMode, string> = {
  sourceip: 'ip saddr',
  'sourceip-sourceport': 'ip saddr . th sport',
  'sourceip-sourceport-destport': 'ip saddr . th sport . th dport',
};

/** The address bytes as they sit in the IP header: an IPv6 address (text with ':') or an IPv4 one. */
export function saddrBytes(saddr: Ipv4): Uint8Array {
  return typeof saddr === 'string' && saddr.includes(':') ? ipv6Bytes(saddr) : ipv4Bytes(saddr);
}

/** The register bytes nftables hashes for `NFT_HASH_INPUT[mode]` (with `ip6 saddr` for an IPv6 source). */
export function nftablesKey(mode: HashMode, packet: ClusteripPacket): Uint8Array {
  const saddr = saddrBytes(packet.saddr);
  if (mode === 'sourceip') return saddr;
  const n = saddr.length;
  const key = new Uint8Array(n + (mode === 'sourceip-sourceport' ? 4 : 8));
  key.set(saddr, 0);
  const sport = packet.sport ?? 0;
  rawPortWord(sport); // validates
  key[n] = sport >>> 8;
  key[n + 1] = sport & 0xff;
  if (mode === 'sourceip-sourceport-destport') {
    const dport = packet.dport ?? 0;
    rawPortWord(dport);
    key[n + 4] = dport >>> 8;
    key[n + 5] = dport & 0xff;
  }
  return key;
}

export function nftablesHash(saddr: Ipv4, seed: number): number {
  return jhash(saddrBytes(saddr), seed >>> 0);
}

function checkBuckets(buckets: number): void {
  // nft_jhash_init rejects modulus <= 1 with ERANGE; one bucket is still meaningful to us (everything → 1).
  if (!Number.isInteger(buckets) || buckets < 1 || buckets > 0xffffffff) {
    throw new RangeError(`bucket count out of range: ${buckets}`);
  }
}

/** `jhash ip saddr mod buckets seed seed offset offset`; with the default offset 1 buckets are 1..N. */
export function nftablesBucket(saddr: Ipv4, buckets: number, seed: number, offset = 1): number {
  checkBuckets(buckets);
  return (reciprocalScale(nftablesHash(saddr, seed), buckets) + offset) >>> 0;
}

/** The bucket of the nftables backend's rule for `mode` (`jhash <NFT_HASH_INPUT[mode]> mod N … offset 1`). */
export function nftablesBucketFor(
  mode: HashMode,
  packet: ClusteripPacket,
  buckets: number,
  seed: number,
  offset = 1,
): number {
  checkBuckets(buckets);
  return (reciprocalScale(jhash(nftablesKey(mode, packet), seed >>> 0), buckets) + offset) >>> 0;
}
