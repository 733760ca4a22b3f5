import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ConfigError, type InputIssue } from '../../src/errors.js';
import {
  deriveClusterMac,
  isMulticastMac,
  loadClusterSpecFile,
  parseClusterSpecYaml,
  validateClusterSpec,
  type ClusterSpec,
  type VipSpec,
} from '../../src/config/index.js';

function issuesOf(fn: () => unknown): InputIssue[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues;
  }
  throw new Error('expected a ConfigError');
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

const GOOD = `vips:
  - address: 10.77.0.100
    interface: eth0
    buckets: 16
    hashMode: sourceip        # comment
    seed: 0x5eed1234
    clusterMac: 01:00:5e:4d:00:64   # optional
rebalance:
  joinMovesPerInterval: 1
  intervalMs: 1000
`;

describe('cluster spec YAML', () => {
  it('parses the example from the issue', () => {
    expect(parseClusterSpecYaml(GOOD, 'spec.yaml')).toEqual({
      vips: [
        {
          address: '10.77.0.100',
          interface: 'eth0',
          buckets: 16,
          hashMode: 'sourceip',
          seed: 0x5eed1234,
          clusterMac: '01:00:5e:4d:00:64',
          sticky: false,
        },
      ],
      rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 },
    } satisfies ClusterSpec);
  });

  it('fills defaults: hashMode, sticky, derived MAC, rebalance', () => {
    const spec = parseClusterSpecYaml(
      'vips:\n  - {address: 10.1.2.3, interface: eth1, buckets: 4, seed: 7}\n',
      's.yaml',
    );
    expect(spec.vips[0]).toEqual({
      address: '10.1.2.3',
      interface: 'eth1',
      buckets: 4,
      hashMode: 'sourceip',
      seed: 7,
      clusterMac: '01:00:5e:01:02:03',
      sticky: false,
    });
    expect(spec.rebalance).toEqual({ joinMovesPerInterval: 1, intervalMs: 1000 });
  });

  it('accepts the seed as a YAML hex number, a quoted hex string, or a decimal', () => {
    const seedOf = (s: string) =>
      parseClusterSpecYaml(`vips:\n  - {address: 10.0.0.1, interface: e, buckets: 2, seed: ${s}}\n`, 's').vips[0]!.seed;
    expect(seedOf('0x5eed1234')).toBe(0x5eed1234);
    expect(seedOf('"0x5EED1234"')).toBe(0x5eed1234);
    expect(seedOf('"0xffffffff"')).toBe(0xffffffff);
    expect(seedOf('0')).toBe(0);
    expect(seedOf('4294967295')).toBe(4294967295);
    expect(seedOf('"12"')).toBe(12);
  });

  it('rejects seeds outside 32 bits, malformed hex, fractions', () => {
    for (const s of ['0x100000000', '"0x123456789"', '4294967296', '-1', '1.5', '"0x"', 'abc', 'true']) {
      const issues = issuesOf(() =>
        parseClusterSpecYaml(
          `vips:\n  - address: 10.0.0.1\n    interface: e\n    buckets: 2\n    seed: ${s}\n`,
          's.yaml',
        ),
      );
      expect(issues).toHaveLength(1);
      expect(issues[0]).toMatchObject({ where: 's.yaml', line: 5, path: 'vips[0].seed' });
      expect(issues[0]!.message).toMatch(/^expected a 32-bit seed/);
    }
  });

  it('requires a seed, naming the line of the VIP', () => {
    expect(
      messageOf(() =>
        parseClusterSpecYaml('vips:\n  - address: 10.0.0.1\n    interface: e\n    buckets: 2\n', 'c.yaml'),
      ),
    ).toBe(
      'c.yaml:2: vips[0].seed: required: a 32-bit seed: an integer 0..4294967295 or a hex string "0x…" of 1 to 8 digits (an explicit seed keeps every node\'s hash the same)',
    );
  });

  it('names file, line, field and limit for too many buckets on clusterip', () => {
    const y = `vips:
  - address: 10.77.0.100
    interface: eth0
    buckets: 16
    seed: 1
  - address: 10.77.0.101
    interface: eth0
    buckets: 40
    seed: 1
`;
    expect(messageOf(() => parseClusterSpecYaml(y, 'spec.yaml', { backend: 'clusterip' }))).toBe(
      'spec.yaml:8: vips[1].buckets: 40 exceeds 16, the most the clusterip backend supports',
    );
    // Without a backend or with nftables, 40 is fine.
    expect(parseClusterSpecYaml(y, 'spec.yaml').vips[1]!.buckets).toBe(40);
    expect(parseClusterSpecYaml(y, 'spec.yaml', { backend: 'nftables' }).vips[1]!.buckets).toBe(40);
  });

  it('limits buckets to 1..4096 whatever the backend', () => {
    const y = (n: number | string) => `vips:\n  - {address: 10.0.0.1, interface: e, seed: 1, buckets: ${n}}\n`;
    expect(parseClusterSpecYaml(y(4096), 's', { backend: 'nftables' }).vips[0]!.buckets).toBe(4096);
    expect(messageOf(() => parseClusterSpecYaml(y(4097), 's'))).toBe(
      's:2: vips[0].buckets: 4097 exceeds 4096, the most any backend supports',
    );
    expect(messageOf(() => parseClusterSpecYaml(y(0), 's'))).toBe(
      's:2: vips[0].buckets: expected an integer 1..4096, got 0',
    );
    expect(messageOf(() => parseClusterSpecYaml(y(2.5), 's'))).toBe(
      's:2: vips[0].buckets: expected an integer 1..4096, got 2.5',
    );
    expect(messageOf(() => parseClusterSpecYaml(y('"16"'), 's'))).toBe(
      's:2: vips[0].buckets: expected an integer 1..4096, got "16"',
    );
  });

  it('reports every issue at once, in line order, with unknown fields on their own lines', () => {
    const y = `vips:
  - address: 10.77.0.100
    interface: eth0
    buckets: 16
    seed: 0x5eed1234
  - address: 10.77.0.100
    interface: "a/b"
    buckets: 40
    hashMode: foo
    seed: "0xzz"
    clusterMac: 02:00:00:00:00:01
    bogus: 1
  - address: 10.77.0.300
    interface: eth0
    buckets: 0
rebalance:
  joinMovesPerInterval: -1
  extra: true
unknownTop: 1
`;
    expect(messageOf(() => parseClusterSpecYaml(y, 'spec.yaml', { backend: 'clusterip' })).split('\n')).toEqual([
      'spec.yaml:6: vips[1].address: 10.77.0.100 is already used by vips[0]',
      'spec.yaml:7: vips[1].interface: expected an interface name: 1 to 15 characters, no "/", ":" or spaces, got "a/b"',
      'spec.yaml:8: vips[1].buckets: 40 exceeds 16, the most the clusterip backend supports',
      'spec.yaml:9: vips[1].hashMode: expected one of sourceip, sourceip-sourceport, sourceip-sourceport-destport, got "foo"',
      'spec.yaml:10: vips[1].seed: expected a 32-bit seed: an integer 0..4294967295 or a hex string "0x…" of 1 to 8 digits, got "0xzz"',
      "spec.yaml:11: vips[1].clusterMac: 02:00:00:00:00:01 is not a multicast MAC (the first octet must be odd, e.g. 01:00:5e:…); every node must receive the VIP's frames",
      'spec.yaml:12: vips[1].bogus: unknown field; expected one of address, interface, buckets, hashMode, seed, clusterMac, sticky',
      'spec.yaml:13: vips[2].address: expected a unicast IPv4 or IPv6 address like 10.77.0.100 or 2001:db8::100, got "10.77.0.300"',
      'spec.yaml:13: vips[2].seed: required: a 32-bit seed: an integer 0..4294967295 or a hex string "0x…" of 1 to 8 digits (an explicit seed keeps every node\'s hash the same)',
      'spec.yaml:15: vips[2].buckets: expected an integer 1..4096, got 0',
      'spec.yaml:17: rebalance.joinMovesPerInterval: expected an integer 0..4096 (0 = never move buckets of live nodes), got -1',
      'spec.yaml:18: rebalance.extra: unknown field; expected one of joinMovesPerInterval, intervalMs',
      'spec.yaml:19: unknownTop: unknown field; expected one of vips, rebalance, minHealthyNodes',
    ]);
  });

  it('suggests the field an unknown one was probably meant to be', () => {
    const y = `vips:
  - address: 10.0.0.1
    interface: e
    bucket: 4
    hashmode: sourceip
    seed: 1
rebalance:
  joinMoves: 0
`;
    expect(messageOf(() => parseClusterSpecYaml(y, 't.yaml')).split('\n')).toEqual([
      't.yaml:2: vips[0].buckets: required: an integer 1..4096',
      't.yaml:4: vips[0].bucket: unknown field; did you mean buckets?',
      't.yaml:5: vips[0].hashmode: unknown field; did you mean hashMode?',
      't.yaml:8: rebalance.joinMoves: unknown field; did you mean joinMovesPerInterval?',
    ]);
  });

  it('limits the number of VIPs', () => {
    const vips = Array.from({ length: 257 }, (_, i) => ({
      address: `10.${1 + (i >> 8)}.0.${i & 255}`,
      interface: 'e',
      buckets: 1,
      seed: 1,
    }));
    expect(() => validateClusterSpec({ vips }, 'k')).toThrow('k: vips: at most 256 VIPs');
    expect(validateClusterSpec({ vips: vips.slice(0, 256) }, 'k').vips).toHaveLength(256);
  });

  it('validates interface names like Linux (IFNAMSIZ 16, no "/", ":" or spaces)', () => {
    const y = (i: string) => `vips:\n  - {address: 10.0.0.1, seed: 1, buckets: 2, interface: ${JSON.stringify(i)}}\n`;
    for (const ok of ['eth0', 'a', 'enp0s31f6', 'br-0123456789ab', 'x'.repeat(15), 'vlan.100', 'veth@x']) {
      expect(parseClusterSpecYaml(y(ok), 's').vips[0]!.interface).toBe(ok);
    }
    for (const bad of ['', 'x'.repeat(16), '.', '..', 'a/b', 'eth0:1', 'a b', 'a\tb']) {
      expect(issuesOf(() => parseClusterSpecYaml(y(bad), 's'))[0]).toMatchObject({
        path: 'vips[0].interface',
        line: 2,
      });
    }
  });

  it('rejects non-unicast and malformed VIP addresses', () => {
    const y = (a: string) => `vips:\n  - {address: ${JSON.stringify(a)}, seed: 1, buckets: 2, interface: e}\n`;
    for (const bad of ['0.1.2.3', '224.0.0.1', '255.255.255.255', '10.0.0', '10.0.0.01', '::1', 'host', '1.2.3.4/32']) {
      expect(issuesOf(() => parseClusterSpecYaml(y(bad), 's'))[0]).toMatchObject({ path: 'vips[0].address' });
    }
  });

  it('normalises and checks cluster MACs', () => {
    const y = (m: string) => `vips:\n  - {address: 10.0.0.1, seed: 1, buckets: 2, interface: e, clusterMac: "${m}"}\n`;
    expect(parseClusterSpecYaml(y('01:00:5E:AA:BB:CC'), 's').vips[0]!.clusterMac).toBe('01:00:5e:aa:bb:cc');
    expect(parseClusterSpecYaml(y('03-11-22-33-44-55'), 's').vips[0]!.clusterMac).toBe('03:11:22:33:44:55');
    expect(messageOf(() => parseClusterSpecYaml(y('01:00:5e:00:00'), 's'))).toBe(
      's:2: vips[0].clusterMac: expected a MAC address like 01:00:5e:4d:00:64, got "01:00:5e:00:00"',
    );
    expect(messageOf(() => parseClusterSpecYaml(y('00:11:22:33:44:55'), 's'))).toMatch(/is not a multicast MAC/);
  });

  it('checks backend-only options: sticky not on clusterip; port hash modes work on both kernels', () => {
    const y = `vips:
  - address: 10.0.0.1
    interface: e
    buckets: 4
    seed: 1
    sticky: true
    hashMode: sourceip-sourceport
`;
    expect(messageOf(() => parseClusterSpecYaml(y, 'a.yaml', { backend: 'clusterip' }))).toBe(
      'a.yaml:6: vips[0].sticky: sticky mode needs the nftables backend; the clusterip backend has no such option',
    );
    // nftables hashes `ip saddr . th sport` for this mode (src/backends/nftRuleset.ts), proven in nft-hash.test.ts.
    expect(parseClusterSpecYaml(y, 'a.yaml', { backend: 'nftables' }).vips[0]!.hashMode).toBe('sourceip-sourceport');
    expect(parseClusterSpecYaml(y, 'a.yaml', { backend: 'file' }).vips[0]!.sticky).toBe(true);
    expect(parseClusterSpecYaml(y, 'a.yaml').vips[0]!.hashMode).toBe('sourceip-sourceport');
  });

  it('reports YAML syntax errors with their line', () => {
    expect(issuesOf(() => parseClusterSpecYaml('vips: []\nrebalance: {}\nvips: []\n', 'd.yaml'))).toEqual([
      { where: 'd.yaml', path: '', line: 3, message: 'YAML: Map keys must be unique' },
    ]);
    const bad = issuesOf(() => parseClusterSpecYaml('vips: [\n  {a: 1\n', 'e.yaml'));
    expect(bad.length).toBeGreaterThan(0);
    expect(bad[0]!.where).toBe('e.yaml');
    expect(bad[0]!.line).toBeGreaterThanOrEqual(1);
  });

  it('rejects an empty document and a non-mapping one', () => {
    expect(messageOf(() => parseClusterSpecYaml('', 'empty.yaml'))).toBe(
      'empty.yaml: the document is empty: expected a mapping with "vips" and optionally "rebalance"',
    );
    expect(messageOf(() => parseClusterSpecYaml('- 1\n', 'list.yaml'))).toBe(
      'list.yaml:1: expected a mapping with "vips" and optionally "rebalance", got a list',
    );
    expect(messageOf(() => parseClusterSpecYaml('vips: 3\n', 'v.yaml'))).toBe(
      'v.yaml:1: vips: expected a list of VIPs, got 3',
    );
  });

  it('validates JSON from etcd naming the key instead of a file line', () => {
    expect(() =>
      validateClusterSpec(
        { vips: [{ address: '10.0.0.1', interface: 'e', buckets: 2, seed: 1, x: 1 }] },
        '/clusterip-ha/default/spec',
      ),
    ).toThrow('/clusterip-ha/default/spec: vips[0].x: unknown field');
    const issues = issuesOf(() => validateClusterSpec('nope', 'k'));
    expect(issues).toHaveLength(1);
    expect(issues[0]!.line).toBeUndefined();
  });
});

describe('loadClusterSpecFile', () => {
  it('reads a file and names it in errors', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cipha-config-spec-'));
    try {
      const good = join(dir, 'spec.yaml');
      writeFileSync(good, GOOD);
      expect((await loadClusterSpecFile(good, { backend: 'clusterip' })).vips[0]!.seed).toBe(0x5eed1234);
      const bad = join(dir, 'bad.yaml');
      writeFileSync(bad, GOOD.replace('buckets: 16', 'buckets: 17'));
      await expect(loadClusterSpecFile(bad, { backend: 'clusterip' })).rejects.toThrow(
        `${bad}:4: vips[0].buckets: 17 exceeds 16, the most the clusterip backend supports`,
      );
      await expect(loadClusterSpecFile(join(dir, 'none.yaml'))).rejects.toBeInstanceOf(ConfigError);
      await expect(loadClusterSpecFile(join(dir, 'none.yaml'))).rejects.toThrow(/none\.yaml: cannot read: ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('cluster MAC derivation', () => {
  it('derives 01:00:5e + the low 23 bits', () => {
    expect(deriveClusterMac('10.77.0.100')).toBe('01:00:5e:4d:00:64');
    expect(deriveClusterMac('192.168.255.1')).toBe('01:00:5e:28:ff:01');
    expect(deriveClusterMac('10.0.0.1')).toBe('01:00:5e:00:00:01');
    expect(() => deriveClusterMac('10.0.0')).toThrow(RangeError);
  });

  it("always yields a multicast MAC carrying the address's low 23 bits (property)", () => {
    fc.assert(
      fc.property(fc.ipV4(), (ip) => {
        const mac = deriveClusterMac(ip);
        expect(isMulticastMac(mac)).toBe(true);
        const n = ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
        const low = parseInt(mac.split(':').slice(3).join(''), 16);
        expect(low).toBe(n & 0x7fffff);
        expect(mac.startsWith('01:00:5e:')).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });
});

const ifname = fc
  .string({
    unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789-_.@'.split('')),
    minLength: 1,
    maxLength: 15,
  })
  .filter((s) => s !== '.' && s !== '..');
const unicast = fc
  .tuple(fc.integer({ min: 1, max: 223 }), fc.nat(255), fc.nat(255), fc.nat(255))
  .map((o) => o.join('.'));
const multicastMac = fc
  .array(fc.nat(255), { minLength: 6, maxLength: 6 })
  .map(([a, ...rest]) => [(a! | 1) & 0xff, ...rest].map((n) => n.toString(16).padStart(2, '0')).join(':'));
const vipArb = (address: string): fc.Arbitrary<VipSpec> =>
  fc.record({
    address: fc.constant(address),
    interface: ifname,
    buckets: fc.integer({ min: 1, max: 4096 }),
    hashMode: fc.constantFrom(
      'sourceip' as const,
      'sourceip-sourceport' as const,
      'sourceip-sourceport-destport' as const,
    ),
    seed: fc.integer({ min: 0, max: 0xffffffff }),
    clusterMac: fc.oneof(multicastMac, fc.constant(deriveClusterMac(address))),
    sticky: fc.boolean(),
  });
const specArb: fc.Arbitrary<ClusterSpec> = fc.uniqueArray(unicast, { minLength: 0, maxLength: 6 }).chain((addrs) =>
  fc.record({
    vips: addrs.length ? fc.tuple(...addrs.map(vipArb)) : fc.constant([] as VipSpec[]),
    rebalance: fc.record({
      joinMovesPerInterval: fc.integer({ min: 0, max: 4096 }),
      intervalMs: fc.integer({ min: 10, max: 3_600_000 }),
    }),
  }),
);

describe('round trips (property)', () => {
  it('any valid spec survives JSON → validateClusterSpec unchanged', () => {
    fc.assert(
      fc.property(specArb, (spec) => {
        expect(validateClusterSpec(JSON.parse(JSON.stringify(spec)), 'k')).toEqual(spec);
      }),
      { numRuns: 1000 },
    );
  });

  it('any valid spec survives YAML (seed as hex string) → parseClusterSpecYaml unchanged', () => {
    fc.assert(
      fc.property(specArb, (spec) => {
        const doc = {
          ...spec,
          vips: spec.vips.map((v) => ({ ...v, seed: `0x${v.seed.toString(16)}` })),
        };
        expect(parseClusterSpecYaml(stringify(doc), 'p.yaml')).toEqual(spec);
      }),
      { numRuns: 300 },
    );
  });
});
