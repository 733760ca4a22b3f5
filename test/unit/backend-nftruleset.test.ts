import { describe, expect, it } from 'vitest';
import {
  applyBatch,
  checkNftVersion,
  clearBatch,
  ensureBatch,
  heldFromListing,
  parseTableListing,
  refreshBatch,
  renewalFromProbeListing,
  setName,
  vipOfSet,
  vipRules,
} from '../../src/backends/nftRuleset.js';
import type { VipSpec } from '../../src/config/types.js';

const vip: VipSpec = {
  address: '10.77.0.100',
  interface: 'eth0',
  buckets: 16,
  hashMode: 'sourceip',
  seed: 0x5eed1234,
  clusterMac: '01:00:5e:4d:00:64',
  sticky: false,
};

describe('nft batches (pure text)', () => {
  it('names sets after the VIP and back', () => {
    expect(setName('10.77.0.100')).toBe('owned_10_77_0_100');
    expect(vipOfSet('owned_10_77_0_100')).toBe('10.77.0.100');
    expect(vipOfSet('other')).toBeNull();
  });

  it('drops non-owned buckets with an explicit seed and offset 1, then sets pkttype host', () => {
    const { chain, rules } = vipRules(vip);
    expect(chain).toBe('pre');
    expect(rules[0]).toBe(
      'ip daddr 10.77.0.100 iifname "eth0" jhash ip saddr mod 16 seed 0x5eed1234 offset 1 != @owned_10_77_0_100 drop',
    );
    expect(rules[1]).toContain('meta pkttype set host');
  });

  it('hashes ports in the port modes', () => {
    expect(vipRules({ ...vip, hashMode: 'sourceip-sourceport' }).rules[0]).toContain(
      'jhash ip saddr . th sport mod 16',
    );
    expect(vipRules({ ...vip, hashMode: 'sourceip-sourceport-destport' }).rules[0]).toContain(
      'jhash ip saddr . th sport . th dport mod 16',
    );
  });

  it('sticky VIPs accept established TCP before the hash check, in the post-conntrack chain', () => {
    const { chain, rules } = vipRules({ ...vip, sticky: true });
    expect(chain).toBe('pre_sticky');
    const est = rules.findIndex((r) => r.includes('ct state established'));
    const drop = rules.findIndex((r) => r.includes('jhash'));
    expect(est).toBeGreaterThanOrEqual(0);
    expect(est).toBeLessThan(drop);
  });

  it('ensure keeps VIPs no longer in the spec dark (set emptied, drop rule), leaves other sets, flushes chains', () => {
    const b = ensureBatch({
      table: 't',
      vips: [vip],
      existingSets: ['owned_10_77_0_100', 'owned_10_77_0_9', 'mine'],
      arpMangle: false,
    });
    // DESIGN §12: the address may still be configured; without a drop rule every node would accept it.
    expect(b).not.toContain('delete set');
    expect(b).toContain('flush set ip t owned_10_77_0_9\nadd rule ip t pre ip daddr 10.77.0.9 drop\n');
    expect(b).not.toContain('flush set ip t owned_10_77_0_100');
    expect(b).not.toContain('ip daddr 10.77.0.100 drop');
    expect(b).not.toContain('flush set ip t mine');
    // The dark rule comes after the chain flush that would otherwise remove it.
    expect(b.indexOf('flush chain ip t pre\n')).toBeLessThan(b.indexOf('ip daddr 10.77.0.9 drop'));
    expect(b).toContain('flush chain ip t pre\n');
    expect(b).toContain('delete table arp t');
    expect(ensureBatch({ table: 't', vips: [vip], existingSets: [], arpMangle: true })).toContain(
      'arp saddr ip 10.77.0.100 arp saddr ether set 01:00:5e:4d:00:64',
    );
  });

  it('one batch for any number of changes; removes are add-then-delete', () => {
    const b = applyBatch(
      't',
      [
        { vip: '10.77.0.100', add: [1, 2], remove: [3] },
        { vip: '10.77.0.101', add: [], remove: [4, 5] },
      ],
      1500,
    );
    expect(b.split('\n').filter(Boolean)).toEqual([
      'add element ip t owned_10_77_0_100 { 3 }',
      'delete element ip t owned_10_77_0_100 { 3 }',
      'add element ip t owned_10_77_0_100 { 1 timeout 1500ms expires 1500ms, 2 timeout 1500ms expires 1500ms }',
      'add element ip t owned_10_77_0_101 { 4, 5 }',
      'delete element ip t owned_10_77_0_101 { 4, 5 }',
    ]);
    expect(applyBatch('t', [])).toBe('');
    expect(applyBatch('t', [{ vip: '10.77.0.100', add: [1], remove: [] }])).toContain(
      'delete element ip t owned_10_77_0_100 { 1 }',
    );
  });

  it('refresh re-adds every held element with timeout and expires; clear flushes owned sets', () => {
    expect(
      refreshBatch(
        't',
        new Map([
          ['10.77.0.100', new Set([2, 1])],
          ['10.77.0.101', new Set()],
        ]),
        900,
      ),
    ).toBe('add element ip t owned_10_77_0_100 { 1 timeout 900ms expires 900ms, 2 timeout 900ms expires 900ms }\n');
    expect(clearBatch('t', ['owned_10_77_0_100', 'mine'])).toBe('flush set ip t owned_10_77_0_100\n');
  });

  it('renews timeouts by delete+add in one batch where the kernel cannot update them', () => {
    const held = new Map([['10.77.0.100', new Set([2, 1])]]);
    expect(refreshBatch('t', held, 900, 'replace').split('\n').filter(Boolean)).toEqual([
      'delete element ip t owned_10_77_0_100 { 1, 2 }',
      'add element ip t owned_10_77_0_100 { 1 timeout 900ms expires 900ms, 2 timeout 900ms expires 900ms }',
    ]);
    expect(
      applyBatch('t', [{ vip: '10.77.0.100', add: [3], remove: [] }], 900, 'replace')
        .split('\n')
        .filter(Boolean),
    ).toEqual([
      'add element ip t owned_10_77_0_100 { 3 }',
      'delete element ip t owned_10_77_0_100 { 3 }',
      'add element ip t owned_10_77_0_100 { 3 timeout 900ms expires 900ms }',
    ]);
    const listing = (expires: number) =>
      JSON.stringify({ nftables: [{ set: { name: 's', elem: [{ elem: { val: 1, timeout: 3600, expires } }] } }] });
    expect(renewalFromProbeListing(listing(3599))).toBe('update');
    expect(renewalFromProbeListing(listing(0))).toBe('replace');
  });

  it('parses nft -j listings with bare and timed elements', () => {
    const json = JSON.stringify({
      nftables: [
        { metainfo: { version: '1.0.6' } },
        { table: { family: 'ip', name: 't' } },
        { set: { name: 'owned_10_77_0_100', elem: [{ elem: { val: 5, timeout: 2, expires: 1 } }, 6] } },
        { set: { name: 'owned_10_77_0_101' } },
        { set: { name: 'mine', elem: [1] } },
      ],
    });
    const held = heldFromListing(parseTableListing(json));
    expect(held).toEqual(
      new Map([
        ['10.77.0.100', new Set([5, 6])],
        ['10.77.0.101', new Set()],
      ]),
    );
    expect(() => parseTableListing('{"nftables": [{"set": {"name": "x", "elem": ["a"]}}]}')).toThrow();
  });

  it('checks the nft version', () => {
    expect(checkNftVersion('nftables v1.0.6 (Lester Gooch #5)')).toEqual({ ok: true, version: '1.0.6' });
    expect(checkNftVersion('nftables v0.9.3 (Topsy)').ok).toBe(false);
    expect(checkNftVersion('garbage').ok).toBe(false);
  });
});
