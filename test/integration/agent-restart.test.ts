// Issue 13, DESIGN §13: a planned restart (SIGHUP, `systemctl reload`) leaves lease, claims and kernel entries
// in place and the next process adopts them: no claim changes, no backend changes, no bucket moves. A restart
// that never comes back is a crash, and the crash path stays clean.
import { afterEach, describe, expect, it } from 'vitest';
import { readFileBackendDir } from '../../src/backends/file.js';
import { loadClusterState } from '../../src/etcd/store.js';
import { VIP, sleep, startHarness, teardown, type Harness } from './agent-harness.js';

// Long enough that a fresh process (~0.5–1 s to its first ack here) fits the fence deadline with margin.
const TTL = 4;
let h: Harness | undefined;
afterEach(async () => {
  await teardown(h);
  h = undefined;
});

/** Claims (owner, create and mod revision) and every node's backend content, as one comparable string. */
async function picture(h: Harness): Promise<string> {
  const st = await loadClusterState(h.client, h.keys);
  const claims = [...(st.claims.get(VIP) ?? new Map())]
    .sort((a, b) => a[0] - b[0])
    .map(([b, c]) => `${b}:${c.owner}:${c.lease}:${c.createRevision}:${c.modRevision}`);
  const held: string[] = [];
  for (const [id, dir] of [...h.dirs].sort()) {
    const s = (await readFileBackendDir(dir, Date.now())).get(VIP) ?? new Set();
    held.push(`${id}=${[...s].sort((a, b) => a - b).join(',')}`);
  }
  return `${claims.join(' ')} | ${held.join(' ')}`;
}

/** Sample `picture` every 20 ms while `body` runs; the distinct pictures seen. */
async function watchPictures(h: Harness, body: () => Promise<void>): Promise<Set<string>> {
  const seen = new Set<string>();
  let done = false;
  const sampler = (async () => {
    while (!done) {
      seen.add(await picture(h));
      await sleep(20);
    }
  })();
  try {
    await body();
  } finally {
    done = true;
    await sampler;
  }
  seen.add(await picture(h));
  return seen;
}

async function restart(h: Harness, id: string): Promise<void> {
  const old = h.agent(id);
  old.signal('SIGHUP');
  const exit = await old.waitExit(10_000);
  expect(exit.code, `${id} exit after SIGHUP`).toBe(0);
  expect(old.logs().some((l) => l.event === 'restart' && l.mode === 'planned')).toBe(true);
  const next = h.start(id);
  await next.waitForLog((l) => l.event === 'started', 10_000);
  expect(next.logs().find((l) => l.event === 'sessionStarted')?.adopted).toBe(true);
}

describe('hitless restart (file backend, real etcd, real processes)', () => {
  // The issue asks for 20; CI runs RESTARTS (10 by default) to stay inside the suite's time budget.
  const RESTARTS = Number(process.env.CIPHA_RESTARTS ?? 10);
  it(
    `SIGHUP and start again, ${RESTARTS} times: no claim, no backend entry changes`,
    { timeout: 120_000 },
    async () => {
      h = await startHarness({ nodes: ['n1', 'n2', 'n3'], ttl: TTL });
      await h.waitConverged(20_000);
      const before = await picture(h);
      const seen = await watchPictures(h, async () => {
        for (let i = 0; i < RESTARTS; i++) await restart(h!, 'n2');
      });
      expect([...seen]).toEqual([before]);
      await h.waitConverged(10_000);
      expect((await h.observer.stop()).violations).toEqual([]);
    },
  );

  it('the leader restarts: it keeps leading, nothing moves', async () => {
    h = await startHarness({ nodes: ['n1', 'n2', 'n3'], ttl: TTL });
    await h.waitConverged(20_000);
    const leader = (await h.leader())!;
    const before = await picture(h);
    const seen = await watchPictures(h, async () => {
      for (let i = 0; i < 3; i++) await restart(h!, leader);
    });
    expect([...seen]).toEqual([before]);
    expect(await h.leader()).toBe(leader);
    expect((await h.observer.stop()).violations).toEqual([]);
  });

  it('a restart that never comes back is a crash: its buckets move, never two owners', async () => {
    h = await startHarness({ nodes: ['n1', 'n2', 'n3'], ttl: TTL });
    await h.waitConverged(20_000);
    const a = h.agent('n3');
    a.signal('SIGHUP');
    expect((await a.waitExit(10_000)).code).toBe(0);
    // Nobody adopts: the file entries run out at the recorded deadline, before the lease expires.
    await h.waitConverged(TTL * 1000 + 8000, ['n1', 'n2']);
    expect((await h.observer.stop()).violations).toEqual([]);
    // The next start finds a record whose lease is gone: a fresh start, its orphans released first.
    const b = h.start('n3');
    await b.waitForLog((l) => l.event === 'adoptFailed', 10_000);
    await h.waitConverged(20_000);
  });

  it('the next process killed before it adopts: a crash, its buckets move, never two owners', async () => {
    h = await startHarness({ nodes: ['n1', 'n2', 'n3'], ttl: TTL });
    await h.waitConverged(20_000);
    const a = h.agent('n3');
    a.signal('SIGHUP');
    expect((await a.waitExit(10_000)).code).toBe(0);
    const b = h.start('n3');
    await sleep(100); // it runs (node is still loading its modules), and has not reached its lease yet
    b.signal('SIGKILL');
    await b.waitExit(5000);
    expect(b.logs().some((l) => l.event === 'sessionStarted')).toBe(false);
    await h.waitConverged(TTL * 1000 + 8000, ['n1', 'n2']);
    expect((await h.observer.stop()).violations).toEqual([]);
  });

  it('a TTL too short for the restart budget: SIGHUP drains instead, and says so', async () => {
    h = await startHarness({ nodes: ['n1', 'n2'], ttl: 2, extraArgs: ['--restart-budget', '5000'] });
    await h.waitConverged(20_000);
    const a = h.agent('n2');
    a.signal('SIGHUP');
    expect((await a.waitExit(15_000)).code).toBe(0);
    expect(a.logs().find((l) => l.event === 'restart')).toMatchObject({ mode: 'drain', reason: 'ttlTooShort' });
    expect(a.logs().some((l) => l.event === 'shutdown' && l.reason === 'revoked')).toBe(true);
    await h.waitConverged(10_000, ['n1']);
    expect((await h.observer.stop()).violations).toEqual([]);
  });
});
