// The agent refreshes only the buckets its model holds (claimed and applied): an nftables element beyond the
// model has no claim behind it and must time out. Real nft, in a network namespace this test creates.
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NftablesBackend } from '../../src/backends/nftables.js';
import type { ClusterSpec } from '../../src/config/types.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

const run = requireCapability('agent nft refresh', netnsCapability());
const NS = `cipha-harden-${process.pid}-n`;
const VIP = '10.77.0.100';
const spec: ClusterSpec = {
  vips: [
    {
      address: VIP,
      interface: 'eth0',
      buckets: 8,
      hashMode: 'sourceip',
      seed: 0x5eed1234,
      clusterMac: '01:00:5e:4d:00:64',
      sticky: false,
    },
  ],
  rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 },
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.runIf(run)('nftables refresh with `only`', () => {
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NS], { timeout: 20_000 });
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'del', NS], { timeout: 20_000 });
  });

  it('renews the listed buckets only; the other element times out in the kernel', async () => {
    const be = new NftablesBackend({ netns: NS, table: 'cipha_harden' });
    try {
      await be.ensure(spec);
      const t0 = performance.now();
      await be.apply([{ vip: VIP, add: [1, 2], remove: [] }], { holdForMs: 2000 });
      await sleep(500);
      await be.refresh(6000, { only: new Map([[VIP, new Set([1])]]) });
      // Past bucket 2's first timeout (2 s after its add), well inside bucket 1's renewed one.
      await sleep(Math.max(0, 2600 - (performance.now() - t0)));
      expect(await be.read()).toEqual(new Map([[VIP, new Set([1])]]));
    } finally {
      await be.clear().catch(() => undefined);
      await be.close();
    }
  });
});
