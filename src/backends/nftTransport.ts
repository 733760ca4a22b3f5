import { BackendError } from '../errors.js';
import { execaRunner, type Runner } from './run.js';

// How the nftables backend reaches the kernel: libnftables in process (DESIGN §16), or an `nft` process per
// command. Both take the same batch text and commit it in one netlink transaction; they differ only in cost.

export interface NftResult {
  /** 0 when nft (or the library) accepted the command. */
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface NftTransport {
  readonly kind: 'libnftables' | 'nft';
  /** False once closed, or (libnftables) after a command hung: the backend opens a fresh one. */
  readonly usable: boolean;
  /** A batch as `nft -f -` reads it; `check`: validate against the kernel, commit nothing (`nft -c`). */
  batch(text: string, opts?: { check?: boolean }): Promise<NftResult>;
  /** One command with JSON output (`nft -j <command>`). */
  json(command: readonly string[]): Promise<NftResult>;
  close(): void;
}

export interface ProcessTransportOptions {
  nftPath: string;
  /** Run nft inside this network namespace (`ip netns exec NS nft …`). */
  netns?: string;
  timeoutMs: number;
  run?: Runner;
}

/** `nft` as a child process per command: the fallback, and the path of a wrapped `nftPath` or a foreign netns. */
export class ProcessTransport implements NftTransport {
  readonly kind = 'nft' as const;
  readonly usable = true;
  private readonly run: Runner;

  constructor(private readonly o: ProcessTransportOptions) {
    this.run = o.run ?? execaRunner;
  }

  batch(text: string, opts: { check?: boolean } = {}): Promise<NftResult> {
    return this.nft(opts.check ? ['-c', '-f', '-'] : ['-f', '-'], text);
  }

  json(command: readonly string[]): Promise<NftResult> {
    return this.nft(['-j', ...command]);
  }

  /** `nft --version` (the library has no version call; its features are probed instead). */
  version(): Promise<NftResult> {
    return this.nft(['--version']);
  }

  close(): void {}

  private async nft(args: string[], input?: string): Promise<NftResult> {
    const { nftPath, netns, timeoutMs } = this.o;
    const [file, argv] = netns ? ['ip', ['netns', 'exec', netns, nftPath, ...args]] : [nftPath, args];
    const r = await this.run(file, argv, { timeoutMs, ...(input !== undefined ? { input } : {}) });
    if (r.spawnError) {
      throw new BackendError(
        'unsupported',
        `cannot run ${file} (${r.spawnError}); the nftables backend needs nft (Debian: apt-get install nftables)`,
      );
    }
    if (r.timedOut) throw new BackendError('transient', `nft ${args.join(' ')} timed out after ${timeoutMs} ms`);
    return r;
  }
}
