import { readFile } from 'node:fs/promises';
import { ipv4Bytes } from '../hash/ipv4.js';
import { ipv6Bytes } from '../hash/ipv6.js';

// Gratuitous announcements of a VIP's cluster MAC: an ARP reply for IPv4, an unsolicited neighbour advertisement
// with the override flag for IPv6 (what keepalived sends on a takeover). Clients and routers that already have an
// entry for the VIP switch to the cluster MAC at once instead of when the entry ages out; Linux updates an existing
// entry from either and creates none. The kernel's own ARP and ND output passes the nft rewrites, but a packet
// socket's does not, so the frames are built here with the cluster MAC already in place and sent through an
// AF_PACKET socket (koffi, the optional FFI the libnftables path uses too).

export interface AnnounceInput {
  vip: string;
  clusterMac: string;
  /** The interface's own MAC: a frame's source must be unicast (bridges drop multicast sources). */
  ifaceMac: string;
}

const mac = (m: string): number[] => m.split(':').map((h) => parseInt(h, 16));
const BROADCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const ALL_NODES_MAC = [0x33, 0x33, 0, 0, 0, 1];
const ALL_NODES = ipv6Bytes('ff02::1');

function ethernet(dst: number[], src: string, type: number): number[] {
  return [...dst, ...mac(src), type >>> 8, type & 0xff];
}

/** Broadcast ARP reply: sender = target = the VIP, sender hardware address = the cluster MAC. 60 bytes. */
export function arpAnnouncement(i: AnnounceInput): Uint8Array {
  const vip = [...ipv4Bytes(i.vip)];
  const arp = [0, 1, 0x08, 0, 6, 4, 0, 2, ...mac(i.clusterMac), ...vip, ...BROADCAST, ...vip];
  const frame = new Uint8Array(60);
  frame.set([...ethernet(BROADCAST, i.ifaceMac, 0x0806), ...arp]);
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
  const icmp = [136, 0, 0, 0, 0x20, 0, 0, 0, ...vip, 2, 1, ...mac(i.clusterMac)];
  const pseudo = [...vip, ...ALL_NODES, 0, 0, 0, icmp.length, 0, 0, 0, 58];
  const csum = ~onesSum([...pseudo, ...icmp]) & 0xffff;
  icmp[2] = csum >>> 8;
  icmp[3] = csum & 0xff;
  const ip6 = [0x60, 0, 0, 0, 0, icmp.length, 58, 255, ...vip, ...ALL_NODES];
  return Uint8Array.from([...ethernet(ALL_NODES_MAC, i.ifaceMac, 0x86dd), ...ip6, ...icmp]);
}

interface Libc {
  socket: (domain: number, type: number, protocol: number) => number;
  sendto: (fd: number, buf: Uint8Array, len: number, flags: number, addr: Uint8Array, addrlen: number) => number;
  close: (fd: number) => number;
  errno: () => number;
}

let libc: Promise<Libc> | undefined;

async function loadLibc(): Promise<Libc> {
  const koffi = (await import('koffi')).default;
  const lib = koffi.load('libc.so.6');
  return {
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    sendto: lib.func(
      'long sendto(int fd, const uint8_t *buf, size_t len, int flags, const uint8_t *addr, uint32_t addrlen)',
    ),
    close: lib.func('int close(int fd)'),
    errno: () => koffi.errno(),
  };
}

const AF_PACKET = 17;
const SOCK_RAW = 3;

/** struct sockaddr_ll for sending `frame` out of interface `ifindex` (20 bytes, host order but sll_protocol). */
function sockaddrLl(ifindex: number, frame: Uint8Array): Uint8Array {
  const b = new DataView(new ArrayBuffer(20));
  b.setUint16(0, AF_PACKET, true);
  b.setUint8(2, frame[12]!); // the ethertype, already big-endian in the frame
  b.setUint8(3, frame[13]!);
  b.setInt32(4, ifindex, true);
  b.setUint8(11, 6);
  for (let k = 0; k < 6; k++) b.setUint8(12 + k, frame[k]!);
  return new Uint8Array(b.buffer);
}

/** Sends the frames out of `iface` (needs CAP_NET_RAW); a reason instead of an exception when it cannot. */
export async function sendAnnouncements(
  iface: string,
  frames: readonly Uint8Array[],
): Promise<{ sent: number } | { error: string }> {
  let ifindex: number;
  try {
    ifindex = Number((await readFile(`/sys/class/net/${iface}/ifindex`, 'utf8')).trim());
  } catch {
    return { error: `no interface ${iface}` };
  }
  let c: Libc;
  try {
    c = await (libc ??= loadLibc());
  } catch (err) {
    return { error: `koffi or libc unavailable: ${(err as Error).message}` };
  }
  const fd = c.socket(AF_PACKET, SOCK_RAW, 0);
  if (fd < 0) return { error: `socket(AF_PACKET): errno ${c.errno()}` };
  try {
    let sent = 0;
    for (const f of frames) {
      if (c.sendto(fd, f, f.length, 0, sockaddrLl(ifindex, f), 20) !== f.length)
        return { error: `sendto on ${iface}: errno ${c.errno()}` };
      sent++;
    }
    return { sent };
  } finally {
    c.close(fd);
  }
}
