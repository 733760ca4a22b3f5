// The monotonic clock every fence computation uses: process.hrtime is one CLOCK_MONOTONIC for the whole process,
// so the main thread and the fence worker agree on it, and wall-clock steps cannot move a deadline.
export function monoNow(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
