// IPv6 address text → the 16 bytes of the IP header (network order), for the nftables hash of `ip6 saddr` and for
// frames. Strict (what net.isIPv6 accepts, without a zone index): eight groups of 1-4 hex digits, or fewer with one
// `::`; the last 32 bits may be a dotted quad (`::ffff:10.0.0.1`), nowhere else; any case. Hand-written because
// Node has no textual-to-bytes call: URL and net.SocketAddress canonicalise text but never give the bytes.

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
const QUAD_PART = /^(0|[1-9]\d{0,2})$/;

/** Throws RangeError on malformed input, like ipv4Bytes. */
export function ipv6Bytes(addr: string): Uint8Array {
  const bad = (): never => {
    throw new RangeError(`not an IPv6 address: ${JSON.stringify(addr)}`);
  };
  // 45 = six full groups and a dotted quad ("ffff:…:ffff:255.255.255.255"), the longest valid spelling.
  if (typeof addr !== 'string' || addr.length < 2 || addr.length > 45 || !/^[0-9a-fA-F:.]+$/.test(addr)) bad();
  const halves = addr.split('::');
  if (halves.length > 2) bad();
  // `last`: this part ends the address, so its final group may be the dotted quad.
  const words = (part: string, last: boolean): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    const groups = part.split(':');
    groups.forEach((g, i) => {
      if (last && i === groups.length - 1 && g.includes('.')) {
        const q = g.split('.');
        if (q.length !== 4 || q.some((x) => !QUAD_PART.test(x) || Number(x) > 255)) bad();
        const n = q.map(Number);
        out.push(n[0]! * 256 + n[1]!, n[2]! * 256 + n[3]!);
      } else {
        if (!HEX_GROUP.test(g)) bad();
        out.push(parseInt(g, 16));
      }
    });
    return out;
  };
  const head = words(halves[0]!, halves.length === 1);
  const tail = halves.length === 2 ? words(halves[1]!, true) : [];
  // `::` stands for at least one zero group (RFC 4291 §2.2); without it, exactly eight groups.
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
