// The health monitor in process, with real exec checks and a real maintenance file: the node's drain wish follows
// rise/fall and the file, and a probe that throws counts as a failure instead of crashing the agent.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import type { CheckConfig } from '../../src/config/types.js';
import type { HealthEvent } from '../../src/health/events.js';
import { HealthMonitor } from '../../src/health/monitor.js';
import { sleep, waitFor } from './agent-harness.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'cipha-monitor-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const exec = (name: string, target: string[], over: Partial<CheckConfig> = {}): CheckConfig =>
  ({
    name,
    type: 'exec',
    target,
    intervalMs: 50,
    timeoutMs: 50,
    rise: 2,
    fall: 2,
    initial: 'up',
    ...over,
  }) as CheckConfig;

function monitor(checks: CheckConfig[], maintenanceFile?: string, holdMs = 0) {
  const events: HealthEvent[] = [];
  const drains: (string | null)[] = [];
  const m = new HealthMonitor({
    health: { checks, holdMs, ...(maintenanceFile ? { maintenanceFile } : {}) },
    emit: (e) => events.push(e),
    onDrain: (r) => drains.push(r),
    maintenancePollMs: 30,
  });
  return { m, events, drains };
}

describe('HealthMonitor', () => {
  it('drains after fall failures, names the first down check, and undrains after rise successes', async () => {
    const flag = join(dir, 'ok');
    writeFileSync(flag, '');
    const { m, drains, events } = monitor([exec('always', ['true']), exec('file', ['test', '-e', flag])]);
    await m.start();
    try {
      await sleep(200);
      expect(drains).toEqual([]);
      rmSync(flag);
      await waitFor('drained', async () => drains.length === 1, 2000, 10);
      expect(drains).toEqual(['unhealthy:file']);
      expect(m.snapshot().checks.map((c) => [c.name, c.state])).toEqual([
        ['always', 'up'],
        ['file', 'down'],
      ]);
      writeFileSync(flag, '');
      await waitFor('undrained', async () => drains.length === 2, 2000, 10);
      expect(drains[1]).toBeNull();
      const t = events.filter((e) => e.event === 'checkTransition');
      expect(t.map((e) => (e.event === 'checkTransition' ? e.state : ''))).toEqual(['down', 'up']);
    } finally {
      m.stop();
    }
  });

  it('the maintenance file drains with reason maintenance, ahead of a down check', async () => {
    const maint = join(dir, 'maint');
    const { m, drains } = monitor([exec('bad', ['false'], { fall: 1 })], maint);
    await m.start();
    try {
      await waitFor('drained for the check', async () => drains.length === 1, 2000, 10);
      writeFileSync(maint, '');
      await waitFor('maintenance', async () => drains.includes('maintenance'), 2000, 10);
      expect(m.snapshot()).toMatchObject({ drain: 'maintenance', maintenance: true });
      rmSync(maint);
      await waitFor('back to the check', async () => drains[drains.length - 1] === 'unhealthy:bad', 2000, 10);
    } finally {
      m.stop();
    }
  });

  it('a probe that throws is a failed probe (no crash), and initial: down starts drained', async () => {
    const { m, drains, events } = monitor([exec('nul', ['sh\0x'], { initial: 'down', fall: 1, rise: 1 })]);
    await m.start();
    try {
      expect(drains).toEqual(['unhealthy:nul']);
      const r = await waitFor('a result', async () => events.find((e) => e.event === 'checkResult'), 2000, 10);
      expect(r).toMatchObject({ ok: false, failure: 'error' });
    } finally {
      m.stop();
    }
  });

  it('stop() kills a running exec probe with its process group', async () => {
    const marker = `${(process.pid % 300) + 300}.${Date.now() % 10_000}`;
    const { m } = monitor([exec('hang', ['sh', '-c', `sleep ${marker}; true`], { intervalMs: 5000, timeoutMs: 5000 })]);
    await m.start();
    const pgrep = () =>
      run('pgrep', ['-f', `^(sh -c )?sleep ${marker}`]).then(
        (r) => r.stdout.trim(),
        () => '',
      );
    await waitFor('the probe running', async () => (await pgrep()) !== '', 2000, 20);
    m.stop();
    await waitFor('the probe gone', async () => (await pgrep()) === '', 2000, 20);
  });
});
