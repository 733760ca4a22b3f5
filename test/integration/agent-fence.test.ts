// Issue 3: self-fencing. A frozen agent's file-backend entries expire before anyone else claims its buckets; an
// agent cut off from etcd fences before its lease can expire on the server, and both come back through the
// normal protocol.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseFileBackendText } from '../../src/backends/fileFormat.js';
import { VIP, events, logTime, sleep, startHarness, type Harness } from './agent-harness.js';

const TTL = 2;
let h: Harness | undefined;

afterEach(async () => {
  await h?.stop();
  h = undefined;
});

describe('agent fencing (file backend, real etcd, real processes)', () => {
  it('SIGSTOP past the TTL: entries expire before any survivor claims them; SIGCONT rejoins via the protocol', async () => {
    h = await startHarness({ nodes: ['n1', 'n2', 'n3'], ttl: TTL });
    await h.waitConverged(20_000);
    const victim = 'n1';
    const a = h.agent(victim);
    a.signal('SIGSTOP');
    const stoppedAt = Date.now();
    // The frozen agent's file as it was when it froze: every entry carries its expiry (wall-clock ms).
    const parsed = parseFileBackendText(
      await readFile(join(h.dirs.get(victim)!, VIP), 'utf8').catch(async (e: Error) => {
        throw new Error(e.message + ' dir: ' + (await import('node:fs')).readdirSync(h!.dirs.get(victim)!).join(','));
      }),
    );
    expect(parsed.ok).toBe(true);
    const entries = parsed.ok ? parsed.entries : new Map<number, number | null>();
    expect(entries.size).toBeGreaterThan(0);
    for (const exp of entries.values()) {
      expect(exp).not.toBeNull();
      expect(exp!).toBeLessThanOrEqual(stoppedAt + TTL * 1000);
    }
    // Wait for the survivors to take every frozen bucket (their log lines are written asynchronously).
    const survivors = ['n2', 'n3'];
    for (const [b, exp] of entries) {
      const acq = await Promise.any(
        survivors.map((s) =>
          h!
            .agent(s)
            .waitForLog(
              (l) => l.event === 'acquired' && l.vip === VIP && l.bucket === b && logTime(l) > stoppedAt,
              15_000,
            ),
        ),
      );
      // The survivor's claim txn happened at (acquire log time − its duration); the frozen entry expired before.
      const claimedAt = logTime(acq) - Number(acq.durationMs ?? 0);
      expect(exp!, `bucket ${b}: expiry ${exp} not before the survivor's claim ${claimedAt}`).toBeLessThan(claimedAt);
    }
    a.signal('SIGCONT');
    // It notices: the lease is gone, it fences, takes a new lease and re-registers.
    await a.waitForLog((l) => l.event === 'leaseLost', 10_000);
    await a.waitForLog((l) => l.event === 'sessionStarted' && events(a, 'sessionStarted').length >= 2, 10_000);
    await h.waitConverged(20_000, ['n1', 'n2', 'n3']);
    const report = await h.observer.stop();
    expect(report.violations).toEqual([]);
  });

  it('partitioned from etcd: fences before the lease expires on the server, rejoins after the cut heals', async () => {
    h = await startHarness({ nodes: ['n1', 'n2', 'n3'], ttl: TTL, proxied: ['n3'] });
    await h.waitConverged(20_000);
    const victim = 'n3';
    const a = h.agent(victim);
    // When does the server drop the victim's lease? Its node key vanishes in that revision.
    let nodeKeyGoneAt = 0;
    const w = await h.client.watch().key(h.keys.node(victim)).create();
    w.on('error', () => undefined);
    w.on('delete', () => {
      if (nodeKeyGoneAt === 0) nodeKeyGoneAt = Date.now();
    });
    const cutAt = Date.now();
    h.proxies.get(victim)!.cut('blackhole');
    const fenced = await a.waitForLog((l) => l.event === 'fenced' && logTime(l) >= cutAt - 50, 10_000);
    for (let i = 0; i < 200 && nodeKeyGoneAt === 0; i++) await sleep(25);
    expect(nodeKeyGoneAt, 'the lease never expired on the server').toBeGreaterThan(0);
    expect(fenced.reason).toBe('deadlinePassed');
    // The order that makes it safe: local fence first, server-side expiry after.
    expect(logTime(fenced)).toBeLessThan(nodeKeyGoneAt);
    expect((await h.backendHeld(victim)).size).toBe(0);
    await h.waitConverged(20_000, ['n1', 'n2']);
    h.proxies.get(victim)!.heal();
    await a.waitForLog((l) => l.event === 'sessionStarted' && events(a, 'sessionStarted').length >= 2, 20_000);
    await h.waitConverged(20_000, ['n1', 'n2', 'n3']);
    await w.cancel();
    const report = await h.observer.stop();
    expect(report.violations).toEqual([]);
  });
});
