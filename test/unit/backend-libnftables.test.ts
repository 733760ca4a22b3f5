import { describe, expect, it } from 'vitest';
import { LibnftablesTransport, type Lib } from '../../src/backends/libnftables.js';
import { BackendError } from '../../src/errors.js';

// The libnftables transport's own logic against a scripted library (the real one is tested in test/kernel).

function fakeLib(run: (buf: string, cb: (err: unknown, rc: number) => void) => void) {
  const calls: string[] = [];
  let out = '';
  let err = '';
  let flags = 0;
  let dry = false;
  const lib: Lib = {
    ctxNew: () => ({}),
    ctxFree: () => void calls.push('free'),
    bufferOutput: () => 0,
    bufferError: () => 0,
    outputBuffer: () => [out, (out = '')][0]!,
    errorBuffer: () => [err, (err = '')][0]!,
    setFlags: (_c, f) => void (flags = f),
    getFlags: () => flags,
    setDryRun: (_c, d) => void (dry = d),
    run: {
      async: (_c, buf, cb) => {
        calls.push(`${dry ? 'check ' : ''}${flags & 16 ? 'json ' : ''}${buf}`);
        run(buf, (e, rc) => {
          if (rc !== 0) err = 'Error: boom\n';
          else out = flags & 16 ? '{"nftables": []}' : '';
          cb(e, rc);
        });
      },
    },
  };
  return { lib, calls };
}

describe('libnftables transport', () => {
  it('sets JSON and dry-run per command, resets them, and returns each command its own output', async () => {
    const { lib, calls } = fakeLib((_b, cb) => setImmediate(() => cb(null, 0)));
    const t = new LibnftablesTransport(lib, {}, 1000);
    expect((await t.json(['list', 'table', 'ip', 'x'])).stdout).toBe('{"nftables": []}');
    expect(await t.batch('add element ip x s { 1 }', { check: true })).toMatchObject({ exitCode: 0, stdout: '' });
    expect(await t.batch('add element ip x s { 2 }')).toMatchObject({ exitCode: 0, stdout: '' });
    expect(calls).toEqual(['json list table ip x', 'check add element ip x s { 1 }', 'add element ip x s { 2 }']);
    t.close();
    expect(calls[calls.length - 1]).toBe('free');
  });

  it('a failed command reports exit 1 with its error text, and the next starts clean', async () => {
    let fail = true;
    const { lib } = fakeLib((_b, cb) => setImmediate(() => cb(null, fail ? 1 : 0)));
    const t = new LibnftablesTransport(lib, {}, 1000);
    expect(await t.batch('bad')).toMatchObject({ exitCode: 1, stderr: 'Error: boom\n' });
    fail = false;
    expect(await t.batch('good')).toMatchObject({ exitCode: 0, stderr: '' });
  });

  it('a command that hangs times out as a transient error; the context is never used or freed again', async () => {
    const { lib, calls } = fakeLib(() => undefined);
    const t = new LibnftablesTransport(lib, {}, 50);
    const e = await t.batch('add table ip x').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BackendError);
    expect((e as BackendError).recoverable).toBe(true);
    expect(t.usable).toBe(false);
    await expect(t.batch('again')).rejects.toThrow(/closed or hung/);
    t.close();
    expect(calls).not.toContain('free');
  });
});
