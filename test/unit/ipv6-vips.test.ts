import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  applyBatch,
  clearBatch,
  ensureBatch,
  heldFromListing,
  ndMangleRules,
  parseTableListing,
  refreshBatch,
  setName,
  vipOfSet,
  vipRules,
} from '../../src/backends/nftRuleset.js';
import {
  missingSubscriptions,
  MulticastSubscriptions,
  parseDevMcast,
  type LinkIo,
  type Subscription,
} from '../../src/backends/multicastMac.js';
import { checkVip, isVipAddress } from '../../src/backends/validate.js';
import { ClusteripBackend } from '../../src/backends/clusterip.js';
import { FileBackend } from '../../src/backends/file.js';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canonicalVip, vipAddressProblem } from '../../src/config/address.js';
import { deriveClusterMac, parseClusterSpecYaml } from '../../src/config/index.js';
import type { VipSpec } from '../../src/config/types.js';
import { BackendError, ConfigError } from '../../src/errors.js';
import { bucketOf, ipv6Bytes, nftablesKey } from '../../src/hash/index.js';
import { whoisOnline } from '../../src/cli/commands/whois.js';
import { unsolicitedNa } from '../../src/backends/announce.js';
import type { ClusterState } from '../../src/etcd/store.js';

// IPv6 VIPs (issue 14): spec, names, nft text, hash keys and whois; and the cluster MAC subscriptions' pure parts.

const v6: VipSpec = {
  address: '2001:db8::100',
  interface: 'eth0',
  buckets: 16,
  hashMode: 'sourceip',
  seed: 0x5eed1234,
  clusterMac: '33:33:00:00:01:00',
  sticky: false,
};
const v4: VipSpec = { ...v6, address: '10.77.0.100', clusterMac: '01:00:5e:4d:00:64' };

/** Random IPv6 text in any legal spelling (upper case, uncompressed, compressed), with its 16 bytes. */
const ipv6Arb = fc
  .tuple(fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }), fc.boolean(), fc.boolean())
  .map(([w, upper, full]) => {
    let text = w.map((x) => x.toString(16)).join(':');
    if (!full) text = new URL(`http://[${text}]/`).hostname.slice(1, -1);
    if (upper) text = text.toUpperCase();
    const bytes = Uint8Array.from(w.flatMap((x) => [x >>> 8, x & 0xff]));
    return { text, bytes };
  });

describe('IPv6 addresses', () => {
  it('ipv6Bytes reads every spelling, and refuses malformed text', () => {
    fc.assert(
      fc.property(ipv6Arb, ({ text, bytes }) => {
        expect(ipv6Bytes(text)).toEqual(bytes);
      }),
    );
    expect([...ipv6Bytes('::ffff:10.0.0.1').slice(10)]).toEqual([0xff, 0xff, 10, 0, 0, 1]);
    for (const bad of ['', ':', '1::2::3', '1:2:3:4:5:6:7:8:9', '12345::', 'g::1', '1:2:3:4:5:6:7::8', 'fe80::1%eth0'])
      expect(() => ipv6Bytes(bad), bad).toThrow(RangeError);
  });

  it('VIP addresses: canonical form, and the ones that cannot be a VIP', () => {
    expect(canonicalVip('2001:DB8:0:0::100')).toBe('2001:db8::100');
    expect(vipAddressProblem('2001:db8::100')).toBeNull();
    expect(vipAddressProblem('fd77::100')).toBeNull();
    for (const bad of ['::', '::1', 'ff02::1', 'fe80::1', '::ffff:10.0.0.1', '10.0.0.256', '224.0.0.1'])
      expect(vipAddressProblem(bad), bad).not.toBeNull();
    fc.assert(
      fc.property(ipv6Arb, ({ text }) => {
        const c = canonicalVip(text);
        expect(canonicalVip(c)).toBe(c);
        expect(ipv6Bytes(c)).toEqual(ipv6Bytes(text));
      }),
    );
    expect(isVipAddress('2001:db8::100')).toBe(true);
    expect(isVipAddress('2001:DB8::100'), 'backends take the canonical form only').toBe(false);
    expect(() => checkVip({ ...v6, address: '2001:db8::100"; drop' }, 4096)).toThrow(BackendError);
  });

  it('the spec takes IPv6 VIPs in any spelling, stores them canonical, derives the 33:33 MAC', () => {
    const spec = parseClusterSpecYaml(
      'vips:\n  - {address: "2001:DB8:0::1:100", interface: eth0, buckets: 8, seed: 1}\n  - {address: 10.0.0.1, interface: eth0, buckets: 8, seed: 1}\n',
      'spec.yaml',
    );
    expect(spec.vips[0]!.address).toBe('2001:db8::1:100');
    expect(spec.vips[0]!.clusterMac).toBe('33:33:00:01:01:00');
    expect(deriveClusterMac('fd77::100')).toBe('33:33:00:00:01:00');
    const dup = () =>
      parseClusterSpecYaml(
        'vips:\n  - {address: "2001:db8::100", interface: eth0, buckets: 8, seed: 1}\n  - {address: "2001:DB8:0::100", interface: eth0, buckets: 8, seed: 1}\n',
        'spec.yaml',
      );
    expect(dup).toThrow(/spec.yaml:3: vips\[1\].address: 2001:DB8:0::100 is already used by vips\[0\]/);
    const allNodes = () =>
      parseClusterSpecYaml('vips:\n  - {address: "2001:db8::1", interface: eth0, buckets: 8, seed: 1}\n', 'spec.yaml');
    expect(allNodes).toThrow(/vips\[0\].address: the cluster MAC would be 33:33:00:00:00:01, the all-nodes MAC/);
    const ll = () =>
      parseClusterSpecYaml('vips:\n  - {address: "fe80::1", interface: eth0, buckets: 8, seed: 1}\n', 'spec.yaml');
    expect(ll).toThrow(/link-local/);
    const onClusterip = () =>
      parseClusterSpecYaml('vips:\n  - {address: "2001:db8::100", interface: eth0, buckets: 8, seed: 1}\n', 's.yaml', {
        backend: 'clusterip',
      });
    expect(onClusterip).toThrow(ConfigError);
    expect(onClusterip).toThrow(
      /s.yaml:2: vips\[0\].address: 2001:db8::100 is an IPv6 VIP: the clusterip backend is IPv4 only/,
    );
  });
});

describe('nft text for IPv6 VIPs', () => {
  it('names owned sets per family and back, for every address', () => {
    expect(setName('2001:db8::100')).toBe('owned6_2001_db8__100');
    fc.assert(
      fc.property(ipv6Arb, ({ text }) => {
        const c = canonicalVip(text);
        expect(vipOfSet(setName(c))).toBe(c);
      }),
    );
    expect(vipOfSet('owned6_zz')).toBeNull();
  });

  it('hashes ip6 saddr in the ip6 table; refreshes, applies and clears there', () => {
    expect(vipRules(v6).rules).toEqual([
      'ip6 daddr 2001:db8::100 iifname "eth0" meta pkttype multicast meta pkttype set host',
      // Neighbour discovery and Packet Too Big reach every node, whatever the hash says (see ND_ACCEPT).
      'ip6 daddr 2001:db8::100 iifname "eth0" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, packet-too-big } accept',
      'ip6 daddr 2001:db8::100 iifname "eth0" jhash ip6 saddr mod 16 seed 0x5eed1234 offset 1 != @owned6_2001_db8__100 drop',
    ]);
    expect(vipRules({ ...v6, sticky: true }).rules[1]).toContain('packet-too-big } accept');
    expect(vipRules(v4).rules[0], 'IPv4 keeps the rules it had').toBe(
      'ip daddr 10.77.0.100 iifname "eth0" jhash ip saddr mod 16 seed 0x5eed1234 offset 1 != @owned_10_77_0_100 drop',
    );
    const ports = vipRules({ ...v6, hashMode: 'sourceip-sourceport' }).rules[2]!;
    expect(ports).toContain('jhash ip6 saddr . th sport mod 16');
    const batch = ensureBatch({ table: 't', vips: [v4, v6], existingSets: [], arpMangle: false });
    expect(batch).toContain('add table ip t\n');
    expect(batch).toContain('add table ip6 t\n');
    expect(batch).toContain('add set ip6 t owned6_2001_db8__100 { typeof numgen inc mod 16; flags timeout; }');
    expect(batch).toContain('add rule ip6 t pre ip6 daddr 2001:db8::100');
    expect(ensureBatch({ table: 't', vips: [v4], existingSets: [], arpMangle: false })).not.toContain('ip6');
    // A v6 VIP that left the spec stays dark in its own table.
    const dark = ensureBatch({ table: 't', vips: [v4], existingSets: ['owned6_2001_db8__100'], arpMangle: false });
    expect(dark).toContain('flush set ip6 t owned6_2001_db8__100');
    expect(dark).toContain('add rule ip6 t pre ip6 daddr 2001:db8::100 drop');
    expect(applyBatch('t', [{ vip: v6.address, add: [3], remove: [] }], 1000)).toBe(
      'add element ip6 t owned6_2001_db8__100 { 3 timeout 1000ms expires 1000ms }\n',
    );
    expect(refreshBatch('t', new Map([[v6.address, new Set([2])]]), 500)).toContain('ip6 t owned6_2001_db8__100');
    expect(clearBatch('t', ['owned_10_77_0_100', 'owned6_2001_db8__100'])).toBe(
      'flush set ip t owned_10_77_0_100\nflush set ip6 t owned6_2001_db8__100\n',
    );
    const listing = parseTableListing(
      JSON.stringify({ nftables: [{ set: { name: 'owned6_2001_db8__100', elem: [1, 2] } }] }),
    );
    expect(heldFromListing(listing)).toEqual(new Map([['2001:db8::100', new Set([1, 2])]]));
  });

  it('the neighbour discovery rewrites keep the ICMPv6 checksum: its compensation balances the MAC change', () => {
    const mac = fc
      .array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 })
      .map((b) => b.map((x) => x.toString(16).padStart(2, '0')).join(':'));
    fc.assert(
      fc.property(mac, mac, (from, to) => {
        const [rule, ns] = ndMangleRules(v6.address, [...ipv6Bytes(v6.address)], from, to);
        const comp = Number(/@th,48,16 set (\d+)/.exec(rule!)![1]);
        expect(ns).toContain(
          `ip6 saddr 2001:db8::100 icmpv6 type nd-neighbor-solicit @th,192,64 0x0101${from.replaceAll(':', '')}`,
        );
        expect(ns).toContain(`@th,48,16 set ${comp} `);
        expect(comp).toBeGreaterThanOrEqual(0);
        expect(comp).toBeLessThan(0x10000);
        // Ones-complement sums of the rewritten words (reserved low word 0 → comp, MAC from → to) agree.
        const words = (m: string) => {
          const b = m.split(':').map((h) => parseInt(h, 16));
          return b[0]! * 256 + b[1]! + b[2]! * 256 + b[3]! + b[4]! * 256 + b[5]!;
        };
        expect(Math.abs((words(from) - words(to) - comp) % 0xffff)).toBe(0);
        expect(rule).toContain(`@th,192,64 0x0201${from.replaceAll(':', '')}`);
        expect(rule).toContain(`@th,208,48 set 0x${to.replaceAll(':', '')}`);
      }),
    );
    // End to end: a real advertisement carrying the node's MAC, rewritten as the rule does, still verifies.
    fc.assert(
      fc.property(mac, mac, (from, to) => {
        const frame = unsolicitedNa({ vip: v6.address, clusterMac: from, ifaceMac: '02:00:00:00:00:01' });
        const icmp = frame.subarray(54);
        const [rule] = ndMangleRules(v6.address, [...ipv6Bytes(v6.address)], from, to);
        const comp = Number(/@th,48,16 set (\d+)/.exec(rule!)![1]);
        icmp.set(
          to.split(':').map((h) => parseInt(h, 16)),
          26,
        );
        icmp[6] = comp >>> 8;
        icmp[7] = comp & 0xff;
        const bytes = [...frame.subarray(22, 54), 0, 0, 0, icmp.length, 0, 0, 0, 58, ...icmp];
        let sum = 0;
        for (let k = 0; k < bytes.length; k += 2) sum += (bytes[k]! << 8) | bytes[k + 1]!;
        while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
        expect(sum).toBe(0xffff);
      }),
    );
    const batch = ensureBatch({
      table: 't',
      vips: [v6],
      existingSets: [],
      arpMangle: true,
      nd: new Map([[v6.address, { target: [...ipv6Bytes(v6.address)], ifaceMac: '02:11:22:33:44:55' }]]),
    });
    // Measured by hand on nft 1.0.6 / Linux 6.18: this rule made a client learn the MAC with no checksum error.
    expect(batch).toContain(
      'add rule ip6 t out icmpv6 type nd-neighbor-advert @th,64,128 0x20010db8000000000000000000000100 @th,192,64 0x0201021122334455 @th,48,16 0 @th,208,48 set 0x333300000100 @th,48,16 set 13414',
    );
  });
});

describe('backends and IPv6 VIPs', () => {
  const spec = { vips: [v4, v6], rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 } };

  it('clusterip refuses an IPv6 VIP with a clear error, before touching the kernel', async () => {
    const err = await new ClusteripBackend({ procDir: '/nonexistent' }).ensure(spec).then(
      () => null,
      (e: unknown) => e as BackendError,
    );
    expect(err).toBeInstanceOf(BackendError);
    expect(err!.kind).toBe('unsupported');
    expect(err!.message).toMatch(/VIP 2001:db8::100 is IPv6: the clusterip backend is IPv4 only/);
  });

  it('the file backend holds an IPv6 VIP in a file named after it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cipha-v6-'));
    try {
      const b = new FileBackend({ dir });
      await b.ensure(spec);
      await b.apply([{ vip: v6.address, add: [1, 5], remove: [] }]);
      expect((await b.read()).get(v6.address)).toEqual(new Set([1, 5]));
      expect(await readdir(dir)).toContain('2001:db8::100');
      await b.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('hash and whois for IPv6 clients', () => {
  it('nftables keys are the 16 address bytes, padded ports after them', () => {
    expect(nftablesKey('sourceip', { saddr: '2001:db8::1' })).toEqual(ipv6Bytes('2001:db8::1'));
    const k = nftablesKey('sourceip-sourceport-destport', { saddr: '2001:db8::1', sport: 0x1234, dport: 80 });
    expect(k.length).toBe(24);
    expect([...k.slice(16)]).toEqual([0x12, 0x34, 0, 0, 0, 80, 0, 0]);
    expect(() => bucketOf(v6, 'clusterip', { saddr: '2001:db8::1' })).toThrow(/IPv4 clients only/);
  });

  it('whois answers an IPv6 client for the IPv6 VIPs only', () => {
    const state = {
      spec: { spec: { vips: [v4, v6], rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 } } },
      statuses: new Map(),
      nodes: new Map(),
      claims: new Map(),
      assignments: new Map(),
    } as unknown as ClusterState;
    const a = whoisOnline(state, '2001:db8:1::10', { saddr: '2001:db8:1::10' });
    expect(a.map((x) => x.vip)).toEqual(['2001:db8::100']);
    expect(a[0]!.bucket).toBe(bucketOf(v6, 'nftables', { saddr: '2001:db8:1::10' }));
    expect(() => whoisOnline(state, '2001:db8:1::10', { saddr: '2001:db8:1::10' }, '10.77.0.100')).toThrow(/ipv4/);
  });
});

describe('cluster MAC subscriptions', () => {
  const devMcast = `2    eth0            1     0     333300000001
2    eth0            1     1     01005e4d0064
3    m0              1     0     01005e000001
`;

  it('reads /proc/net/dev_mcast; counts only what user space added', () => {
    expect(parseDevMcast(devMcast)).toEqual([
      { iface: 'eth0', mac: '33:33:00:00:00:01', global: false },
      { iface: 'eth0', mac: '01:00:5e:4d:00:64', global: true },
      { iface: 'm0', mac: '01:00:5e:00:00:01', global: false },
    ]);
    const want: Subscription[] = [
      { iface: 'eth0', mac: '01:00:5e:4d:00:64' },
      { iface: 'eth0', mac: '33:33:00:00:00:01' },
      { iface: 'eth0', mac: '33:33:00:00:00:01' },
    ];
    // The all-nodes MAC a protocol joined can go away with it: it is subscribed once, and only once.
    expect(missingSubscriptions(want, parseDevMcast(devMcast))).toEqual([{ iface: 'eth0', mac: '33:33:00:00:00:01' }]);
  });

  function fakeLinks(opts: { links: Record<string, string>; refuse?: string }) {
    const list = new Set<string>();
    const calls: string[] = [];
    const io: LinkIo = {
      readMulticast: async () =>
        [...list].map((k) => `1 ${k.split(' ')[0]} 1 1 ${k.split(' ')[1]!.replaceAll(':', '')}`).join('\n'),
      linkAddress: async (i) => opts.links[i] ?? null,
      maddr: async (op, s) => {
        calls.push(`${op} ${s.iface} ${s.mac}`);
        if (s.iface === opts.refuse)
          return { exitCode: 2, stdout: '', stderr: 'ioctl: Invalid argument', timedOut: false, durationMs: 1 };
        if (op === 'add') list.add(`${s.iface} ${s.mac}`);
        else list.delete(`${s.iface} ${s.mac}`);
        return { exitCode: 0, stdout: '', stderr: '', timedOut: false, durationMs: 1 };
      },
    };
    return { io, calls, list, links: opts.links };
  }

  it('subscribes at ensure, re-subscribes what vanished, adds before it drops, releases only its own', async () => {
    const f = fakeLinks({ links: { eth0: '02:00:00:00:00:01', lo: '00:00:00:00:00:00' }, refuse: 'lo' });
    f.list.add('eth0 33:33:00:00:02:00'); // an operator's entry from before
    const m = new MulticastSubscriptions(f.io);
    await m.ensure([{ iface: 'eth0', mac: '01:00:5e:4d:00:64' }]);
    expect(m.describe()).toEqual(['eth0 01:00:5e:4d:00:64 subscribed']);
    await m.check();
    expect(f.calls).toEqual(['add eth0 01:00:5e:4d:00:64']);
    f.list.delete('eth0 01:00:5e:4d:00:64'); // an operator's ip maddr del, or a re-created interface
    await m.check();
    expect(f.calls.at(-1)).toBe('add eth0 01:00:5e:4d:00:64');
    // A new MAC: the new one is on the list before the old one goes.
    await m.ensure([
      { iface: 'eth0', mac: '33:33:00:00:01:00' },
      { iface: 'lo', mac: '33:33:00:00:01:00' },
      { iface: 'eth0', mac: '33:33:00:00:02:00' },
    ]);
    expect(f.calls.slice(-3)).toEqual([
      'add eth0 33:33:00:00:01:00',
      'add lo 33:33:00:00:01:00',
      'del eth0 01:00:5e:4d:00:64',
    ]);
    expect(m.describe()).toEqual([
      'eth0 33:33:00:00:01:00 subscribed',
      'lo 33:33:00:00:01:00 notNeeded (the interface has no multicast filter)',
      'eth0 33:33:00:00:02:00 subscribed',
    ]);
    const before = f.calls.length;
    await m.check();
    expect(f.calls.length, 'nothing to do at a check in steady state (lo is not asked again)').toBe(before);
    await m.release();
    expect([...f.list], "the operator's entry stays").toEqual(['eth0 33:33:00:00:02:00']);
    // A missing interface fails that subscription only, visibly, and is taken once the interface appears.
    await m.ensure([{ iface: 'eth9', mac: '01:00:5e:4d:00:64' }]);
    expect(m.failing).toBe(true);
    expect(m.describe()).toEqual(['eth9 01:00:5e:4d:00:64 failed (interface eth9 does not exist)']);
    f.links.eth9 = '02:00:00:00:00:09';
    await m.check();
    expect(m.describe()).toEqual(['eth9 01:00:5e:4d:00:64 subscribed']);
  });
});
