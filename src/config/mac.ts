import { ipv6Bytes } from '../hash/ipv6.js';

// The cluster MAC: every node answers ARP (or neighbour discovery) for the VIP with one multicast MAC so the
// switch floods the VIP's frames to all of them. Derived like multicast MACs are: for IPv4 (RFC 1112)
// 01:00:5e + the address's low 23 bits, for IPv6 (RFC 2464) 33:33 + its low 32 bits.

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** 10.77.0.100 → 01:00:5e:4d:00:64, 2001:db8::1:100 → 33:33:00:01:01:00. The caller validates the address. */
export function deriveClusterMac(address: string): string {
  if (address.includes(':')) {
    const low = [...ipv6Bytes(address).slice(12)];
    return ['33', '33', ...low.map((n) => n.toString(16).padStart(2, '0'))].join(':');
  }
  const o = address.split('.').map((p) => Number(p));
  if (o.length !== 4 || o.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) {
    throw new RangeError(`not an IPv4 address: ${JSON.stringify(address)}`);
  }
  const low = [o[1]! & 0x7f, o[2]!, o[3]!];
  return ['01', '00', '5e', ...low.map((n) => n.toString(16).padStart(2, '0'))].join(':');
}

/** Lower-case colon form, or undefined when `mac` is not six hex octets (":" or "-" separated). */
export function normalizeMac(mac: string): string | undefined {
  const m = mac.trim().toLowerCase().replaceAll('-', ':');
  return MAC_RE.test(m) ? m : undefined;
}

/** The group bit (least significant bit of the first octet) makes a MAC multicast. */
export function isMulticastMac(mac: string): boolean {
  const m = normalizeMac(mac);
  return m !== undefined && (parseInt(m.slice(0, 2), 16) & 1) === 1;
}
