import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { normalizeMac } from '../config/mac.js';
import { ipv4Bytes } from '../hash/ipv4.js';
import { ipv6Bytes } from '../hash/ipv6.js';

// Gratuitous announcements of a VIP's cluster MAC: an ARP reply for IPv4, an unsolicited neighbour advertisement
// with the override flag for IPv6 (what keepalived sends on a takeover). Clients and routers that already have an
// entry for the VIP switch to the cluster MAC at once instead of when the entry ages out; Linux updates an existing
// entry from either and creates none (test/kernel/announce.test.ts). The kernel's own ARP and ND output passes the
// nft rewrites, but a packet socket's does not, so the frames are built here with the cluster MAC already in place
// and sent through an AF_PACKET socket (koffi, the optional FFI the libnftables path uses too).

export interface AnnounceInput {
  vip: string;
  clusterMac: string;
  /** The interface's own MAC: a frame's source must be unicast (bridges drop multicast sources). */
  ifaceMac: string;
}

/** Six octets from "aa:bb:cc:dd:ee:ff" (or "-" separated, any case). Throws RangeError otherwise. */
function macBytes(m: string): number[] {
  const n = normalizeMac(m);
  if (n === undefined) throw new RangeError(`not a MAC address: ${JSON.stringify(m)}`);
  return n.split(':').map((h) => parseInt(h, 16));
}

const BROADCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const ALL_NODES_MAC = [0x33, 0x33, 0, 0, 0, 1];
const ALL_NODES = ipv6Bytes('ff02::1');
const ETH_P_ARP = 0x0806;
const ETH_P_IPV6 = 0x86dd;
const IPPROTO_ICMPV6 = 58;
const ND_NEIGHBOR_ADVERT = 136;
/** RFC 4861 §4.4: Router 0x80, Solicited 0x40, Override 0x20 (top byte of the flags word). */
const NA_OVERRIDE = 0x20;
const OPT_TARGET_LLADDR = 2;

function ethernet(dst: readonly number[], src: string, type: number): number[] {
  return [...dst, ...macBytes(src), type >>> 8, type & 0xff];
}

/**
 * Broadcast gratuitous ARP reply (`arping -A`): sender = target = the VIP, sender = target hardware address = the
 * cluster MAC. 60 bytes.
 */
export function arpAnnouncement(i: AnnounceInput): Uint8Array {
  const vip = [...ipv4Bytes(i.vip)];
  const cluster = macBytes(i.clusterMac);
  // A reply, not a request: the other nodes hold the VIP and would answer a request for it. Target hardware address
  // = sender's, not broadcast: only then does Linux take a reply as gratuitous (arp_is_garp) and override an entry
  // updated within the last `locktime` (1 s), e.g. one a node's kernel answered just before the rewrite rule went in.
  const arp = [0, 1, 0x08, 0, 6, 4, 0, 2, ...cluster, ...vip, ...cluster, ...vip];
  // Ethernet's minimum frame without the FCS; the NIC would pad too, but a veth or tap passes short frames on.
  const frame = new Uint8Array(60);
  frame.set([...ethernet(BROADCAST, i.ifaceMac, ETH_P_ARP), ...arp]);
  return frame;
}

/** Ones-complement sum of 16-bit words, folded (RFC 1071). */
function onesSum(bytes: readonly number[]): number {
  let sum = 0;
  for (let k = 0; k < bytes.length; k += 2) sum += (bytes[k]! << 8) | (bytes[k + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** Unsolicited neighbour advertisement to all nodes (ff02::1): override set, target = VIP, TLLA = cluster MAC. */
export function unsolicitedNa(i: AnnounceInput): Uint8Array {
  const vip = [...ipv6Bytes(i.vip)];
  // Not Solicited (nobody asked), not Router; Override so that receivers replace the lladdr they hold.
  const icmp = [ND_NEIGHBOR_ADVERT, 0, 0, 0, NA_OVERRIDE, 0, 0, 0, ...vip];
  icmp.push(OPT_TARGET_LLADDR, 1, ...macBytes(i.clusterMac)); // option length in units of 8 bytes
  // RFC 8200 §8.1 pseudo-header: source, destination, upper-layer length (32 bits), 3 zero bytes, next header.
  const len = icmp.length;
  const pseudo = [...vip, ...ALL_NODES, 0, 0, len >>> 8, len & 0xff, 0, 0, 0, IPPROTO_ICMPV6];
  const csum = ~onesSum([...pseudo, ...icmp]) & 0xffff;
  icmp[2] = csum >>> 8;
  icmp[3] = csum & 0xff;
  // Hop limit 255: receivers drop neighbour discovery that crossed a router (RFC 4861 §7.1.2).
  const ip6 = [0x60, 0, 0, 0, len >>> 8, len & 0xff, IPPROTO_ICMPV6, 255, ...vip, ...ALL_NODES];
  return Uint8Array.from([...ethernet(ALL_NODES_MAC, i.ifaceMac, ETH_P_IPV6), ...ip6, ...icmp]);
}

/** Why the frames were not (all) sent: a closed reason for logs and metrics, and a sentence. */
export interface AnnounceFailure {
  reason: 'badInterface' | 'noInterface' | 'badFrame' | 'noFfi' | 'socket' | 'sendto';
  error: string;
}

export type AnnounceResult = { sent: number } | AnnounceFailure;

interface Libc {
  socket: (domain: number, type: number, protocol: number) => number;
  sendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number;
  close: (fd: number) => number;
  errno: () => number;
  strerror: (errnum: number) => string;
}

// Loaded once per process: koffi is an optional dependency, and a failure to load it stays the answer.
let libc: Promise<Libc> | undefined;

async function loadLibc(): Promise<Libc> {
  const koffi = (await import('koffi')).default;
  const lib = koffi.load('libc.so.6');
  return {
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    // `long` for ssize_t (LP64): koffi returns a Number for it.
    sendto: lib.func(
      'long sendto(int fd, const uint8_t *buf, size_t len, int flags, const uint8_t *addr, uint32_t addrlen)',
    ),
    close: lib.func('int close(int fd)'),
    errno: () => koffi.errno(),
    strerror: lib.func('const char *strerror(int errnum)'),
  };
}

const AF_PACKET = 17;
const SOCK_RAW = 3;
const SOCKADDR_LL_SIZE = 20;
/** Never wait for room in the socket's send buffer: a full queue is an error here, not a stalled event loop. */
const MSG_DONTWAIT = 0x40;
const ETH_HLEN = 14;
/** A standard Ethernet frame without the FCS; both announcements are far below it. */
const ETH_FRAME_MAX = 1514;
/** What the kernel accepts as an interface name (IFNAMSIZ 16 with the NUL; no "/", ":" or whitespace). */
const IFNAME = /^[^/:\s]{1,15}$/;
const LE = endianness() === 'LE';

/** struct sockaddr_ll sending `frame` out of `ifindex`: native byte order except sll_protocol (network order). */
function sockaddrLl(ifindex: number, frame: Uint8Array): Buffer {
  const b = Buffer.alloc(SOCKADDR_LL_SIZE);
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  v.setUint16(0, AF_PACKET, LE); // sll_family
  b[2] = frame[12]!; // sll_protocol: the ethertype, already big-endian in the frame
  b[3] = frame[13]!;
  v.setInt32(4, ifindex, LE); // sll_ifindex; sll_hatype (8) and sll_pkttype (10) are ignored on send
  b[11] = 6; // sll_halen
  b.set(frame.subarray(0, 6), 12); // sll_addr: the destination MAC
  return b;
}

/**
 * Sends the frames out of `iface`, in order, each once (needs CAP_NET_RAW in the interface's namespace). A reason
 * instead of an exception when it cannot. The socket is opened with protocol 0 so that it receives nothing: there
 * is no queue to drain and no frame copied to it while it lives. Synchronous sends: each is a copy into the
 * interface's queue, well under a millisecond for the few frames an announcement has.
 */
export async function sendAnnouncements(iface: string, frames: readonly Uint8Array[]): Promise<AnnounceResult> {
  if (!IFNAME.test(iface) || iface === '.' || iface === '..')
    return { reason: 'badInterface', error: `not an interface name: ${JSON.stringify(iface)}` };
  const bad = frames.findIndex((f) => f.length < ETH_HLEN || f.length > ETH_FRAME_MAX);
  if (bad >= 0) return { reason: 'badFrame', error: `frame ${bad} has ${frames[bad]!.length} bytes` };
  let ifindex: number;
  try {
    ifindex = Number((await readFile(`/sys/class/net/${iface}/ifindex`, 'utf8')).trim());
  } catch {
    return { reason: 'noInterface', error: `no interface ${iface}` };
  }
  if (!Number.isInteger(ifindex) || ifindex <= 0) return { reason: 'noInterface', error: `no ifindex for ${iface}` };
  let c: Libc;
  try {
    c = await (libc ??= loadLibc());
  } catch (err) {
    return { reason: 'noFfi', error: `koffi or libc unavailable: ${(err as Error).message}` };
  }
  const why = (): string => {
    const e = c.errno();
    return `${c.strerror(e)} (errno ${e})`;
  };
  const fd = c.socket(AF_PACKET, SOCK_RAW, 0);
  if (fd < 0) return { reason: 'socket', error: `socket(AF_PACKET): ${why()}` };
  try {
    let sent = 0;
    for (const f of frames) {
      const buf = Buffer.from(f.buffer, f.byteOffset, f.length);
      const n = c.sendto(fd, buf, buf.length, MSG_DONTWAIT, sockaddrLl(ifindex, f), SOCKADDR_LL_SIZE);
      if (n !== f.length) {
        const error = n < 0 ? why() : `${n} of ${f.length} bytes`;
        return { reason: 'sendto', error: `sendto on ${iface} (frame ${sent}): ${error}` };
      }
      sent++;
    }
    return { sent };
  } finally {
    c.close(fd);
  }
}
