// Service health (DESIGN §14, issue #12) against real etcd and real agent processes with the file backend: TCP
// checks against servers this test starts and kills, the maintenance file, the panic threshold, a hanging exec
// check and a flapping one. Intervals are short (200 ms) to keep the suite fast; bounds are generous.
import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { loadClusterState } from '../../src/etcd/store.js';
import { runCli } from '../e2e/cliRun.js';
import { statusJsonSchema } from '../e2e/statusSchema.js';
import { events, sleep, startHarness, waitFor, type Harness } from './agent-harness.js';

const run = promisify(execFile);
const TTL = 2;
const INTERVAL = 200;
const FALL = 2;
const RISE = 2;
const BUCKETS = 12;
let h: Harness | undefined;
const servers: Service[] = [];

afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
  await h?.stop();
  h = undefined;
});

/** A TCP service on loopback that can die and come back on the same port. */
interface Service {
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
}

async function service(): Promise<Service> {
  let server: Server | undefined;
  const sockets = new Set<Socket>();
  let port = 0;
  const s: Service = {
    get port() {
      return port;
    },
    async start() {
      const srv = createServer((c) => {
        sockets.add(c);
        c.on('close', () => sockets.delete(c));
        c.on('error', () => undefined);
      });
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(port, '127.0.0.1', () => resolve());
      });
      port = (srv.address() as { port: number }).port;
      server = srv;
    },
    async stop() {
      const srv = server;
      server = undefined;
      if (!srv) return;
      for (const c of sockets) c.destroy();
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    },
  };
  await s.start();
  servers.push(s);
  return s;
}

function tcpCheck(port: number, over: Record<string, unknown> = {}): string {
  return JSON.stringify([
    {
      name: 'web',
      type: 'tcp',
      target: `127.0.0.1:${port}`,
      intervalMs: INTERVAL,
      timeoutMs: 100,
      rise: RISE,
      fall: FALL,
      ...over,
    },
  ]);
}

async function nodeHealth(id: string): Promise<string | undefined> {
  return (await loadClusterState(h!.client, h!.keys)).nodes.get(id)?.value.health;
}

describe('service health checks', () => {
  it('a dead TCP service drains its node by handoff within fall × interval; it comes back after rise; maintenance file too', async () => {
    const svc = new Map<string, Service>();
    for (const id of ['n1', 'n2', 'n3']) svc.set(id, await service());
    const maint = join(tmpdir(), `cipha-maint-${process.pid}-${Date.now()}`);
    h = await startHarness({
      nodes: ['n1', 'n2', 'n3'],
      ttl: TTL,
      buckets: BUCKETS,
      // A handoff leaves a bucket unowned for milliseconds; anything near a second is a bug.
      unownedBoundMs: 1000,
      argsFor: (id) => [
        '--checks',
        tcpCheck(svc.get(id)!.port),
        '--health-hold',
        '1000',
        ...(id === 'n1' ? ['--maintenance-file', maint] : []),
      ],
    });
    await h.waitConverged(20_000);

    // Kill n2's service: its buckets move away by handoff.
    const killedAt = Date.now();
    await svc.get('n2')!.stop();
    await waitFor('n2 drained', async () => (await h!.backendHeld('n2')).size === 0, 5000, 20);
    const drainMs = Date.now() - killedAt;
    await h.waitConverged(3000, ['n1', 'n3']);
    const convergedMs = Date.now() - killedAt;
    expect(await nodeHealth('n2')).toBe('unhealthy:web');
    const k2 = (await loadClusterState(h.client, h.keys)).nodes.get('n2')!.value;
    expect(k2.draining).toBe(false); // a health drain, not an operator one
    const releases = events(h.agent('n2'), 'released').filter((l) => l.rxAt >= killedAt);
    expect(releases.length).toBe(BUCKETS / 3);
    expect(releases.every((l) => typeof l.node === 'string')).toBe(true); // handoffs, each to a named node
    expect(events(h.agent('n2'), 'fenced')).toEqual([]);
    console.log(
      `health: service death -> drained ${drainMs} ms, converged ${convergedMs} ms (fall×interval ${FALL * INTERVAL} ms)`,
    );
    // fall × interval, one interval of phase, then one handoff: generous for a loaded 2-core machine.
    expect(drainMs).toBeLessThan(FALL * INTERVAL + INTERVAL + 1500);

    // `status --json` (the documented schema) and the table show the drain, the check and its last output.
    const conn = ['--etcd-endpoints', h.etcd.endpoints.join(','), '--cluster', h.cluster];
    const doc = await waitFor(
      'status showing the down check',
      async () => {
        const d = statusJsonSchema.parse(JSON.parse((await runCli(['status', '--json', ...conn])).stdout));
        return d.nodes.find((n) => n.id === 'n2')?.checks?.[0]?.state === 'down' ? d : null;
      },
      5000,
    );
    const n2 = doc.nodes.find((n) => n.id === 'n2')!;
    expect(n2.health).toBe('unhealthy:web');
    expect(n2.checks![0]!.last).toMatchObject({ ok: false, failure: 'refused' });
    expect(n2.checks![0]!.last!.output).toContain('ECONNREFUSED');
    expect(doc.anomalies.map((a) => a.kind)).toContain('unhealthy');
    const table = (await runCli(['status', ...conn])).stdout;
    expect(table).toMatch(/CHECKS[\s\S]*n2\s+web\s+tcp\s+down/);

    // Bring it back: rise successes, no sooner than the hold, then the join policy gives buckets back.
    const backAt = Date.now();
    await svc.get('n2')!.start();
    await waitFor('n2 assignable again', async () => (await nodeHealth('n2')) === undefined, 5000);
    const backMs = Date.now() - backAt;
    await h.waitConverged(8000);
    expect((await h.backendHeld('n2')).size).toBe(BUCKETS / 3);
    const drained = events(h.agent('n2'), 'healthDrain');
    expect(drained.map((l) => l.change)).toEqual(expect.arrayContaining(['drain', 'undrain']));
    console.log(`health: service back -> assignable ${backMs} ms (rise×interval ${RISE * INTERVAL} ms)`);

    // The maintenance file drains n1 (reason maintenance) and its removal undrains it.
    await writeFile(maint, '');
    try {
      await waitFor('n1 in maintenance', async () => (await nodeHealth('n1')) === 'maintenance', 3000);
      await h.waitConverged(5000, ['n2', 'n3']);
    } finally {
      await rm(maint, { force: true });
    }
    await waitFor('n1 back from maintenance', async () => (await nodeHealth('n1')) === undefined, 4000);
    await h.waitConverged(8000);

    // An operator drain is kept apart: n3's check failing and recovering does not undo it.
    const before = (await loadClusterState(h.client, h.keys)).nodes.get('n3')!;
    await h.client
      .put(h.keys.node('n3'))
      .value(JSON.stringify({ ...before.value, draining: true }))
      .lease(before.lease);
    await h.waitConverged(5000, ['n1', 'n2']);
    await svc.get('n3')!.stop();
    await waitFor('n3 unhealthy', async () => (await nodeHealth('n3')) === 'unhealthy:web', 3000);
    await svc.get('n3')!.start();
    await waitFor('n3 healthy', async () => (await nodeHealth('n3')) === undefined, 5000);
    await sleep(500);
    const n3 = (await loadClusterState(h.client, h.keys)).nodes.get('n3')!.value;
    expect(n3.draining).toBe(true);
    expect((await h.backendHeld('n3')).size).toBe(0);

    expect((await h.observer.stop()).violations).toEqual([]);
  }, 60_000);

  it('panic threshold: when every node fails, the leader keeps minHealthyNodes (1) serving, in node id order', async () => {
    const svc = new Map<string, Service>();
    for (const id of ['n1', 'n2', 'n3']) svc.set(id, await service());
    h = await startHarness({
      nodes: ['n1', 'n2', 'n3'],
      ttl: TTL,
      buckets: BUCKETS,
      unownedBoundMs: 1000,
      argsFor: (id) => ['--checks', tcpCheck(svc.get(id)!.port), '--health-hold', '500'],
    });
    await h.waitConverged(20_000);
    const killedAt = Date.now();
    // n1 first (its buckets go to n2, n3), then n2, then n3: the last one's buckets must go to n1, kept by panic.
    for (const id of ['n1', 'n2', 'n3']) {
      await svc.get(id)!.stop();
      await waitFor(`${id} unhealthy`, async () => (await nodeHealth(id)) === 'unhealthy:web', 5000);
    }
    await waitFor(
      'every node unhealthy',
      async () => {
        const st = await loadClusterState(h!.client, h!.keys);
        return ['n1', 'n2', 'n3'].every((id) => st.nodes.get(id)?.value.health === 'unhealthy:web');
      },
      5000,
    );
    // n1 (first by id) keeps every bucket; the VIP never goes dark.
    await h.waitConverged(5000, ['n1']);
    const leader = (await h.leader())!;
    const panic = await h
      .agent(leader)
      .waitForLog((l) => l.event === 'healthPanic' && l.reason === 'panicThreshold' && Array.isArray(l.kept), 3000);
    expect(panic.kept).toEqual(['n1']);
    expect(panic.level).toBe(50); // error: loud
    // Every bucket moved by handoff, those to the panic-kept n1 included (never a plain delete + re-acquire).
    const moved = ['n1', 'n2', 'n3'].flatMap((id) =>
      events(h!.agent(id), 'released').filter((l) => l.rxAt >= killedAt),
    );
    expect(moved.length).toBeGreaterThan(0);
    expect(moved.filter((l) => l.node === undefined)).toEqual([]);
    expect(moved.some((l) => l.node === 'n1')).toBe(true);

    for (const s of svc.values()) await s.start();
    await waitFor(
      'every node healthy',
      async () => {
        const st = await loadClusterState(h!.client, h!.keys);
        return ['n1', 'n2', 'n3'].every((id) => st.nodes.get(id)?.value.health === undefined);
      },
      5000,
    );
    await h.waitConverged(8000);
    expect((await h.observer.stop()).violations).toEqual([]);
  }, 45_000);

  it('a hanging exec check is killed at its timeout (whole process group); a flapping check moves buckets at most once per hold', async () => {
    const marker = `${(process.pid % 1000) + 1}.${Date.now() % 100_000}`;
    const flapFile = join(tmpdir(), `cipha-flap-${process.pid}-${Date.now()}`);
    const hold = 1500;
    h = await startHarness({
      nodes: ['n1', 'n2', 'n3'],
      ttl: TTL,
      buckets: BUCKETS,
      unownedBoundMs: 1000,
      argsFor: (id) =>
        id === 'n1'
          ? [
              '--checks',
              JSON.stringify([
                // `sh` stays the group leader while its child sleeps: both must die at the timeout.
                {
                  name: 'hang',
                  type: 'exec',
                  target: ['sh', '-c', `sleep ${marker}; true`],
                  intervalMs: 300,
                  timeoutMs: 150,
                  fall: 1,
                },
              ]),
            ]
          : id === 'n2'
            ? [
                '--checks',
                JSON.stringify([
                  {
                    name: 'flap',
                    type: 'exec',
                    target: ['test', '-e', flapFile],
                    intervalMs: 100,
                    timeoutMs: 100,
                    rise: 1,
                    fall: 1,
                  },
                ]),
                '--health-hold',
                String(hold),
              ]
            : [],
    });
    await writeFile(flapFile, '');
    try {
      await waitFor('n1 unhealthy', async () => (await nodeHealth('n1')) === 'unhealthy:hang', 5000);
      const failed = await h.agent('n1').waitForLog((l) => l.event === 'checkResult' && l.ok === false, 3000);
      expect(failed.reason).toBe('timeout');
      expect(failed.durationMs as number).toBeLessThan(1000);
      // No sleeper is left behind: every probe's sh and sleep are gone once the next probes run.
      const sleepers = async (): Promise<string[]> => {
        const r = await run('pgrep', ['-af', `sleep ${marker}`]).catch(() => ({ stdout: '' }));
        return r.stdout
          .split('\n')
          .filter((l) => /^\d+ (sh -c )?sleep /.test(l))
          .map((l) => l.split(' ')[0]!);
      };
      const first = await waitFor(
        'a probe running',
        async () => ((await sleepers()).length > 0 ? sleepers() : null),
        3000,
      );
      await sleep(700);
      const later = await sleepers();
      expect(later.filter((p) => first.includes(p))).toEqual([]);
      expect(later.length).toBeLessThanOrEqual(2);
      expect(events(h.agent('n1'), 'fenced')).toEqual([]);

      // Flap n2's check every 250 ms for 4.5 s.
      await h.waitConverged(8000, ['n2', 'n3']);
      const t0 = Date.now();
      for (let i = 0; i < 18; i++) {
        if (i % 2 === 0) await rm(flapFile, { force: true });
        else await writeFile(flapFile, '');
        await sleep(250);
      }
      await writeFile(flapFile, '');
      const elapsed = Date.now() - t0;
      const since = (name: string, change?: string) =>
        events(h!.agent('n2'), name).filter((l) => l.rxAt >= t0 && (change === undefined || l.change === change));
      const drains = since('healthDrain', 'drain').length;
      const transitions = since('checkTransition').length;
      const flaps = since('checkTransition').filter((l) => l.flap === true).length;
      console.log(
        `health: flapping ${elapsed} ms -> ${transitions} transitions (${flaps} flaps), ${drains} drains (hold ${hold} ms)`,
      );
      expect(transitions).toBeGreaterThanOrEqual(8);
      expect(flaps).toBeGreaterThanOrEqual(4);
      expect(drains).toBeLessThanOrEqual(Math.ceil(elapsed / hold) + 1);
      expect(drains).toBeGreaterThanOrEqual(1);
    } finally {
      await rm(flapFile, { force: true });
    }
    expect((await h.observer.stop()).violations).toEqual([]);
  }, 45_000);
});
