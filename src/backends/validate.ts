import { BackendError } from '../errors.js';
import type { VipSpec } from '../config/types.js';
import { canonicalIpv6 } from '../config/address.js';

// Every value that reaches nft, iptables or a file name passes through here first. The config layer validates
// too, but backends are also built from etcd data and by tests, so they re-check: a value that would change
// the meaning of an nft batch (a quote, a brace, a newline) must never get that far.

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
/** Linux IFNAMSIZ is 16 including the NUL; no '/', whitespace, quotes or nft/iptables metacharacters. */
const IFACE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
/** nft identifiers: letters, digits, underscore; kept short so derived set names stay below nft's limit. */
const NFT_NAME = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;
const MULTICAST_MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

function invalid(what: string, value: unknown): never {
  throw new BackendError('invalid', `invalid ${what}: ${JSON.stringify(value)}`);
}

export function isIpv4(value: string): boolean {
  return IPV4.test(value);
}

export function checkIpv4(value: string): string {
  if (typeof value !== 'string' || !IPV4.test(value)) invalid('IPv4 address', value);
  return value;
}

/** A VIP address as the spec stores it: IPv4, or IPv6 in canonical form (hex digits and colons only). */
export function isVipAddress(value: string): boolean {
  return IPV4.test(value) || (/^[0-9a-f:]{2,39}$/.test(value) && canonicalIpv6(value) === value);
}

export function checkVipAddress(value: string): string {
  if (typeof value !== 'string' || !isVipAddress(value)) invalid('VIP address (IPv4, or IPv6 in RFC 5952 form)', value);
  return value;
}

export function checkInterface(value: string): string {
  if (typeof value !== 'string' || !IFACE.test(value)) invalid('interface name', value);
  return value;
}

export function checkNftName(value: string): string {
  if (typeof value !== 'string' || !NFT_NAME.test(value)) invalid('nftables table name', value);
  return value;
}

export function checkSeed(value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) invalid('32-bit seed', value);
  return value;
}

export function checkBucketCount(value: number, max: number): number {
  if (!Number.isInteger(value) || value < 1 || value > max) invalid(`bucket count (1..${max})`, value);
  return value;
}

/** A bucket number 1..total. */
export function checkBucket(value: number, total: number, vip: string): number {
  if (!Number.isInteger(value) || value < 1 || value > total) {
    throw new BackendError('invalid', `invalid bucket ${JSON.stringify(value)} for VIP ${vip} (1..${total})`);
  }
  return value;
}

export function checkMulticastMac(value: string): string {
  if (typeof value !== 'string' || !MULTICAST_MAC.test(value)) invalid('MAC address', value);
  // The least significant bit of the first octet marks a multicast address; CLUSTERIP refuses anything else.
  if ((parseInt(value.slice(0, 2), 16) & 1) !== 1) invalid('multicast MAC address', value);
  return value;
}

/**
 * A hold time (ms until the fence deadline) as a whole number of ms >= 1. Below 1 ms the deadline has passed (or
 * will before the kernel sees the element), and nft would read `timeout 0ms` as "no timeout": refuse it.
 */
export function checkHoldMs(value: number): number {
  if (!Number.isFinite(value) || Math.floor(value) < 1 || value > 86_400_000) {
    invalid('hold time in ms (1..86400000; below 1 the fence deadline has passed)', value);
  }
  return Math.floor(value);
}

/** Checks every field of a VIP that a backend turns into kernel configuration. */
export function checkVip(vip: VipSpec, maxBuckets: number): VipSpec {
  checkVipAddress(vip.address);
  checkInterface(vip.interface);
  checkBucketCount(vip.buckets, maxBuckets);
  checkSeed(vip.seed);
  checkMulticastMac(vip.clusterMac);
  return vip;
}

/** Rejects a spec that names one VIP twice: every backend keys its state by address. */
export function checkDistinctVips(vips: readonly VipSpec[]): void {
  const seen = new Set<string>();
  for (const v of vips) {
    if (seen.has(v.address)) invalid('spec: VIP listed twice', v.address);
    seen.add(v.address);
  }
}
