import type { HashMode } from '../config/types.js';
import { jhash1word, jhash2words, jhash3words, reciprocalScale } from './jhash.js';
import { toU32, type Ipv4 } from './ipv4.js';

// CLUSTERIP's clusterip_hashfn (net/ipv4/netfilter/ipt_CLUSTERIP.c, unchanged from 3.19 to its removal in 6.3):
//   sourceip                      jhash_1word(ntohl(saddr), initval)
//   sourceip-sourceport           jhash_2words(ntohl(saddr), sport, initval)
//   sourceip-sourceport-destport  jhash_3words(ntohl(saddr), sport, dport, initval)
//   bucket = reciprocal_scale(hash, total_nodes) + 1
// The ports are the raw 16-bit header words loaded as CPU-order u16 (`const u_int16_t *ports`), not ntohs'd:
// on a little-endian CPU port 80 (bytes 00 50) hashes as 0x5000. Protocols without ports hash 0 for both.

export interface ClusteripPacket {
  saddr: Ipv4;
  /** Source port as a number (host order, e.g. 51000); omitted = 0 (protocol without ports). */
  sport?: number;
  dport?: number;
}

/** The u16 the kernel loads from a network-order port field on a little-endian CPU. */
export function rawPortWord(port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new RangeError(`not a port: ${port}`);
  return ((port & 0xff) << 8) | (port >>> 8);
}

export function clusteripHash(mode: HashMode, packet: ClusteripPacket, seed: number): number {
  const saddr = toU32(packet.saddr);
  const sport = rawPortWord(packet.sport ?? 0);
  const dport = rawPortWord(packet.dport ?? 0);
  switch (mode) {
    case 'sourceip':
      return jhash1word(saddr, seed);
    case 'sourceip-sourceport':
      return jhash2words(saddr, sport, seed);
    case 'sourceip-sourceport-destport':
      return jhash3words(saddr, sport, dport, seed);
  }
}

/** The bucket (1..buckets, CLUSTERIP's `--local-node` numbering) the kernel gives this packet. */
export function clusteripBucket(mode: HashMode, packet: ClusteripPacket, buckets: number, seed: number): number {
  checkBuckets(buckets);
  return reciprocalScale(clusteripHash(mode, packet, seed), buckets) + 1;
}

function checkBuckets(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 0xffffffff) throw new RangeError(`bucket count out of range: ${n}`);
}
