import { isIPv4, isIPv6 } from 'node:net';

// VIP addresses of both families. A VIP's address is its identity in etcd keys, set names and files, so an
// IPv6 address is kept in one canonical text form (RFC 5952: lower case, the longest zero run compressed) and
// "2001:DB8:0::100" and "2001:db8::100" are one VIP.

export type AddressFamily = 'ipv4' | 'ipv6';

/** The family of an address already known to be valid. */
export function familyOf(address: string): AddressFamily {
  return address.includes(':') ? 'ipv6' : 'ipv4';
}

/** RFC 5952 text of an IPv6 address (the WHATWG URL host serializer implements it), or undefined. */
export function canonicalIpv6(address: string): string | undefined {
  if (!isIPv6(address) || address.includes('%')) return undefined;
  try {
    return new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
}

export const NOT_AN_ADDRESS = 'not an IPv4 or IPv6 address';

/**
 * Why an address cannot be a VIP, or null when it can. IPv4: a unicast host address (not 0.0.0.0/8, not 224.0.0.0
 * and up). IPv6: a global or unique-local unicast address; not ::, loopback, link-local (it
 * would need a zone), multicast, or IPv4-mapped (that is an IPv4 VIP).
 */
export function vipAddressProblem(address: string): string | null {
  if (isIPv4(address)) {
    const first = Number(address.split('.')[0]);
    return first === 0 || first >= 224 ? 'not a unicast IPv4 host address' : null;
  }
  const canon = canonicalIpv6(address);
  if (canon === undefined) return NOT_AN_ADDRESS;
  if (canon === '::' || canon === '::1') return 'the unspecified or loopback address';
  const first = parseInt(canon.split(':')[0] || '0', 16);
  if (first >= 0xff00) return 'an IPv6 multicast address';
  if ((first & 0xffc0) === 0xfe80) return 'an IPv6 link-local address (VIPs need global or unique-local ones)';
  if (/^::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}$/.test(canon)) return 'an IPv4-mapped address (write the IPv4 VIP)';
  return null;
}

/** The form a VIP address is stored and compared in: IPv4 as given, IPv6 canonical. */
export function canonicalVip(address: string): string {
  return isIPv4(address) ? address : (canonicalIpv6(address) ?? address);
}
