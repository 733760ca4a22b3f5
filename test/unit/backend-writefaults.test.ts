import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FileBackend } from '../../src/backends/file.js';
import { decideWriteFault, WriteFaults } from '../../src/backends/writeFaults.js';
import { defaultSpec } from '../../src/localcluster/cluster.js';

// The chaos backend-fault hook: a seeded share of file-backend writes (clears included) fails or stalls while the
// control file says so, and none once it is gone.

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cipha-wf-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('write faults', () => {
  it('decides by the shares: fail first, then stall', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 0.5, noNaN: true }),
        fc.double({ min: 0, max: 0.5, noNaN: true }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (failShare, stallShare, draw) => {
          const d = decideWriteFault({ seed: 1, failShare, stallShare, stallMs: 1 }, draw);
          expect(d).toBe(draw < failShare ? 'fail' : draw < failShare + stallShare ? 'stall' : 'write');
        },
      ),
    );
  });

  it('fails the share of writes and clears the control file names, and none without it', async () => {
    const control = join(dir, 'faults.json');
    const backend = new FileBackend({ dir: join(dir, 'b'), faults: new WriteFaults(control) });
    await backend.ensure(defaultSpec(16));
    const tries = async (n: number): Promise<number> => {
      let failed = 0;
      for (let i = 0; i < n; i++) {
        try {
          if (i % 2 === 0) await backend.apply([{ vip: '10.77.0.100', add: [1 + (i % 16)], remove: [] }]);
          else await backend.clear();
        } catch (err) {
          expect((err as Error).message).toMatch(/injected write failure/);
          failed++;
        }
      }
      return failed;
    };
    expect(await tries(50)).toBe(0);
    await writeFile(control, JSON.stringify({ seed: 5, failShare: 0.5, stallShare: 0, stallMs: 0 }));
    const failed = await tries(200);
    expect(failed).toBeGreaterThan(60);
    expect(failed).toBeLessThan(140);
    await rm(control);
    expect(await tries(50)).toBe(0);
  });

  it('stalls the share it names', async () => {
    const control = join(dir, 'faults.json');
    await writeFile(control, JSON.stringify({ seed: 9, failShare: 0, stallShare: 1, stallMs: 60 }));
    const backend = new FileBackend({ dir: join(dir, 'b'), faults: new WriteFaults(control) });
    const t0 = performance.now();
    await backend.ensure(defaultSpec(16)); // one write: the VIP's empty file
    await backend.clear();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(110);
  });
});
