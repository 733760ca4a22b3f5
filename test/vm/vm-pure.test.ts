import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { encodeCpio } from './cpio.js';
import { newestKernelPackage } from './kernelCache.js';
import { moduleLoadOrder, parseModinfoDepends } from './modules.js';

// The pure pieces of the qemu harness (test/kernel/clusterip-qemu.test.ts boots the real thing).

describe('moduleLoadOrder', () => {
  const deps: Record<string, string[]> = {
    ipt_CLUSTERIP: ['x_tables', 'nf_conntrack'],
    nf_conntrack: ['nf_defrag_ipv4', 'nf_defrag_ipv6', 'libcrc32c'],
    libcrc32c: [],
    crc32c_generic: [],
    nf_defrag_ipv4: [],
    nf_defrag_ipv6: [],
    x_tables: [],
  };
  test('puts every module after its dependencies, crc32c_generic before libcrc32c', () => {
    const res = moduleLoadOrder(['ipt_CLUSTERIP'], (n) => deps[n]);
    expect(res.ok).toBe(true);
    const order = res.ok ? res.order : [];
    expect(order.at(-1)).toBe('ipt_CLUSTERIP');
    expect(new Set(order).size).toBe(order.length);
    for (const [m, ds] of Object.entries(deps)) {
      for (const d of ds) expect(order.indexOf(d), `${d} before ${m}`).toBeLessThan(order.indexOf(m));
    }
    expect(order.indexOf('crc32c_generic')).toBeLessThan(order.indexOf('libcrc32c'));
  });
  test('names a missing module and a cycle', () => {
    expect(moduleLoadOrder(['a'], (n) => ({ a: ['b'] })[n])).toEqual({ ok: false, reason: 'missing', module: 'b' });
    expect(moduleLoadOrder(['a'], (n) => ({ a: ['b'], b: ['a'] })[n])).toEqual({
      ok: false,
      reason: 'cycle',
      module: 'a',
    });
  });
});

test('parseModinfoDepends reads the NUL-separated .modinfo field', () => {
  const ko = Buffer.from('\x7fELF...\0license=GPL\0depends=x_tables,nf_conntrack\0retpoline=Y\0', 'latin1');
  expect(parseModinfoDepends(ko)).toEqual(['x_tables', 'nf_conntrack']);
  expect(parseModinfoDepends(Buffer.from('\0depends=\0name=dummy\0'))).toEqual([]);
  expect(parseModinfoDepends(Buffer.from('\0name=dummy\0'))).toEqual([]);
});

test('newestKernelPackage compares ABI numbers, not strings, and skips cloud/rt flavours', () => {
  expect(
    newestKernelPackage([
      'linux-image-6.1.0-9-amd64-unsigned',
      'linux-image-6.1.0-56-amd64-unsigned',
      'linux-image-6.1.0-60-cloud-amd64-unsigned',
      'linux-image-6.1.0-61-rt-amd64-unsigned',
      'linux-image-6.1.0-55-amd64',
    ]),
  ).toBe('linux-image-6.1.0-56-amd64-unsigned');
  expect(newestKernelPackage(['linux-image-6.12.0-1-amd64-unsigned'])).toBeUndefined();
});

describe('encodeCpio', () => {
  const archive = encodeCpio([
    { kind: 'dir', path: 'bin' },
    { kind: 'file', path: 'bin/busybox', data: Buffer.from('abc'), mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'init', data: Buffer.from('#!/bin/sh\n') },
  ]);
  test('is newc with 4-byte alignment and a trailer', () => {
    expect(archive.subarray(0, 6).toString()).toBe('070701');
    expect(archive.length % 4).toBe(0);
    expect(archive.includes(Buffer.from('TRAILER!!!\0'))).toBe(true);
  });
  // A real cpio reader agrees (busybox is a dependency of the qemu test anyway).
  test.runIf(existsSync('/bin/busybox'))('busybox cpio lists it', () => {
    const listing = execFileSync('/bin/busybox', ['cpio', '-t'], {
      input: archive,
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    expect(listing.trim().split('\n')).toEqual(['bin', 'bin/busybox', 'bin/sh', 'init']);
  });
});
