import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { emptyClusterState } from '../../src/etcd/store.js';
import { attachAgentMetrics } from '../../src/metrics/agentMetrics.js';
import { requireCapability, toolCapability } from '../helpers/privileged.js';

// deploy/prometheus/: the alert rules are valid (`promtool check rules`), fire and stay quiet as the synthetic
// series in clusterip-ha.rules.test.yml say (`promtool test rules`), and name only metrics an agent exports.

const run = promisify(execFile);
const DIR = fileURLToPath(new URL('../../deploy/prometheus/', import.meta.url));
const RULES = 'clusterip-ha.rules.yml';
const TESTS = 'clusterip-ha.rules.test.yml';
const enabled = requireCapability(
  'prometheus rules',
  toolCapability('promtool', ['--version'], 'apt-get install -y prometheus'),
);

describe.runIf(enabled)('prometheus alert rules', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'cipha-promtool-'));
  });
  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('promtool check rules accepts them', async () => {
    const r = await run('promtool', ['check', 'rules', join(DIR, RULES)], { timeout: 30_000 });
    expect(r.stdout).toMatch(/SUCCESS: 7 rules found/);
  });

  it('promtool test rules: every alert fires and stays quiet as the synthetic series expect', async () => {
    const r = await run('promtool', ['test', 'rules', TESTS], { cwd: DIR, timeout: 30_000 });
    expect(r.stdout).toContain('SUCCESS');
  });

  it('the rule tests can fail: a rule that waits too long does not pass them', async () => {
    const rules = (await readFile(join(DIR, RULES), 'utf8')).replace(/for: 30s/, 'for: 5m');
    await writeFile(join(tmp, RULES), rules);
    await copyFile(join(DIR, TESTS), join(tmp, TESTS));
    const failed = await run('promtool', ['test', 'rules', TESTS], { cwd: tmp, timeout: 30_000 }).then(
      () => null,
      (e: { stdout: string; stderr: string }) => e.stdout + e.stderr,
    );
    expect(failed).toMatch(/FAILED[\s\S]*alertname: ClusterIpHaUnownedBuckets/);
  });

  it('names only metrics an agent exports', async () => {
    const rules = await readFile(join(DIR, RULES), 'utf8');
    const used = new Set([...rules.matchAll(/\bclusterip_ha_[a-z_]*[a-z]\b(?!\*)/g)].map((m) => m[0]));
    const m = attachAgentMetrics({ on: () => undefined }, new Registry(), {
      processMetrics: false,
      view: () => emptyClusterState(),
    });
    const exported = new Set((await m.registry.getMetricsAsJSON()).map((x) => x.name));
    expect([...used].filter((n) => !exported.has(n))).toEqual([]);
    expect(used.size).toBeGreaterThanOrEqual(6);
  });
});
