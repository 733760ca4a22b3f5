import type { VipSpec } from '../config/types.js';
import { clusteripBucket, type ClusteripPacket } from './clusterip.js';
import { nftablesBucket } from './nftables.js';

// Which bucket of a VIP serves a packet, as the chosen kernel path computes it (for `whois` and tests).

export { jhash, jhash1word, jhash2words, jhash3words, reciprocalScale, JHASH_INITVAL } from './jhash.js';
export { clusteripBucket, clusteripHash, rawPortWord, type ClusteripPacket } from './clusterip.js';
export { nftablesBucket, nftablesHash } from './nftables.js';
export { ipv4ToU32, u32ToIpv4, ipv4Bytes, type Ipv4 } from './ipv4.js';

export type HashBackend = 'clusterip' | 'nftables';

/**
 * The bucket (1..vip.buckets) the kernel assigns `packet`. The nftables backend hashes the source address only
 * (its rule is `jhash ip saddr`), whatever `vip.hashMode` says; CLUSTERIP honours the hash mode.
 */
export function bucketOf(vip: VipSpec, backend: HashBackend, packet: ClusteripPacket): number {
  return backend === 'clusterip'
    ? clusteripBucket(vip.hashMode, packet, vip.buckets, vip.seed)
    : nftablesBucket(packet.saddr, vip.buckets, vip.seed, 1);
}
