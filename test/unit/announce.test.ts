import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { arpAnnouncement, unsolicitedNa } from '../../src/backends/announce.js';

// The gratuitous announcements' bytes (issue 14); test/kernel/dataplane-macvlan.test.ts shows a Linux client
// taking them (a stale entry switches to the cluster MAC before any traffic).

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** The ICMPv6 checksum verifies: the ones-complement sum of pseudo-header and message, checksum included. */
function icmp6Verifies(frame: Uint8Array): boolean {
  const ip = frame.subarray(14, 54);
  const icmp = frame.subarray(54);
  const bytes = [...ip.subarray(8, 40), 0, 0, 0, icmp.length, 0, 0, 0, 58, ...icmp];
  let sum = 0;
  for (let k = 0; k < bytes.length; k += 2) sum += (bytes[k]! << 8) | (bytes[k + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

describe('gratuitous announcements', () => {
  it('ARP: a broadcast reply from the VIP to the VIP with the cluster MAC as sender, padded to 60 bytes', () => {
    const f = arpAnnouncement({ vip: '10.77.0.100', clusterMac: '01:00:5e:4d:00:64', ifaceMac: '02:11:22:33:44:55' });
    expect(f.length).toBe(60);
    expect(hex(f.subarray(0, 42))).toBe(
      'ffffffffffff' +
        '021122334455' +
        '0806' +
        '0001' +
        '0800' +
        '06' +
        '04' +
        '0002' +
        '01005e4d0064' +
        '0a4d0064' +
        'ffffffffffff' +
        '0a4d0064',
    );
    expect(f.subarray(42).every((b) => b === 0)).toBe(true);
  });

  it('NA: to all nodes, hop limit 255, override only, target the VIP, the cluster MAC as its link-layer address', () => {
    const f = unsolicitedNa({ vip: 'fd77::100', clusterMac: '33:33:00:00:01:00', ifaceMac: '02:11:22:33:44:55' });
    expect(f.length).toBe(14 + 40 + 32);
    expect(hex(f.subarray(0, 14))).toBe('333300000001' + '021122334455' + '86dd');
    expect(hex(f.subarray(14, 54))).toBe(
      '60000000' + '0020' + '3a' + 'ff' + 'fd770000000000000000000000000100' + 'ff020000000000000000000000000001',
    );
    expect(hex(f.subarray(54, 56))).toBe('8800'); // type 136, code 0
    expect(hex(f.subarray(58))).toBe('20000000' + 'fd770000000000000000000000000100' + '0201' + '333300000100');
    expect(icmp6Verifies(f)).toBe(true);
  });

  it('the NA checksum verifies for every VIP and MAC', () => {
    const mac = fc
      .array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 })
      .map((b) => b.map((x) => x.toString(16).padStart(2, '0')).join(':'));
    const v6 = fc
      .array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 })
      .map((w) => w.map((x) => x.toString(16)).join(':'));
    fc.assert(
      fc.property(v6, mac, mac, (vip, clusterMac, ifaceMac) => {
        const f = unsolicitedNa({ vip, clusterMac, ifaceMac });
        expect(icmp6Verifies(f)).toBe(true);
        // A flipped bit anywhere in the message breaks it (the check is not vacuous).
        f[70] = f[70]! ^ 1;
        expect(icmp6Verifies(f)).toBe(false);
      }),
    );
  });
});
