// IPv4 address helpers for the hashes: the kernel hashes `ntohl(saddr)` (CLUSTERIP) or the address bytes in
// network order (nftables), so both views are needed.

/** Dotted quad → u32 in host order (the value `ntohl(saddr)` has). Throws RangeError on malformed input. */
export function ipv4ToU32(addr: string): number {
  const parts = addr.split('.');
  if (parts.length !== 4) throw new RangeError(`not an IPv4 address: ${JSON.stringify(addr)}`);
  let v = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) {
      throw new RangeError(`not an IPv4 address: ${JSON.stringify(addr)}`);
    }
    v = v * 256 + Number(p);
  }
  return v >>> 0;
}

export function u32ToIpv4(v: number): string {
  const x = v >>> 0;
  return `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`;
}

/** An address given as a dotted quad or as a host-order u32. */
export type Ipv4 = string | number;

export function toU32(addr: Ipv4): number {
  if (typeof addr === 'number') {
    if (!Number.isInteger(addr) || addr < 0 || addr > 0xffffffff) {
      throw new RangeError(`not a u32 IPv4 address: ${addr}`);
    }
    return addr >>> 0;
  }
  return ipv4ToU32(addr);
}

/** The 4 bytes as they sit in the IP header (network order). */
export function ipv4Bytes(addr: Ipv4): Uint8Array {
  const v = toU32(addr);
  return Uint8Array.of(v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
}
