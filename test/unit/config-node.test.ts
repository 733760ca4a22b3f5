import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, type InputIssue } from '../../src/errors.js';
import { parseClusterSpecYaml } from '../../src/config/clusterSpec.js';
import {
  addNodeConfigOptions,
  envVarFor,
  loadNodeConfig,
  NODE_OPTIONS,
  resolveNodeConfig,
  type NodeConfig,
} from '../../src/config/index.js';

const dir = mkdtempSync(join(tmpdir(), 'cipha-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function file(text: string): string {
  const p = join(dir, `node${++n}.yaml`);
  writeFileSync(p, text);
  return p;
}

async function issuesOf(p: Promise<unknown>): Promise<InputIssue[]> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues;
  }
  throw new Error('expected a ConfigError');
}

async function messageOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

/** Parse argv the way `clusterip-ha agent` does. */
function flagsOf(argv: string[]): Record<string, unknown> {
  const cmd = addNodeConfigOptions(new Command('agent').exitOverride());
  cmd.parse(argv, { from: 'user' });
  return cmd.opts();
}

describe('node config defaults', () => {
  it('has the documented defaults with nothing given', async () => {
    const cfg = await loadNodeConfig({ flags: {}, env: {} });
    expect(cfg).toEqual({
      nodeId: hostname(),
      weight: 1,
      etcd: { endpoints: ['http://127.0.0.1:2379'], requestTimeoutMs: 1000 },
      cluster: 'default',
      backend: {
        kind: 'nftables',
        table: 'clusterip_ha',
        nftPath: 'nft',
        arpMangle: false,
        multicastSubscribe: true,
        transport: 'auto',
      },
      leaseTtlSeconds: 2,
      fenceMarginMs: 500,
      metricsListen: { host: '127.0.0.1', port: 9477 },
      stateDir: '/var/lib/clusterip-ha',
      logLevel: 'info',
      shutdownTimeoutMs: 10000,
      restartBudgetMs: 2500,
      health: { checks: [], holdMs: 10000 },
    } satisfies NodeConfig);
  });

  it('node id defaults to the host name, or its first label when the full name is no valid id', () => {
    const idFor = (hostname: string) =>
      resolveNodeConfig({ flags: {}, env: {}, hostname, fileKind: () => 'file' }).nodeId;
    expect(idFor('web-1.example.com')).toBe('web-1.example.com');
    expect(idFor(`web-2.${'x'.repeat(70)}.example.com`)).toBe('web-2');
    expect(() => idFor('_bad')).toThrow(
      '--node-id: default (the host name (its first label when the full name is not a valid id)): expected a node id',
    );
    // An explicit id wins over a host name that could not be one.
    expect(
      resolveNodeConfig({ flags: { nodeId: 'n1' }, env: {}, hostname: '_bad', fileKind: () => 'file' }).nodeId,
    ).toBe('n1');
  });

  it('derives defaults from other settings: backend dir from state dir, fence margin from TTL', async () => {
    const a = await loadNodeConfig({ flags: { backend: 'file', stateDir: '/tmp/x/' }, env: {} });
    expect(a.backend).toEqual({ kind: 'file', dir: '/tmp/x/buckets' });
    expect((await loadNodeConfig({ flags: { leaseTtl: '1' }, env: {} })).fenceMarginMs).toBe(250);
    expect((await loadNodeConfig({ flags: { leaseTtl: '4' }, env: {} })).fenceMarginMs).toBe(1000);
    expect((await loadNodeConfig({ flags: { leaseTtl: '10' }, env: {} })).fenceMarginMs).toBe(2500);
  });

  it('defaults of the other backends', async () => {
    expect((await loadNodeConfig({ flags: { backend: 'clusterip' }, env: {} })).backend).toEqual({
      kind: 'clusterip',
      procDir: '/proc/net/ipt_CLUSTERIP',
      manageRule: true,
      iptablesPath: 'iptables-legacy',
    });
    expect((await loadNodeConfig({ flags: { backend: 'exec', execCommand: '/bin/hook' }, env: {} })).backend).toEqual({
      kind: 'exec',
      command: ['/bin/hook'],
      timeoutMs: 5000,
    });
  });
});

describe('precedence flag > env > file > default', () => {
  // One valid value per layer for a spread of types (int, string, list, boolean, enum, listen).
  const cases: {
    key: string;
    flag: string;
    env: string;
    yaml: string;
    expect: (c: NodeConfig) => unknown;
    values: [unknown, unknown, unknown, unknown];
  }[] = [
    { key: 'weight', flag: '7', env: '5', yaml: 'weight: 3', expect: (c) => c.weight, values: [7, 5, 3, 1] },
    {
      key: 'cluster',
      flag: 'cf',
      env: 'ce',
      yaml: 'cluster: cy',
      expect: (c) => c.cluster,
      values: ['cf', 'ce', 'cy', 'default'],
    },
    {
      key: 'etcd-endpoints',
      flag: 'http://f1:1,http://f2:2',
      env: 'http://e:1',
      yaml: 'etcd: {endpoints: [http://y:1]}',
      expect: (c) => c.etcd.endpoints,
      values: [['http://f1:1', 'http://f2:2'], ['http://e:1'], ['http://y:1'], ['http://127.0.0.1:2379']],
    },
    {
      key: 'nft-arp-mangle',
      flag: 'false',
      env: '1',
      yaml: 'backend: {arpMangle: false}',
      expect: (c) => c.backend.kind === 'nftables' && c.backend.arpMangle,
      values: [false, true, false, false],
    },
    {
      key: 'log-level',
      flag: 'debug',
      env: 'warn',
      yaml: 'logLevel: error',
      expect: (c) => c.logLevel,
      values: ['debug', 'warn', 'error', 'info'],
    },
    {
      key: 'metrics-listen',
      flag: 'off',
      env: '[::1]:9',
      yaml: 'metricsListen: 0.0.0.0:1',
      expect: (c) => c.metricsListen,
      values: ['off', { host: '::1', port: 9 }, { host: '0.0.0.0', port: 1 }, { host: '127.0.0.1', port: 9477 }],
    },
    {
      key: 'lease-ttl',
      flag: '9',
      env: '8',
      yaml: 'leaseTtlSeconds: 7',
      expect: (c) => c.leaseTtlSeconds,
      values: [9, 8, 7, 2],
    },
  ];
  for (const c of cases) {
    it(`${c.key}: each layer wins over the ones below it`, async () => {
      const yamlFile = file(`${c.yaml}\n`);
      const env = { [envVarFor(c.key)]: c.env };
      const argv = [`--${c.key}`, c.flag];
      const all = await loadNodeConfig({ flags: flagsOf(argv), env, configFile: yamlFile });
      const noFlag = await loadNodeConfig({ flags: flagsOf([]), env, configFile: yamlFile });
      const fileOnly = await loadNodeConfig({ flags: flagsOf([]), env: {}, configFile: yamlFile });
      const none = await loadNodeConfig({ flags: flagsOf([]), env: {} });
      expect([c.expect(all), c.expect(noFlag), c.expect(fileOnly), c.expect(none)]).toEqual(c.values);
    });
  }

  it('finds the file through --config and CLUSTERIP_HA_CONFIG; configFile overrides both', async () => {
    const a = file('weight: 11\n');
    const b = file('weight: 12\n');
    const c = file('weight: 13\n');
    expect((await loadNodeConfig({ flags: flagsOf(['--config', a]), env: {} })).weight).toBe(11);
    expect((await loadNodeConfig({ flags: {}, env: { CLUSTERIP_HA_CONFIG: b } })).weight).toBe(12);
    expect((await loadNodeConfig({ flags: flagsOf(['--config', a]), env: { CLUSTERIP_HA_CONFIG: b } })).weight).toBe(
      11,
    );
    expect((await loadNodeConfig({ flags: flagsOf(['--config', a]), env: {}, configFile: c })).weight).toBe(13);
  });

  it('an empty environment variable counts as unset', async () => {
    const f = file('weight: 4\n');
    expect((await loadNodeConfig({ flags: {}, env: { CLUSTERIP_HA_WEIGHT: '' }, configFile: f })).weight).toBe(4);
  });

  it('an invalid lower layer is not reported when a higher one wins', async () => {
    expect((await loadNodeConfig({ flags: { weight: '2' }, env: { CLUSTERIP_HA_WEIGHT: 'lots' } })).weight).toBe(2);
  });

  it('commander registers no defaults, so unset options stay undefined', () => {
    expect(flagsOf([])).toEqual({});
    expect(flagsOf(['--nft-arp-mangle'])).toEqual({ nftArpMangle: true });
  });

  it('every option of the table is a commander option, an env var and a YAML field', async () => {
    const cmd = addNodeConfigOptions(new Command('agent'));
    const longs = cmd.options.map((o) => o.long);
    for (const o of NODE_OPTIONS) {
      expect(longs).toContain(`--${o.flag}`);
      expect(envVarFor(o.flag)).toBe(`CLUSTERIP_HA_${o.flag.toUpperCase().replaceAll('-', '_')}`);
    }
    expect(longs).toContain('--config');
    // The interface names other issues rely on.
    for (const f of [
      'node-id',
      'weight',
      'etcd-endpoints',
      'etcd-ca',
      'etcd-cert',
      'etcd-key',
      'etcd-user',
      'etcd-password',
      'cluster',
      'backend',
      'backend-dir',
      'lease-ttl',
      'fence-margin',
      'metrics-listen',
      'state-dir',
      'log-level',
      'checks',
      'maintenance-file',
      'health-hold',
    ]) {
      expect(longs).toContain(`--${f}`);
    }
  });
});

describe('node config values', () => {
  it('booleans accept true/false/1/0 in the environment and nothing else', async () => {
    for (const [text, v] of [
      ['true', true],
      ['1', true],
      ['FALSE', false],
      ['0', false],
    ] as const) {
      const cfg = await loadNodeConfig({ flags: {}, env: { CLUSTERIP_HA_NFT_ARP_MANGLE: text } });
      expect(cfg.backend).toMatchObject({ arpMangle: v });
    }
    expect(await messageOf(loadNodeConfig({ flags: {}, env: { CLUSTERIP_HA_NFT_ARP_MANGLE: 'yes' } }))).toBe(
      'CLUSTERIP_HA_NFT_ARP_MANGLE: expected true, false, 1 or 0, got "yes"',
    );
  });

  it('exec command: a JSON argv list or a plain path', async () => {
    const load = (cmd: string) => loadNodeConfig({ flags: { backend: 'exec', execCommand: cmd }, env: {} });
    expect((await load('["/usr/bin/hook","--vip","x y"]')).backend).toMatchObject({
      command: ['/usr/bin/hook', '--vip', 'x y'],
    });
    expect((await load('/usr/local/bin/hook with space')).backend).toMatchObject({
      command: ['/usr/local/bin/hook with space'],
    });
    expect(await messageOf(load('["/x",'))).toMatch(
      /^--exec-command: expected a JSON list of strings, got invalid JSON/,
    );
    expect(await messageOf(load('[]'))).toMatch(
      /^--exec-command: expected a command: a path, or a JSON list of its argv/,
    );
    expect(await messageOf(load('[1]'))).toBe('--exec-command: [0]: expected a non-empty string, got 1');
    const f = file('backend:\n  kind: exec\n  command: [/bin/hook, arg]\n  timeoutMs: 100\n');
    expect((await loadNodeConfig({ flags: {}, env: {}, configFile: f })).backend).toEqual({
      kind: 'exec',
      command: ['/bin/hook', 'arg'],
      timeoutMs: 100,
    });
  });

  it('metrics listen: HOST:PORT, [IPv6]:PORT or off', async () => {
    const load = (v: string) => loadNodeConfig({ flags: { metricsListen: v }, env: {} });
    expect((await load('localhost:0')).metricsListen).toEqual({ host: 'localhost', port: 0 });
    expect((await load('[::1]:9477')).metricsListen).toEqual({ host: '::1', port: 9477 });
    expect((await load('off')).metricsListen).toBe('off');
    for (const bad of ['9477', '127.0.0.1', '127.0.0.1:70000', ':80', 'a b:1', 'on']) {
      expect(await messageOf(load(bad))).toBe(
        `--metrics-listen: expected HOST:PORT (e.g. 127.0.0.1:9477, [::1]:9477) or off, got ${JSON.stringify(bad)}`,
      );
    }
  });

  it('node id and cluster use the node id charset', async () => {
    expect(await messageOf(loadNodeConfig({ flags: { nodeId: 'a b' }, env: {} }))).toBe(
      '--node-id: expected a node id: letters, digits, ".", "_", "-", starting with a letter or digit, at most 63, got "a b"',
    );
    expect(await messageOf(loadNodeConfig({ flags: {}, env: { CLUSTERIP_HA_CLUSTER: 'x/y' } }))).toBe(
      'CLUSTERIP_HA_CLUSTER: expected a cluster name: letters, digits, ".", "_", "-", starting with a letter or digit, at most 63, got "x/y"',
    );
  });

  it('etcd endpoints must be http(s) URLs', async () => {
    expect(await messageOf(loadNodeConfig({ flags: { etcdEndpoints: 'http://a:1,10.0.0.1:2379' }, env: {} }))).toBe(
      '--etcd-endpoints: [1]: expected an etcd URL like http://127.0.0.1:2379 or https://etcd1:2379, got "10.0.0.1:2379"',
    );
    expect(await messageOf(loadNodeConfig({ flags: { etcdEndpoints: ',' }, env: {} }))).toMatch(
      /^--etcd-endpoints: expected at least one of the etcd URLs/,
    );
  });

  it('integers: wording includes the range, whatever the source', async () => {
    expect(await messageOf(loadNodeConfig({ flags: { weight: 'x' }, env: {} }))).toBe(
      '--weight: expected an integer 0..1000, got "x"',
    );
    expect(await messageOf(loadNodeConfig({ flags: {}, env: { CLUSTERIP_HA_LEASE_TTL: '0' } }))).toBe(
      'CLUSTERIP_HA_LEASE_TTL: expected an integer (seconds) 1..3600, got 0',
    );
    expect(await messageOf(loadNodeConfig({ flags: {}, env: { CLUSTERIP_HA_LEASE_TTL: '1.5' } }))).toBe(
      'CLUSTERIP_HA_LEASE_TTL: expected an integer (seconds) 1..3600, got "1.5"',
    );
  });
});

describe('node config file errors', () => {
  it('names file:line and field for unknown fields and bad values, all at once', async () => {
    const f = file(`nodeId: n1
weight: heavy
etcd:
  endpoints: [http://127.0.0.1:2379]
  timeout: 5
backend:
  kind: file
  dir: /tmp/b
  table: t
leaseTtl: 2
`);
    expect((await messageOf(loadNodeConfig({ flags: {}, env: {}, configFile: f }))).split('\n')).toEqual([
      `${f}:2: weight: expected an integer 0..1000, got "heavy"`,
      `${f}:5: etcd.timeout: unknown field; expected one of endpoints, ca, cert, key, user, password, passwordFile, requestTimeoutMs`,
      `${f}:9: backend.table: applies only to the nftables backend, but the backend is file`,
      `${f}:10: leaseTtl: unknown field; did you mean leaseTtlSeconds?`,
    ]);
  });

  it('reports wrong container types and YAML syntax errors with lines', async () => {
    const f = file('etcd: http://x:1\nbackend: [file]\n');
    expect((await messageOf(loadNodeConfig({ flags: {}, env: {}, configFile: f }))).split('\n')).toEqual([
      `${f}:1: etcd: expected a mapping, got "http://x:1"`,
      `${f}:2: backend: expected a mapping, got a list`,
    ]);
    const g = file('weight: 1\nweight: 2\n');
    expect(await messageOf(loadNodeConfig({ flags: {}, env: {}, configFile: g }))).toBe(
      `${g}:2: YAML: Map keys must be unique`,
    );
  });

  it('an empty file is fine (all defaults)', async () => {
    expect((await loadNodeConfig({ flags: {}, env: {}, configFile: file('') })).weight).toBe(1);
  });

  it('an unreadable config file names where it came from', async () => {
    expect(await messageOf(loadNodeConfig({ flags: { config: join(dir, 'missing.yaml') }, env: {} }))).toBe(
      `--config: cannot read ${join(dir, 'missing.yaml')}: ENOENT`,
    );
    expect(await messageOf(loadNodeConfig({ flags: {}, env: { CLUSTERIP_HA_CONFIG: dir } }))).toBe(
      `CLUSTERIP_HA_CONFIG: cannot read ${dir}: EISDIR`,
    );
  });
});

describe('node config cross-field checks', () => {
  it('fence margin must be below half the TTL, blaming whichever was given', async () => {
    expect(await messageOf(loadNodeConfig({ flags: { leaseTtl: '1', fenceMargin: '500' }, env: {} }))).toBe(
      '--fence-margin: fence margin 500 ms must be below half the lease TTL (500 ms for a 1 s TTL)',
    );
    expect((await loadNodeConfig({ flags: { leaseTtl: '1', fenceMargin: '499' }, env: {} })).fenceMarginMs).toBe(499);
    // Margin from the file, TTL from a flag: the margin is still the one blamed, at its line.
    const f = file('fenceMarginMs: 1500\n');
    expect(await messageOf(loadNodeConfig({ flags: { leaseTtl: '3' }, env: {}, configFile: f }))).toBe(
      `${f}:1: fenceMarginMs: fence margin 1500 ms must be below half the lease TTL (1500 ms for a 3 s TTL)`,
    );
  });

  it('TLS files must exist; the error names the flag, variable or field', async () => {
    const missing = join(dir, 'nope.pem');
    expect(
      await messageOf(loadNodeConfig({ flags: { etcdCa: missing, etcdEndpoints: 'https://e:2379' }, env: {} })),
    ).toBe(`--etcd-ca: file not found: ${missing}`);
    expect(
      await messageOf(
        loadNodeConfig({ flags: { etcdEndpoints: 'https://e:2379' }, env: { CLUSTERIP_HA_ETCD_CA: dir } }),
      ),
    ).toBe(`CLUSTERIP_HA_ETCD_CA: not a regular file: ${dir}`);
    const f = file(`etcd:\n  endpoints: [https://e:2379]\n  cert: ${missing}\n  key: ${missing}\n`);
    expect((await messageOf(loadNodeConfig({ flags: {}, env: {}, configFile: f }))).split('\n')).toEqual([
      `${f}:3: etcd.cert: file not found: ${missing}`,
      `${f}:4: etcd.key: file not found: ${missing}`,
    ]);
  });

  it('accepts existing TLS files with https endpoints', async () => {
    const tls = join(dir, 'tls');
    mkdirSync(tls);
    for (const n of ['ca', 'cert', 'key']) writeFileSync(join(tls, `${n}.pem`), 'x');
    const cfg = await loadNodeConfig({
      flags: flagsOf(['--etcd-endpoints', 'https://a:2379,https://b:2379', '--etcd-ca', join(tls, 'ca.pem')]),
      env: {
        CLUSTERIP_HA_ETCD_CERT: join(tls, 'cert.pem'),
        CLUSTERIP_HA_ETCD_KEY: join(tls, 'key.pem'),
        CLUSTERIP_HA_ETCD_USER: 'u',
        CLUSTERIP_HA_ETCD_PASSWORD: 'p',
      },
    });
    expect(cfg.etcd).toEqual({
      endpoints: ['https://a:2379', 'https://b:2379'],
      ca: join(tls, 'ca.pem'),
      cert: join(tls, 'cert.pem'),
      key: join(tls, 'key.pem'),
      user: 'u',
      password: 'p',
      requestTimeoutMs: 1000,
    });
  });

  it('cert/key and user/password come in pairs; TLS needs https', async () => {
    const ca = join(dir, 'ca-only.pem');
    writeFileSync(ca, 'x');
    expect((await messageOf(loadNodeConfig({ flags: { etcdCert: ca, etcdUser: 'u' }, env: {} }))).split('\n')).toEqual([
      '--etcd-cert: needs --etcd-key as well',
      '--etcd-cert: TLS files are given but --etcd-endpoints uses http://; use https:// URLs',
      '--etcd-user: needs --etcd-password-file (or --etcd-password) as well',
    ]);
    expect(await messageOf(loadNodeConfig({ flags: {}, env: { CLUSTERIP_HA_ETCD_PASSWORD: 'p' } }))).toBe(
      'CLUSTERIP_HA_ETCD_PASSWORD: needs CLUSTERIP_HA_ETCD_USER as well',
    );
  });

  it('a password comes from its file (flag, YAML or the _FILE variable), never echoed in errors', async () => {
    const pw = join(dir, 'etcd-password');
    writeFileSync(pw, 's3cret-98765\n');
    const viaEnv = await loadNodeConfig({
      flags: {},
      env: { CLUSTERIP_HA_ETCD_USER: 'u', CLUSTERIP_HA_ETCD_PASSWORD_FILE: pw },
    });
    expect(viaEnv.etcd).toMatchObject({ user: 'u', password: 's3cret-98765' });
    expect(viaEnv.etcd).not.toHaveProperty('passwordFile');
    const viaYaml = await loadNodeConfig({
      flags: {},
      env: {},
      configFile: file(`etcd:\n  user: u\n  passwordFile: ${pw}\n`),
    });
    expect(viaYaml.etcd.password).toBe('s3cret-98765');
    expect(
      await messageOf(loadNodeConfig({ flags: { etcdUser: 'u', etcdPassword: 'x', etcdPasswordFile: pw }, env: {} })),
    ).toBe('--etcd-password-file: give the password or its file, not both');
    expect(
      await messageOf(loadNodeConfig({ flags: { etcdUser: 'u', etcdPasswordFile: join(dir, 'nope') }, env: {} })),
    ).toMatch(/--etcd-password-file: file not found/);
    // A number where the password should be (YAML reads 98765432101234 as one), an endpoint with credentials:
    // the messages say what is wrong without the secret.
    const bad = await messageOf(
      loadNodeConfig({
        flags: {},
        env: {},
        configFile: file(
          'etcd:\n  endpoints: [http://root:hunter2@10.0.0.1:2379]\n  user: u\n  password: 98765432101234\n',
        ),
      }),
    );
    expect(bad).toMatch(
      /etcd\.password: expected a password \(a string; quote it in YAML\), got a number \(not shown\)/,
    );
    expect(bad).toMatch(/etcd\.endpoints\[0\]: expected an etcd URL .*, got "http:\/\/\*\*\*@10\.0\.0\.1:2379"/);
    expect(bad).not.toMatch(/98765432101234|hunter2/);
  });

  it('metricsListen must be an address that can be bound', async () => {
    for (const listen of ['300.1.1.1:9477', '1.2.3:9477', '[::zz]:9477', '127.0.0.1:70000'])
      expect(await messageOf(loadNodeConfig({ flags: { metricsListen: listen }, env: {} }))).toMatch(
        /^--metrics-listen: expected HOST:PORT/,
      );
    for (const listen of ['127.0.0.1:9477', '[::1]:9477', 'localhost:9477', 'off'])
      expect((await loadNodeConfig({ flags: { metricsListen: listen }, env: {} })).metricsListen).toBeDefined();
  });

  it('backend options of another backend are errors; exec needs a command', async () => {
    expect(
      (
        await messageOf(
          loadNodeConfig({
            flags: flagsOf(['--backend', 'exec', '--nft-table', 't']),
            env: { CLUSTERIP_HA_BACKEND_DIR: '/x' },
          }),
        )
      ).split('\n'),
    ).toEqual([
      '--backend: the exec backend needs a command: give --exec-command, CLUSTERIP_HA_EXEC_COMMAND or backend.command in the config file',
      '--nft-table: applies only to the nftables backend, but the backend is exec',
      'CLUSTERIP_HA_BACKEND_DIR: applies only to the file backend, but the backend is exec',
    ]);
    expect(await messageOf(loadNodeConfig({ flags: { backend: 'udp' }, env: {} }))).toBe(
      '--backend: expected one of clusterip, nftables, file, exec, got "udp"',
    );
  });

  it('collects issues from flags, environment and file in one error', async () => {
    const f = file('weight: -1\nbogus: 1\n');
    const issues = await issuesOf(
      loadNodeConfig({ flags: { logLevel: 'loud' }, env: { CLUSTERIP_HA_SHUTDOWN_TIMEOUT: 'soon' }, configFile: f }),
    );
    expect(issues.map((i) => `${i.where}|${i.line ?? ''}|${i.path}`).sort()).toEqual(
      ['--log-level||', 'CLUSTERIP_HA_SHUTDOWN_TIMEOUT||', `${f}|1|weight`, `${f}|2|bogus`].sort(),
    );
  });
});

async function linesOf(p: Promise<unknown>): Promise<string[]> {
  return (await messageOf(p)).split('\n');
}

describe('checks in the node config', () => {
  it('reads every type with keepalived defaults filled in', async () => {
    const ca = file('not really a pem\n');
    const f = file(`checks:
  - name: web
    type: tcp
    target: 127.0.0.1:80
    intervalMs: 2000
    timeoutMs: 700
    rise: 3
    fall: 2
  - name: api
    type: https
    target: https://127.0.0.1:8443/healthz
    expectStatus: [200, 204]
    ca: ${ca}
  - name: plain
    type: http
    target: http://[::1]:8080/
    method: HEAD
  - name: dns
    type: exec
    target: [/usr/bin/dig, "@127.0.0.1", health.example.]
    initial: down
maintenanceFile: /etc/clusterip-ha/maintenance
healthHoldMs: 2500
`);
    const cfg = await loadNodeConfig({ flags: {}, env: {}, configFile: f });
    expect(cfg.health).toEqual({
      checks: [
        {
          name: 'web',
          type: 'tcp',
          target: { host: '127.0.0.1', port: 80 },
          intervalMs: 2000,
          timeoutMs: 700,
          rise: 3,
          fall: 2,
          initial: 'up',
        },
        {
          name: 'api',
          type: 'https',
          target: 'https://127.0.0.1:8443/healthz',
          intervalMs: 1000,
          timeoutMs: 1000,
          rise: 1,
          fall: 1,
          initial: 'up',
          method: 'GET',
          expectStatus: [200, 204],
          ca,
        },
        {
          name: 'plain',
          type: 'http',
          target: 'http://[::1]:8080/',
          intervalMs: 1000,
          timeoutMs: 1000,
          rise: 1,
          fall: 1,
          initial: 'up',
          method: 'HEAD',
          expectStatus: [],
        },
        {
          name: 'dns',
          type: 'exec',
          target: ['/usr/bin/dig', '@127.0.0.1', 'health.example.'],
          intervalMs: 1000,
          timeoutMs: 1000,
          rise: 1,
          fall: 1,
          initial: 'down',
        },
      ],
      maintenanceFile: '/etc/clusterip-ha/maintenance',
      holdMs: 2500,
    });
  });

  it('takes the flag and the environment variables of the issue (JSON list of checks)', async () => {
    const json = JSON.stringify([{ name: 'w', type: 'tcp', target: 'localhost:81' }]);
    const a = await loadNodeConfig({
      flags: { checks: json },
      env: { CLUSTERIP_HA_MAINTENANCE_FILE: '/run/m' },
    });
    expect(a.health.checks.map((c) => [c.name, c.target])).toEqual([['w', { host: 'localhost', port: 81 }]]);
    expect(a.health.maintenanceFile).toBe('/run/m');
    const b = await loadNodeConfig({ flags: { maintenanceFile: '/run/f' }, env: { CLUSTERIP_HA_CHECKS: json } });
    expect(b.health.maintenanceFile).toBe('/run/f');
    expect(b.health.checks).toHaveLength(1);
  });

  it('names file:line and field for every bad check field at once', async () => {
    const f = file(`checks:
  - name: web
    type: tcp
    target: 127.0.0.1
  - name: web
    type: exec
    target: "pgrep nginx"
  - name: x
    type: udp
    target: 1.2.3.4:5
  - name: h
    type: http
    target: https://x/
    intervalMs: 100
    timeoutMs: 200
    expectStatus: [700]
    bogus: 1
  - name: s
    type: https
    target: https://x/
    ca: ${join(dir, 'missing.pem')}
`);
    expect(await linesOf(loadNodeConfig({ flags: {}, env: {}, configFile: f }))).toEqual([
      `${f}:4: checks[0].target: expected HOST:PORT like 127.0.0.1:80 or [::1]:80, got "127.0.0.1"`,
      `${f}:7: checks[1].target: expected a command as a list of its argv, like ["/usr/bin/pgrep", "-x", "nginx"], got "pgrep nginx"`,
      `${f}:9: checks[2].type: expected type: one of exec, tcp, http, https, got "udp"`,
      `${f}:13: checks[3].target: expected a http:// URL like http://127.0.0.1:8080/healthz, got "https://x/"`,
      `${f}:15: checks[3].timeoutMs: timeoutMs 200 must not exceed intervalMs 100`,
      `${f}:16: checks[3].expectStatus[0]: expected an integer 100..599, got 700`,
      `${f}:17: checks[3].bogus: unknown field`,
    ]);
  });

  it('cross-field: timeout within the interval, names unique, the CA file exists', async () => {
    const f = file(`checks:
  - {name: a, type: tcp, target: "h:1", intervalMs: 100, timeoutMs: 200}
  - {name: a, type: tcp, target: "h:2"}
`);
    const g = file(`checks:
  - {name: s, type: https, target: "https://x/", ca: ${join(dir, 'missing.pem')}}
`);
    expect(await linesOf(loadNodeConfig({ flags: {}, env: {}, configFile: g }))).toEqual([
      `${g}:1: checks[0].ca: file not found: ${join(dir, 'missing.pem')}`,
    ]);
    expect(
      await linesOf(
        loadNodeConfig({
          flags: { checks: JSON.stringify([{ name: 's', type: 'https', target: 'https://x/', ca: dir }]) },
          env: {},
        }),
      ),
    ).toEqual([`--checks: [0].ca: not a regular file: ${dir}`]);
    expect(await linesOf(loadNodeConfig({ flags: {}, env: {}, configFile: f }))).toEqual([
      `${f}:2: checks[0].timeoutMs: timeoutMs 200 must not exceed intervalMs 100`,
      `${f}:3: checks[1].name: a is already the name of [0]`,
    ]);
    expect(await linesOf(loadNodeConfig({ flags: { checks: '[{"name": 1}' }, env: {} }))).toEqual([
      expect.stringMatching(/^--checks: expected JSON, got invalid JSON/),
    ]);
    expect(
      await linesOf(loadNodeConfig({ flags: {}, env: { CLUSTERIP_HA_CHECKS: '[{"name":"a","type":"tcp"}]' } })),
    ).toEqual(['CLUSTERIP_HA_CHECKS: [0]target: required: HOST:PORT like 127.0.0.1:80 or [::1]:80']);
    expect(await linesOf(loadNodeConfig({ flags: { healthHold: '-1' }, env: {} }))).toEqual([
      '--health-hold: expected an integer (ms) 0..3600000, got -1',
    ]);
  });
});

describe('minHealthyNodes in the cluster spec', () => {
  const vips = 'vips:\n  - {address: 10.77.0.100, interface: eth0, buckets: 4, seed: 1}\n';
  it('defaults to 1 (left out) and takes 0..1000', () => {
    expect(parseClusterSpecYaml(vips, 's.yaml').minHealthyNodes).toBeUndefined();
    expect(parseClusterSpecYaml(`${vips}minHealthyNodes: 1\n`, 's.yaml').minHealthyNodes).toBeUndefined();
    expect(parseClusterSpecYaml(`${vips}minHealthyNodes: 0\n`, 's.yaml').minHealthyNodes).toBe(0);
    expect(parseClusterSpecYaml(`${vips}minHealthyNodes: 3\n`, 's.yaml').minHealthyNodes).toBe(3);
    expect(() => parseClusterSpecYaml(`${vips}minHealthyNodes: -1\n`, 's.yaml')).toThrow(
      's.yaml:3: minHealthyNodes: expected an integer 0..1000 (nodes kept serving when every check fails; 0 = drain them all), got -1',
    );
  });
});
