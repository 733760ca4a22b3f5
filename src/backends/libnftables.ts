import { BackendError } from '../errors.js';
import type { NftResult, NftTransport } from './nftTransport.js';

// libnftables in process (DESIGN §16): the same batch text `nft -f -` reads, parsed and committed by the library
// `nft` itself links, in one netlink transaction, without a process per change. One context per backend; calls are
// serialized by the backend, and each runs on koffi's thread pool, so a slow commit never stalls the event loop.
// The library keeps process-wide state (its interface cache), so one thread only may use it: the fence worker
// spawns `nft` instead (see fenceWorker.ts).

/** NFT_CTX_OUTPUT_JSON in nftables.h's enum nft_ctx_output_flags. */
const OUTPUT_JSON = 1 << 4;
const SONAME = 'libnftables.so.1';

export interface Lib {
  ctxNew: (flags: number) => unknown;
  ctxFree: (ctx: unknown) => void;
  bufferOutput: (ctx: unknown) => number;
  bufferError: (ctx: unknown) => number;
  outputBuffer: (ctx: unknown) => string;
  errorBuffer: (ctx: unknown) => string;
  setFlags: (ctx: unknown, flags: number) => void;
  getFlags: (ctx: unknown) => number;
  setDryRun: (ctx: unknown, dry: boolean) => void;
  run: { async: (ctx: unknown, buf: string, cb: (err: unknown, rc: number) => void) => void };
}

let loaded: Promise<Lib> | undefined;

async function loadLib(): Promise<Lib> {
  const koffi = (await import('koffi')).default;
  const lib = koffi.load(SONAME);
  koffi.opaque('nft_ctx');
  return {
    ctxNew: lib.func('nft_ctx *nft_ctx_new(uint32_t flags)'),
    ctxFree: lib.func('void nft_ctx_free(nft_ctx *ctx)'),
    bufferOutput: lib.func('int nft_ctx_buffer_output(nft_ctx *ctx)'),
    bufferError: lib.func('int nft_ctx_buffer_error(nft_ctx *ctx)'),
    outputBuffer: lib.func('const char *nft_ctx_get_output_buffer(nft_ctx *ctx)'),
    errorBuffer: lib.func('const char *nft_ctx_get_error_buffer(nft_ctx *ctx)'),
    setFlags: lib.func('void nft_ctx_output_set_flags(nft_ctx *ctx, unsigned int flags)'),
    getFlags: lib.func('unsigned int nft_ctx_output_get_flags(nft_ctx *ctx)'),
    setDryRun: lib.func('void nft_ctx_set_dry_run(nft_ctx *ctx, bool dry)'),
    run: lib.func('int nft_run_cmd_from_buffer(nft_ctx *ctx, const char *buf)'),
  };
}

/**
 * A libnftables context, or why there is none (no koffi, no libnftables.so.1, no context). Loading is tried once
 * per process; a failure is the reason the backend falls back to spawning `nft`.
 */
export async function openLibnftables(timeoutMs: number): Promise<LibnftablesTransport | { error: string }> {
  try {
    loaded ??= loadLib();
    const lib = await loaded;
    const ctx = lib.ctxNew(0);
    if (!ctx) return { error: 'nft_ctx_new failed' };
    if (lib.bufferOutput(ctx) !== 0 || lib.bufferError(ctx) !== 0) {
      lib.ctxFree(ctx);
      return { error: 'nft_ctx_buffer_output failed' };
    }
    return new LibnftablesTransport(lib, ctx, timeoutMs);
  } catch (err) {
    return { error: `cannot load ${SONAME} through koffi: ${(err as Error).message}` };
  }
}

export class LibnftablesTransport implements NftTransport {
  readonly kind = 'libnftables' as const;
  private closed = false;
  /** A command outlived its timeout: its thread still owns the context, which may never be used or freed again. */
  private hung = false;

  constructor(
    private readonly lib: Lib,
    private readonly ctx: unknown,
    private readonly timeoutMs: number,
  ) {}

  get usable(): boolean {
    return !this.closed && !this.hung;
  }

  batch(text: string, opts: { check?: boolean } = {}): Promise<NftResult> {
    return this.exec(text, { check: opts.check ?? false, json: false });
  }

  json(command: readonly string[]): Promise<NftResult> {
    return this.exec(command.join(' '), { check: false, json: true });
  }

  private async exec(text: string, mode: { check: boolean; json: boolean }): Promise<NftResult> {
    if (!this.usable) throw new BackendError('transient', 'libnftables context closed or hung');
    const started = performance.now();
    const { lib, ctx } = this;
    let stdout = '';
    let stderr = '';
    const flags = lib.getFlags(ctx);
    lib.setFlags(ctx, mode.json ? flags | OUTPUT_JSON : flags & ~OUTPUT_JSON);
    lib.setDryRun(ctx, mode.check);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.hung = true;
        reject(new BackendError('transient', `libnftables: command timed out after ${this.timeoutMs} ms`));
      }, this.timeoutMs);
    });
    let rc: number;
    try {
      rc = await Promise.race([
        new Promise<number>((resolve, reject) =>
          lib.run.async(ctx, text, (err, r) => (err ? reject(err as Error) : resolve(r))),
        ),
        timedOut,
      ]);
    } finally {
      clearTimeout(timer);
      // Read (and so rewind) both buffers after every finished command, failed or not: the next starts empty.
      if (!this.hung) {
        lib.setDryRun(ctx, false);
        stdout = lib.outputBuffer(ctx) ?? '';
        stderr = lib.errorBuffer(ctx) ?? '';
      }
    }
    return { exitCode: rc === 0 ? 0 : 1, stdout, stderr, durationMs: performance.now() - started };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // A hung command's thread still uses the context: leak it rather than free it under that thread.
    if (!this.hung) this.lib.ctxFree(this.ctx);
  }
}
