import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { BackendError } from '../errors.js';

// Injected backend write faults, for chaos only (`chaos` fault `backendFault`). With CLUSTERIP_HA_WRITE_FAULTS
// naming a control file, every write of the file backend (applies, refreshes, clears: the fence worker's too)
// first reads that file; while it holds `{seed, failShare, stallShare, stallMs}`, a seeded share of writes fails
// (a transient BackendError, nothing written) or stalls before it is written. No file: no faults. The control file
// is written by the chaos runner, so faults start and stop without restarting the agent.

export const WRITE_FAULTS_ENV = 'CLUSTERIP_HA_WRITE_FAULTS';

export const writeFaultSpecSchema = z.strictObject({
  seed: z.number().int(),
  failShare: z.number().min(0).max(1),
  stallShare: z.number().min(0).max(1),
  stallMs: z.number().int().min(0).max(60_000),
});
export type WriteFaultSpec = z.infer<typeof writeFaultSpecSchema>;

export type WriteFaultDecision = 'write' | 'fail' | 'stall';

/** Pure: one draw in [0, 1) against the shares (fail first, then stall). */
export function decideWriteFault(spec: WriteFaultSpec, draw: number): WriteFaultDecision {
  if (draw < spec.failShare) return 'fail';
  if (draw < spec.failShare + spec.stallShare) return 'stall';
  return 'write';
}

/** mulberry32 (as the chaos schedule's): seeded draws, so a fault spec replays the same decisions. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class WriteFaults {
  private text = '';
  private spec: WriteFaultSpec | null = null;
  private draw: () => number = Math.random;

  constructor(private readonly controlFile: string) {}

  /** Before a write: throws for an injected failure, waits for an injected stall. */
  async beforeWrite(what: string): Promise<void> {
    const spec = this.load();
    if (!spec) return;
    const d = decideWriteFault(spec, this.draw());
    if (d === 'fail') throw new BackendError('transient', `${what}: injected write failure (${this.controlFile})`);
    if (d === 'stall') await sleep(spec.stallMs);
  }

  private load(): WriteFaultSpec | null {
    let text: string;
    try {
      text = readFileSync(this.controlFile, 'utf8');
    } catch {
      text = '';
    }
    if (text === this.text) return this.spec;
    this.text = text;
    const parsed = text === '' ? null : writeFaultSpecSchema.safeParse(safeJson(text));
    this.spec = parsed?.success ? parsed.data : null;
    if (this.spec) this.draw = prng(this.spec.seed);
    return this.spec;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The faults named by the environment, or undefined (the normal case). */
export function writeFaultsFromEnv(env: NodeJS.ProcessEnv = process.env): WriteFaults | undefined {
  const f = env[WRITE_FAULTS_ENV];
  return f ? new WriteFaults(f) : undefined;
}
