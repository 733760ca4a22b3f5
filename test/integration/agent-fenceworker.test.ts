// The fence worker fires at the deadline even while the main thread's event loop is blocked, and clears the
// backend itself (here the file backend) before telling the main thread.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { monoNow } from '../../src/agent/clock.js';
import { FenceTimer, type FencedMessage } from '../../src/agent/fence.js';
import { FileBackend, readFileBackendDir, readFileBackendDirSync } from '../../src/backends/file.js';
import { parseClusterSpecYaml } from '../../src/config/index.js';
import { specYaml, VIP } from './agent-harness.js';

describe('fence worker', () => {
  it('clears the backend at the deadline while the main loop is stalled', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cipha-fence-'));
    const fb = new FileBackend({ dir });
    await fb.ensure(parseClusterSpecYaml(specYaml(8), 'spec'));
    await fb.apply([{ vip: VIP, add: [1, 2, 3], remove: [] }], { holdForMs: 60_000 });
    const got: FencedMessage[] = [];
    const ft = await FenceTimer.start({
      backend: { kind: 'file', dir },
      nodeId: 'n1',
      onFenced: (m) => got.push(m),
      onWorkerError: (e) => {
        throw e;
      },
    });
    try {
      const deadline = monoNow() + 200;
      ft.setDeadline(deadline);
      // Block the main thread for 1 s: no timers, no I/O callbacks here.
      const until = monoNow() + 1000;
      let heldDuringStall = -1;
      while (monoNow() < until) {
        if (heldDuringStall === -1 && monoNow() > deadline + 100) {
          // Read synchronously: the worker must already have emptied the file.
          heldDuringStall = readFileBackendDirSync(dir, Date.now()).get(VIP)?.size ?? 0;
        }
      }
      expect(ft.isFenced()).toBe(true);
      expect(heldDuringStall).toBe(0);
      await new Promise((r) => setTimeout(r, 50));
      expect(got).toHaveLength(1);
      expect(got[0]!.reason).toBe('deadlinePassed');
      // Fired on time although the main loop was blocked (generous bound: 2 shared cores).
      expect(got[0]!.firedAt - deadline).toBeLessThan(100);
      expect((await readFileBackendDir(dir, Date.now())).get(VIP)?.size ?? 0).toBe(0);
      // Re-armed: not fenced, and a later deadline moves without firing early.
      ft.rearm(monoNow() + 300);
      expect(ft.isFenced()).toBe(false);
      ft.setDeadline(monoNow() + 10_000);
      await new Promise((r) => setTimeout(r, 500));
      expect(got).toHaveLength(1);
    } finally {
      await ft.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
