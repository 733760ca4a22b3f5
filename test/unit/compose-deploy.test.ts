import { existsSync, readFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { parse, parseDocument } from 'yaml';
import { describe, expect, it } from 'vitest';
import {
  envVarFor,
  loadClusterSpecFile,
  loadNodeConfig,
  NODE_OPTIONS,
  parseClusterSpecYaml,
} from '../../src/config/index.js';
import { attachAgentMetrics } from '../../src/metrics/agentMetrics.js';
import { DEMO_SPEC_YAML } from '../../src/cli/demoSpec.js';

// No Docker engine or Kubernetes runs here, so the deploy files are checked against the code instead: every
// path they name exists, every CLUSTERIP_HA_* variable is a real option, configs validate, ports line up, and
// the dashboard only queries metrics the agent exports.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');
const REAL_ENV = new Set([...NODE_OPTIONS.map((o) => envVarFor(o.flag)), 'CLUSTERIP_HA_CONFIG']);

interface Service {
  build?: { context: string; dockerfile: string };
  image?: string;
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  command?: string[];
  cap_add?: string[];
  networks?: Record<string, { ipv4_address?: string }> | string[];
  depends_on?: unknown;
}

function compose(): {
  services: Record<string, Service>;
  networks: Record<string, { ipam: { config: { subnet: string }[] } }>;
} {
  const doc = parseDocument(read('docker-compose.yml'), { merge: true });
  expect(doc.errors).toEqual([]);
  return doc.toJS({ maxAliasCount: 100 }) as ReturnType<typeof compose>;
}

/** Env of a service as the container sees it (the image's ENV + compose environment), with the config file
 *  path translated from the container to the host through the service's volume mounts. */
function envOf(s: Service): Record<string, string> {
  const env: Record<string, string> = { CLUSTERIP_HA_CONFIG: IMAGE_CONFIG, ...(s.environment ?? {}) };
  const mount = (s.volumes ?? []).map((v) => v.split(':')).find(([, inside]) => inside === env.CLUSTERIP_HA_CONFIG);
  expect(mount, `nothing mounted at ${env.CLUSTERIP_HA_CONFIG}`).toBeDefined();
  env.CLUSTERIP_HA_CONFIG = join(ROOT, mount![0]!);
  return env;
}
const IMAGE_CONFIG = /^ENV CLUSTERIP_HA_CONFIG=(\S+)$/m.exec(read('deploy/Dockerfile'))![1]!;

describe('docker-compose.yml', () => {
  const c = compose();
  const svc = c.services;

  it('has a 3-member etcd cluster, 3 agents, an apply job and a client', () => {
    const etcds = Object.keys(svc).filter((n) => /^etcd\d$/.test(n));
    expect(etcds).toEqual(['etcd1', 'etcd2', 'etcd3']);
    const initial = svc.etcd1!.environment!.ETCD_INITIAL_CLUSTER!.split(',').map((m) => m.split('=')[0]);
    expect(initial).toEqual(etcds);
    for (const e of etcds) {
      expect(svc[e]!.environment!.ETCD_NAME).toBe(e);
      expect(svc[e]!.environment!.ETCD_ADVERTISE_CLIENT_URLS).toBe(`http://${e}:2379`);
    }
    expect(['n1', 'n2', 'n3'].every((n) => svc[n] !== undefined)).toBe(true);
    expect(svc.client).toBeDefined();
    expect(svc.apply).toBeDefined();
  });

  it('builds from this repository with the Dockerfile that exists', () => {
    for (const [name, s] of Object.entries(svc)) {
      if (!s.build) continue;
      expect(existsSync(join(ROOT, s.build.context)), name).toBe(true);
      expect(existsSync(join(ROOT, s.build.context, s.build.dockerfile)), name).toBe(true);
    }
    const df = read('deploy/Dockerfile');
    // Every COPY source of the Dockerfile exists in the build context.
    for (const m of df.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
      for (const src of m[1]!.split(/\s+/)) expect(existsSync(join(ROOT, src)), src).toBe(true);
    }
    expect(df).toMatch(/ENTRYPOINT \["clusterip-ha"\]/);
    expect(df).toContain('dist/cli/main.js');
  });

  it('mounts files that exist, and they validate with the real loaders', async () => {
    for (const [name, s] of Object.entries(svc)) {
      for (const v of s.volumes ?? []) {
        const [host] = v.split(':');
        expect(existsSync(join(ROOT, host!)), `${name}: ${v}`).toBe(true);
      }
    }
    const node = await loadNodeConfig({
      flags: { nodeId: 'n1' },
      env: {},
      configFile: join(ROOT, 'deploy/docker/node.yaml'),
    });
    expect(node.backend.kind).toBe('nftables');
    const spec = await loadClusterSpecFile(join(ROOT, 'deploy/examples/cluster.yaml'), { backend: 'nftables' });
    // The VIPs are inside the compose network, so the client can reach them.
    const subnet = c.networks.vipnet?.ipam.config[0]?.subnet;
    expect(subnet).toBe('10.77.0.0/24');
    for (const v of spec.vips) expect(v.address.startsWith('10.77.0.')).toBe(true);
    // The agents add exactly the spec's VIPs to eth0.
    const agentCmd = svc.n1!.command!.join(' ');
    for (const v of spec.vips) expect(agentCmd).toContain(`ip addr add ${v.address}/32 dev eth0`);
    expect(svc.client!.command!.join(' ')).toContain(`http://${spec.vips[0]!.address}:8080/`);
    // whoami listens where the client calls.
    expect(read('deploy/docker/whoami.mjs')).toContain('listen(8080');
  });

  it('uses only real CLUSTERIP_HA_* variables, and agents agree on etcd, cluster and node ids', async () => {
    const nodeFile = parse(read('deploy/docker/node.yaml')) as {
      cluster: string;
      etcd: { endpoints: string[] };
      metricsListen: string;
    };
    for (const [name, s] of Object.entries(svc)) {
      for (const k of Object.keys(s.environment ?? {})) {
        if (k.startsWith('CLUSTERIP_HA_')) expect(REAL_ENV.has(k), `${name}: ${k}`).toBe(true);
      }
    }
    for (const n of ['n1', 'n2', 'n3']) {
      const s = svc[n]!;
      expect(s.environment!.CLUSTERIP_HA_NODE_ID).toBe(n);
      expect(s.cap_add).toContain('NET_ADMIN');
      const cfg = await loadNodeConfig({ flags: {}, env: envOf(s) as NodeJS.ProcessEnv });
      expect(cfg.nodeId).toBe(n);
      expect(cfg.cluster).toBe(nodeFile.cluster);
      // Published metrics port maps to the port the agent listens on.
      const listen = cfg.metricsListen;
      expect(listen).not.toBe('off');
      const [, , container] = s.ports![0]!.split(':');
      expect(Number(container)).toBe((listen as { port: number }).port);
    }
    // etcd endpoints name the compose etcd services on their client port.
    for (const e of nodeFile.etcd.endpoints) expect(e).toMatch(/^http:\/\/etcd[123]:2379$/);
    expect(svc.apply!.environment!.CLUSTERIP_HA_ETCD_ENDPOINTS!.split(',')).toEqual(nodeFile.etcd.endpoints);
    expect(svc.apply!.environment!.CLUSTERIP_HA_CLUSTER).toBe(nodeFile.cluster);
    expect(svc.apply!.command!.join(' ')).toContain('clusterip-ha apply -f /etc/clusterip-ha/cluster.yaml');
    const ports = Object.values(svc).flatMap((s) => (s.ports ?? []).map((p) => p.split(':').slice(0, 2).join(':')));
    expect(new Set(ports).size).toBe(ports.length);
  });
});

describe('deploy/', () => {
  it('example configs validate', async () => {
    const cfg = await loadNodeConfig({ flags: {}, env: {}, configFile: join(ROOT, 'deploy/examples/node.yaml') });
    expect(cfg).toMatchObject({ nodeId: 'node-a', cluster: 'prod-web', leaseTtlSeconds: 2 });
    expect(cfg.etcd.endpoints).toHaveLength(3);
    expect(cfg.health.checks.map((c) => [c.name, c.type, c.rise, c.fall])).toEqual([['web', 'http', 2, 2]]);
    expect(cfg.health.maintenanceFile).toBe('/etc/clusterip-ha/maintenance');
    const spec = await loadClusterSpecFile(join(ROOT, 'deploy/examples/cluster.yaml'), { backend: 'clusterip' });
    expect(spec.vips.length).toBeGreaterThan(0);
    expect(parseClusterSpecYaml(DEMO_SPEC_YAML, 'demo', { backend: 'file' }).vips).toHaveLength(2);
  });

  it('the systemd unit restarts, fences after stop, keeps only CAP_NET_ADMIN and CAP_NET_RAW and reads /etc/clusterip-ha', () => {
    const unit = read('deploy/systemd/clusterip-ha.service');
    const kv = new Map<string, string[]>();
    for (const line of unit.split('\n')) {
      const m = /^([A-Za-z]+)=(.*)$/.exec(line);
      if (m) kv.set(m[1]!, [...(kv.get(m[1]!) ?? []), m[2]!]);
    }
    expect(kv.get('Restart')).toEqual(['always']);
    expect(kv.get('ExecStopPost')).toEqual(['/usr/bin/clusterip-ha fence']);
    expect(kv.get('ExecStart')).toEqual(['/usr/bin/clusterip-ha agent']);
    // iptables-legacy needs CAP_NET_RAW (test/kernel/systemd-unit.test.ts runs the unit with exactly these).
    expect(kv.get('CapabilityBoundingSet')).toEqual(['CAP_NET_ADMIN CAP_NET_RAW']);
    expect(kv.get('AmbientCapabilities')).toEqual(['CAP_NET_ADMIN CAP_NET_RAW']);
    expect(kv.get('NoNewPrivileges')).toEqual(['yes']);
    expect(kv.get('ProtectSystem')).toEqual(['strict']);
    expect(kv.get('Environment')).toEqual(['CLUSTERIP_HA_CONFIG=/etc/clusterip-ha/node.yaml']);
    for (const e of kv.get('Environment') ?? []) expect(REAL_ENV.has(e.split('=')[0]!)).toBe(true);
  });

  it('the DaemonSet runs on the host network with NET_ADMIN and NET_RAW only and probes the health endpoints', () => {
    const docs = read('deploy/kubernetes/daemonset.yaml')
      .split(/^---$/m)
      .map((d) => parse(d) as Record<string, unknown>);
    const ds = docs.find((d) => d.kind === 'DaemonSet') as {
      spec: {
        template: {
          spec: {
            hostNetwork: boolean;
            containers: {
              env: { name: string }[];
              securityContext: { capabilities: { add: string[]; drop: string[] } };
              livenessProbe: { httpGet: { path: string; port: number } };
              readinessProbe: { httpGet: { path: string; port: number } };
            }[];
          };
        };
      };
    };
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    const c = pod.containers[0]!;
    expect(c.securityContext.capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    for (const e of c.env) expect(REAL_ENV.has(e.name), e.name).toBe(true);
    const cm = docs.find((d) => d.kind === 'ConfigMap') as { data: Record<string, string> };
    const nodeYaml = parse(cm.data['node.yaml']!) as { metricsListen: string; backend: { kind: string } };
    expect(nodeYaml.metricsListen.endsWith(`:${c.livenessProbe.httpGet.port}`)).toBe(true);
    expect(nodeYaml.backend.kind).toBe('nftables');
  });

  it('the Grafana dashboard only queries metrics the agent exports', async () => {
    const registry = new Registry();
    attachAgentMetrics(new EventEmitter(), registry);
    const exported = new Set(
      (await registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => n.startsWith('clusterip_ha_')),
    );
    const dash = JSON.parse(read('deploy/grafana/clusterip-ha.json')) as {
      panels: { targets: { expr: string }[] }[];
      templating: { list: { query: unknown }[] };
    };
    const exprs = [
      ...dash.panels.flatMap((p) => p.targets.map((t) => t.expr)),
      ...dash.templating.list.map((t) => String(t.query)),
    ];
    const used = new Set(
      exprs.flatMap((e) =>
        [...e.matchAll(/\b(clusterip_ha_[a-z_]+)/g)].map((m) => m[1]!.replace(/_(bucket|sum|count)$/, '')),
      ),
    );
    expect(used.size).toBeGreaterThan(10);
    for (const u of used) expect(exported.has(u), u).toBe(true);
    // Every exported metric is on the dashboard somewhere.
    for (const e of exported) expect(used.has(e), `${e} is not on the dashboard`).toBe(true);
  });
});
