import { describe, expect, it } from 'vitest';
import { NftablesBackend } from '../../src/backends/nftables.js';
import type { RunResult, Runner } from '../../src/backends/run.js';
import type { ClusterSpec } from '../../src/config/types.js';
import { BackendError } from '../../src/errors.js';

// The nftables backend's start-up checks and error classification with a scripted nft (the real nft and kernel
// are exercised in test/kernel/nftables-backend.test.ts).

const spec: ClusterSpec = {
  vips: [
    {
      address: '10.77.0.100',
      interface: 'eth0',
      buckets: 16,
      hashMode: 'sourceip',
      seed: 1,
      clusterMac: '01:00:5e:4d:00:64',
      sticky: false,
    },
  ],
  rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 },
};
const res = (exitCode: number, stdout = '', stderr = ''): RunResult => ({
  exitCode,
  stdout,
  stderr,
  timedOut: false,
  durationMs: 1,
});

function scripted(answer: (args: readonly string[], input?: string) => RunResult): { run: Runner; calls: string[] } {
  const calls: string[] = [];
  const run: Runner = async (file, args, opts) => {
    calls.push([file, ...args].join(' '));
    return answer(args, opts.input);
  };
  return { run, calls };
}

async function errorOf(p: Promise<unknown>): Promise<BackendError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BackendError);
  return err as BackendError;
}

describe('nftables backend start-up checks', () => {
  it('refuses an nft that is too old', async () => {
    const { run } = scripted(() => res(0, 'nftables v0.9.3 (Topsy)\n'));
    const err = await errorOf(new NftablesBackend({ run }).ensure(spec));
    expect(err.kind).toBe('unsupported');
    expect(err.message).toMatch(/too old/);
  });

  it('explains a kernel that lacks a feature (the check-mode probe fails)', async () => {
    const { run } = scripted((args) =>
      args[0] === '--version'
        ? res(0, 'nftables v1.0.6 (Lester Gooch #5)\n')
        : res(1, '', 'Error: Could not process rule: Operation not supported'),
    );
    const err = await errorOf(new NftablesBackend({ run }).ensure(spec));
    expect(err.kind).toBe('unsupported');
    expect(err.message).toMatch(/kernel lacks an nf_tables feature.*Operation not supported/);
  });

  it('explains a missing nft binary', async () => {
    const run: Runner = async () => ({
      exitCode: undefined,
      stdout: '',
      stderr: '',
      timedOut: false,
      spawnError: 'ENOENT',
      durationMs: 1,
    });
    const err = await errorOf(new NftablesBackend({ run }).ensure(spec));
    expect(err.message).toMatch(/cannot run nft \(ENOENT\).*apt-get install nftables/);
  });

  it('classifies failures: timeout transient, syntax bug, EPERM unsupported; validates before nft runs', async () => {
    let mode = 'ok';
    const { run, calls } = scripted((args) => {
      if (args[0] === '--version') return res(0, 'nftables v1.0.6\n');
      if (args.includes('list')) return res(1, '', 'Error: No such file or directory');
      if (mode === 'syntax') return res(1, '', 'Error: syntax error, unexpected junk');
      if (mode === 'eperm') return res(1, '', 'Error: Operation not permitted');
      if (mode === 'timeout') return { ...res(0), exitCode: undefined, timedOut: true };
      return res(0);
    });
    const b = new NftablesBackend({ run, renewal: 'update' });
    await b.ensure(spec);
    const add = () => b.apply([{ vip: '10.77.0.100', add: [1], remove: [] }], { holdForMs: 1000 });
    mode = 'syntax';
    expect((await errorOf(add())).kind).toBe('bug');
    mode = 'eperm';
    expect((await errorOf(add())).kind).toBe('unsupported');
    mode = 'timeout';
    expect((await errorOf(add())).kind).toBe('transient');
    const before = calls.length;
    expect((await errorOf(b.apply([{ vip: '10.77.0.100', add: [17], remove: [] }]))).kind).toBe('invalid');
    expect((await errorOf(b.apply([{ vip: '10.77.0.9', add: [1], remove: [] }]))).kind).toBe('invalid');
    expect(calls.length).toBe(before);
    // the batch went over stdin, with argument arrays
    expect(calls.filter((c) => c === 'nft -f -').length).toBeGreaterThan(0);
  });

  it('runs nft inside a namespace through ip netns exec', async () => {
    const { run, calls } = scripted((args) =>
      args.includes('--version')
        ? res(0, 'nftables v1.0.6\n')
        : args.includes('list')
          ? res(1, '', 'No such file or directory')
          : res(0),
    );
    await new NftablesBackend({ run, netns: 'cipha-x', renewal: 'update' }).ensure(spec);
    expect(calls[0]).toBe('ip netns exec cipha-x nft --version');
  });
});

describe('nftables backend: kernel path', () => {
  it('spawns nft for a wrapped nftPath, a netns or an injected runner; libnftables refuses what it cannot do', async () => {
    const refuse = new NftablesBackend({ transport: 'libnftables', netns: 'cipha-x' });
    await expect(refuse.read()).rejects.toThrow(/libnftables: it runs in the agent's own network namespace/);
    const wrapped = new NftablesBackend({ nftPath: '/nonexistent/nft-wrapper' });
    await expect(wrapped.read()).rejects.toThrow(/cannot run \/nonexistent\/nft-wrapper/);
    expect(wrapped.describe().detail.transport).toBe('nft');
    const { run } = scripted(() => res(0, '{"nftables": []}'));
    const injected = new NftablesBackend({ run, transport: 'auto' });
    await injected.read();
    expect(injected.describe().detail.transport).toBe('nft');
  });
});
