import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatProcHeld, parseProcHeld, procWrite } from '../../src/backends/procFormat.js';

describe('proc format', () => {
  it('formats like the kernel: ascending, comma-separated, trailing newline; 0 bytes when empty', () => {
    expect(formatProcHeld([3, 1])).toBe('1,3\n');
    expect(formatProcHeld([])).toBe('');
  });

  it('round-trips any set of bucket numbers', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 4096 })), (bs) => {
        expect(parseProcHeld(formatProcHeld(bs))).toEqual([...bs].sort((a, b) => a - b));
      }),
    );
  });

  it('rejects text that is not in the format', () => {
    for (const t of ['1,,3\n', 'a\n', '1,3\n\n', ' 1\n', '0\n', '-1\n']) expect(parseProcHeld(t)).toBeNull();
  });
});

describe('procWrite models clusterip_proc_write (DESIGN §7/§11 observations)', () => {
  const total = 4;
  const none = new Set<number>();
  const cases: [string, ReadonlySet<number>, string, string][] = [
    ['+2 on empty', none, '+2', 'ok'],
    ['+2 twice', new Set([2]), '+2', 'ENOMEM'],
    ['-3 unclaimed', none, '-3', 'ENOENT'],
    ['+5 over total 4', none, '+5', 'ENOMEM'],
    ['+0', none, '+0', 'ENOMEM'],
    ['-0', none, '-0', 'ENOENT'],
    ['x1', none, 'x1', 'EIO'],
    ['11 bytes', none, '+1234567890', 'EIO'],
    ['+2x', none, '+2x', 'EINVAL'],
    ['+ alone', none, '+', 'EINVAL'],
    ['+2 with newline', none, '+2\n', 'ok'],
    // Measured on the real module (qemu): kstrtoul takes a '+' sign, and the node number is truncated to u16.
    ['++2', none, '++2', 'ok'],
    ['-+2 unclaimed', none, '-+2', 'ENOENT'],
    ['+65537 is +1', none, '+65537', 'ok'],
    ['+65536 is +0', none, '+65536', 'ENOMEM'],
    ['--2', none, '--2', 'EINVAL'],
    ['+0x1', none, '+0x1', 'EINVAL'],
  ];
  for (const [name, held, input, want] of cases) {
    it(name, () => {
      const r = procWrite(held, total, input);
      expect(r.ok ? 'ok' : r.errno).toBe(want);
    });
  }

  it('claims and releases', () => {
    let held: ReadonlySet<number> = new Set();
    for (const cmd of ['+1', '+2', '-1']) {
      const r = procWrite(held, total, cmd);
      if (!r.ok) throw new Error(r.errno);
      held = r.held;
    }
    expect(formatProcHeld(held)).toBe('2\n');
  });
});
