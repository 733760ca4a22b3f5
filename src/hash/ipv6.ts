// IPv6 address text → the 16 bytes of the IP header (network order), for the nftables hash of `ip6 saddr` and for
// frames. Strict: eight groups, or fewer with one `::`, an optional dotted-quad tail; no zone index.

export function ipv6Bytes(addr: string): Uint8Array {
  const bad = (): never => {
    throw new RangeError(`not an IPv6 address: ${JSON.stringify(addr)}`);
  };
  if (typeof addr !== 'string' || addr.length < 2 || addr.length > 45 || !/^[0-9a-fA-F:.]+$/.test(addr)) bad();
  const halves = addr.split('::');
  if (halves.length > 2) bad();
  const words = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    const groups = part.split(':');
    groups.forEach((g, i) => {
      if (i === groups.length - 1 && g.includes('.')) {
        const q = g.split('.');
        if (q.length !== 4 || q.some((x) => !/^(0|[1-9]\d{0,2})$/.test(x) || Number(x) > 255)) bad();
        const n = q.map(Number);
        out.push(n[0]! * 256 + n[1]!, n[2]! * 256 + n[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) bad();
        out.push(parseInt(g, 16));
      }
    });
    return out;
  };
  const head = words(halves[0]!);
  const tail = halves.length === 2 ? words(halves[1]!) : [];
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) bad();
  const all = [...head, ...Array<number>(Math.max(0, fill)).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((w, i) => {
    bytes[2 * i] = w >>> 8;
    bytes[2 * i + 1] = w & 0xff;
  });
  return bytes;
}
