import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../src/localcluster/cluster.js';
import { applyWithCli, changedSpec } from '../../src/chaos/clusterOps.js';

// Every fault kind of the chaos schedule once, alone, on a 4-agent cluster (real etcd, real processes), each
// undone and followed by convergence; the observer must see no violation across all of them. A failure here
// names the one fault that breaks the promise, where a random chaos run only names a seed. Needs `npm run build`.

const TTL_S = 2;
let lc: LocalCluster;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A running non-leader node that holds at least one bucket in its backend. */
function victim(): string {
  const leader = lc.observer.cluster().leader;
  const holders = new Set<string>();
  for (const m of lc.observer.backendHolders().values()) for (const h of m.values()) h.forEach((n) => holders.add(n));
  const n = lc.nodes().find((x) => x.run === 'running' && x.id !== leader && holders.has(x.id));
  if (!n) throw new Error('no running non-leader node holds a bucket');
  return n.id;
}

/** Converged, still converged after every lease of the fault's time has had its chance to expire, no violation. */
async function converged(what: string): Promise<void> {
  for (const phase of ['first', 'after TTL + 1 s']) {
    if (phase !== 'first') await sleep(TTL_S * 1000 + 1000);
    const ok = await lc.waitConverged(40_000);
    const problems = JSON.stringify(lc.observer.convergence().problems.slice(0, 3));
    expect(ok, `${what}: converged (${phase}) ${problems}`).toBe(true);
  }
  await lc.observer.caughtUp();
  expect(lc.observer.violations(), `${what}: no violation`).toEqual([]);
}

beforeAll(async () => {
  lc = await startLocalCluster({ agents: 4, etcdMembers: 1, leaseTtlSeconds: TTL_S });
  await converged('start');
}, 120_000);

afterAll(async () => {
  await lc?.stop();
});

describe('each chaos fault alone', () => {
  it('SIGKILL and restart', async () => {
    const id = victim();
    const end = lc.observer.impair(id, 'kill');
    await lc.kill(id, 'SIGKILL');
    await sleep(500);
    await lc.restart(id);
    end();
    await converged('kill');
  }, 60_000);

  it('SIGSTOP past the fence deadline but shorter than the TTL, then SIGCONT', async () => {
    const id = victim();
    const end = lc.observer.impair(id, 'stopShort');
    lc.freeze(id);
    await sleep(TTL_S * 1000 - 250);
    lc.thaw(id);
    end();
    await converged('stopShort');
  }, 60_000);

  it('SIGSTOP longer than the TTL, then SIGCONT', async () => {
    const id = victim();
    const end = lc.observer.impair(id, 'stopLong');
    lc.freeze(id);
    await sleep(TTL_S * 1000 + 1000);
    lc.thaw(id);
    end();
    await converged('stopLong');
  }, 60_000);

  it('cut off from etcd (blackhole) longer than the TTL, then healed', async () => {
    const id = victim();
    const end = lc.observer.impair(id, 'partitionLong');
    lc.partition(id, 'blackhole');
    await sleep(TTL_S * 1000 + 1000);
    lc.heal(id);
    end();
    await converged('partitionLong');
  }, 60_000);

  it('cut off from etcd (reset) shorter than the TTL, then healed', async () => {
    const id = victim();
    const end = lc.observer.impair(id, 'partitionShort');
    lc.partition(id, 'reset');
    await sleep(TTL_S * 1000 - 600);
    lc.heal(id);
    end();
    await converged('partitionShort');
  }, 60_000);

  it('drain and undrain (graceful moves, no impairment)', async () => {
    const id = victim();
    expect(await lc.drain(id)).toBe(true);
    await converged('drain');
    expect(await lc.undrain(id)).toBe(true);
    await converged('undrain');
  }, 90_000);

  it('SIGTERM (graceful exit) and restart', async () => {
    const id = victim();
    await lc.terminate(id);
    await converged('terminate');
    await lc.restart(id);
    await converged('restart after terminate');
  }, 90_000);

  it('SIGHUP (systemctl reload) and start at once: hitless, or a drain when the TTL leaves no headroom', async () => {
    const id = victim();
    await lc.kill(id, 'SIGHUP');
    await lc.restart(id);
    await converged('SIGHUP restart');
  }, 90_000);

  it('SIGKILL the leader', async () => {
    const leader = lc.observer.cluster().leader;
    expect(leader).toBeTruthy();
    const end = lc.observer.impair(leader!, 'killLeader');
    await lc.kill(leader!, 'SIGKILL');
    await sleep(300);
    await lc.restart(leader!);
    end();
    await converged('killLeader');
  }, 60_000);

  it("a second agent with a live node's id refuses to start (exit 1); nothing double-owns", async () => {
    const id = victim();
    const { label, exit } = await lc.startClone(id, 15_000);
    expect(exit, `${label} exited`).toEqual({ code: 1, signal: null });
    await converged('duplicateId');
  }, 60_000);

  it('half the backend writes fail and a quarter stall (clears included), then the fault ends', async () => {
    const id = victim();
    const end = lc.observer.impair(id, 'backendFault');
    await lc.setWriteFaults(id, { seed: 3, failShare: 0.5, stallShare: 0.25, stallMs: 300 });
    // A drain makes the node write (releases) under the fault.
    expect(await lc.drain(id)).toBe(true);
    await sleep(2500);
    await lc.setWriteFaults(id, null);
    end();
    expect(await lc.undrain(id)).toBe(true);
    await converged('backendFault');
  }, 60_000);

  it('apply a new bucket count, then an added VIP, through the CLI; then the old spec again', async () => {
    const before = lc.observer.cluster().spec!.spec;
    const end = lc.observer.impair(null, 'specChange');
    for (const pick of [0.0001, 0.02]) {
      const { change, spec } = changedSpec(before, pick);
      await applyWithCli(lc.etcd.endpoints, lc.cluster, spec);
      await converged(`specChange ${change}`);
    }
    await applyWithCli(lc.etcd.endpoints, lc.cluster, before);
    end();
    await converged('spec reverted');
  }, 90_000);

  it('add a node, then it leaves gracefully', async () => {
    const id = await lc.addNode();
    await converged('addNode');
    await lc.terminate(id);
    await converged('added node left');
    const r = await lc.finish({ expectConverged: true });
    expect(r.violations).toEqual([]);
  }, 90_000);
});
