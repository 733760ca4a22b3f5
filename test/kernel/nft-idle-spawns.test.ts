import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDataplane } from '../../src/netns/dataplane.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// DESIGN §16: in steady state an agent on libnftables starts no process. Every `nft` the agents could run is found
// through PATH, where this test puts a wrapper that logs each call before running the real nft; the agents'
// start-up calls are the control case (the wrapper does see them). Needs root and `npm run build`.

const enabled = requireCapability('nftables idle spawns', netnsCapability());
const IDLE_MS = 10_000;

let dir = '';
let log = '';
const calls = (): number => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean).length : 0);

describe.runIf(enabled)('an idle agent on libnftables spawns no process', () => {
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'cipha-spawns-'));
    log = join(dir, 'calls.log');
    const nft = execFileSync('sh', ['-c', 'command -v nft'], { encoding: 'utf8' }).trim();
    writeFileSync(join(dir, 'nft'), `#!/bin/sh\necho "$*" >> ${log}\nexec ${nft} "$@"\n`);
    chmodSync(join(dir, 'nft'), 0o755);
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`none in ${IDLE_MS / 1000} s of a settled cluster (TTL 2 s: ~15 fence refreshes per agent)`, async () => {
    const dp = await buildDataplane({
      nodes: ['n1', 'n2'],
      sources: 20,
      leaseTtlSeconds: 2,
      agentArgs: ['--nft-transport', 'libnftables'],
      agentEnvOf: () => ({ PATH: `${dir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` }),
    });
    try {
      await dp.waitSettled({ timeoutMs: 45_000 });
      // The control: at start each agent ran nft through the wrapper (the probe and the version check), so the
      // wrapper is what the agents find.
      const atStart = calls();
      await new Promise((r) => setTimeout(r, IDLE_MS));
      const during = calls() - atStart;
      for (const [node, a] of dp.agents) expect(a.exited(), `${node} still running`).toBeNull();
      console.log(`nft processes: ${atStart} at start (2 agents), ${during} in ${IDLE_MS / 1000} s idle`);
      expect(atStart).toBeGreaterThanOrEqual(4);
      expect(during).toBe(0);
    } finally {
      await dp.destroy();
    }
  }, 120_000);
});
