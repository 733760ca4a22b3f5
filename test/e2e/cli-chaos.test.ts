import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from './cliRun.js';

// The `chaos` subcommand's wiring: flags reach runChaos, the report lands where --report says, exit 0 without
// violations and 1 with. (The chaos engine itself is tested by its own suites; this is a short seeded run.)

describe('clusterip-ha chaos', () => {
  it('runs a short seeded schedule and writes its report', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cipha-cli-chaos-'));
    try {
      const r = await runCli(['chaos', '--agents', '3', '--faults', '2', '--seed', '7', '--report', dir], {
        timeoutMs: 150_000,
      });
      // The flags reached the engine: seed, agent count, fault count, report directory.
      expect(r.stderr).toMatch(/chaos: seed 7 .*3 agents, 1 etcd member/);
      expect(r.stderr).toMatch(/chaos seed=7 ran .*, 2 faults/);
      expect(await readdir(dir)).toEqual(expect.arrayContaining(['report.txt', 'report.json']));
      // The exit code is the verdict of the report (whether the run was clean is the chaos suites' business).
      const clean = /violations: none/.test(r.stderr);
      expect(clean || /VIOLATIONS: \d+/.test(r.stderr)).toBe(true);
      expect(r.code).toBe(clean ? 0 : 1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
