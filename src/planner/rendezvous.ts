// Rendezvous (highest-random-weight) scores of (vip#bucket, node): the planner's deterministic tie-breaker.
// score = fmix32(H("vip#bucket#") xor H(node)), H = FNV-1a over UTF-16 code units finished with murmur3's
// fmix32, so ids differing in one character ("node-1", "node-2") still get unrelated scores. Each side is
// hashed once per plan and a pair costs a few integer operations: with 1,000 tied nodes per orphan that is
// what keeps the planner fast. Not cryptographic; only stable and well spread.

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function fnv1a(s: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, FNV_PRIME);
  }
  return h >>> 0;
}

export function fmix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The bucket side of the score, computed once per bucket. */
export function bucketKey(vip: string, bucket: number): number {
  return fmix32(fnv1a(`${vip}#${bucket}#`));
}

/** The node side of the score, computed once per node. */
export function nodeKey(node: string): number {
  return fmix32(fnv1a(node));
}

export function pairScore(bucketK: number, nodeK: number): number {
  return fmix32(bucketK ^ nodeK);
}

/** Score of `node` for `vip`'s bucket; among tied candidates the highest score wins (then the smaller id). */
export function rendezvous(vip: string, bucket: number, node: string): number {
  return pairScore(bucketKey(vip, bucket), nodeKey(node));
}
