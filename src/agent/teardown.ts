import { sleep } from './clock.js';
import type { AgentEvent } from './events.js';
import type { FenceTimer } from './fence.js';
import type { KernelGate } from './kernel.js';
import type { NodeSession } from './session.js';

// The stop sequence (DESIGN §5, §9): every loop first, so nothing more is planned or written; then the kernel,
// cleared and confirmed empty; then the lease, revoked only after that confirmation (a revoke frees our claims,
// and a kernel that may still hold their buckets must be left to the TTL, which its own expiry matches); then
// the connections. Each step runs under its own bound, never under the signal that got us here.

export interface TeardownParts {
  /** Loops that plan or write (rebalancer, reconciler, status writer, checks, recorder); any not built yet. */
  loops: Array<{ stop(): void } | undefined>;
  fence?: FenceTimer;
  kernel?: KernelGate;
  session?: NodeSession;
}

/** Stop every loop, clear the kernel and confirm it, revoke the lease if it was confirmed. True when confirmed. */
export async function releaseAndRevoke(
  parts: TeardownParts,
  stepTimeoutMs: number,
  emit: (e: AgentEvent) => void,
): Promise<boolean> {
  for (const l of parts.loops) l?.stop();
  const { fence, kernel, session } = parts;
  let cleared = fence === undefined && kernel === undefined;
  if (fence) {
    const fenced = await withTimeout(fence.fenceNow('shutdown'), stepTimeoutMs * 3).catch(() => null);
    // A fence reply carrying an error did not clear the kernel: it is no confirmation.
    cleared = fenced !== null && fenced.error === undefined;
    if (fenced?.error)
      emit({
        event: 'backendError',
        op: 'fenceClear',
        error: fenced.error,
        attempt: fenced.attempts,
        willRetry: !!kernel,
      });
  }
  if (!cleared && kernel) cleared = await clearConfirmed(kernel, stepTimeoutMs);
  if (cleared) kernel?.markCleared();
  emit({ event: 'shutdown', phase: 'released' });
  if (session) {
    await session.close({ revoke: cleared, timeoutMs: stepTimeoutMs });
    if (cleared) emit({ event: 'shutdown', phase: 'revoked' });
  }
  return cleared;
}

/** Clear the backend from the main thread, retried a few times, each under its own bound. True only when confirmed. */
export async function clearConfirmed(kernel: KernelGate, stepTimeoutMs: number, attempts = 3): Promise<boolean> {
  for (let i = 0; i < attempts; i++) {
    try {
      if (await withTimeout(kernel.clear(), stepTimeoutMs)) return true;
    } catch {
      // retried below
    }
    await sleep(20 * (i + 1));
  }
  return false;
}

/** Run each close under its bound (ms), in order; a close that fails or hangs does not keep the next from running. */
export async function closeEach(
  steps: Array<[close: (() => Promise<unknown>) | undefined, boundMs: number]>,
): Promise<void> {
  for (const [close, bound] of steps) if (close) await withTimeout(close(), bound).catch(() => undefined);
}

export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
