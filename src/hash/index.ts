import type { VipSpec } from '../config/types.js';
import { clusteripBucket, type ClusteripPacket } from './clusterip.js';
import { nftablesBucketFor } from './nftables.js';

// Which bucket of a VIP serves a packet, as the chosen kernel path computes it (for `whois` and tests).

export { jhash, jhash1word, jhash2words, jhash3words, reciprocalScale, JHASH_INITVAL } from './jhash.js';
export { clusteripBucket, clusteripHash, rawPortWord, type ClusteripPacket } from './clusterip.js';
export {
  nftablesBucket,
  nftablesBucketFor,
  nftablesHash,
  nftablesKey,
  saddrBytes,
  NFT_HASH_INPUT,
} from './nftables.js';
export { ipv6Bytes } from './ipv6.js';
export { ipv4ToU32, u32ToIpv4, ipv4Bytes, type Ipv4 } from './ipv4.js';
export { hashIdentity, sameHashIdentity, type IdentityStamp } from './identity.js';

export type HashBackend = 'clusterip' | 'nftables';

/**
 * The bucket (1..vip.buckets) the kernel assigns `packet` for this VIP: CLUSTERIP's clusterip_hashfn, or the
 * nftables backend's `jhash <input> mod N seed S offset 1` with the input its hash mode selects. The two
 * backends put the same packet in different buckets.
 */
export function bucketOf(vip: VipSpec, backend: HashBackend, packet: ClusteripPacket): number {
  if (backend === 'clusterip' && typeof packet.saddr === 'string' && packet.saddr.includes(':'))
    throw new RangeError(`CLUSTERIP hashes IPv4 clients only, not ${packet.saddr}`);
  return backend === 'clusterip'
    ? clusteripBucket(vip.hashMode, packet, vip.buckets, vip.seed)
    : nftablesBucketFor(vip.hashMode, packet, vip.buckets, vip.seed, 1);
}
