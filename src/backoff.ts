// The one backoff of the code base (p-retry brings its own for the kernel gate's short retries).

/** Exponential backoff: `baseMs` doubling per attempt (0 = first retry), capped at `maxMs`. */
export function backoffMs(attempt: number, baseMs = 50, maxMs = 1000): number {
  return Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt, 0), 16));
}
