import { describe, expect, it } from 'vitest';
import { BackendError } from '../../src/errors.js';
import {
  checkInterface,
  checkIpv4,
  checkMulticastMac,
  checkNftName,
  checkSeed,
  checkVip,
} from '../../src/backends/validate.js';
import type { VipSpec } from '../../src/config/types.js';

const vip: VipSpec = {
  address: '10.77.0.100',
  interface: 'eth0',
  buckets: 16,
  hashMode: 'sourceip',
  seed: 0x5eed1234,
  clusterMac: '01:00:5e:4d:00:64',
  sticky: false,
};

function rejects(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BackendError);
    expect((err as BackendError).kind).toBe('invalid');
    return;
  }
  throw new Error('expected a BackendError');
}

describe('validation before anything reaches nft or iptables', () => {
  it('accepts good values', () => {
    expect(checkVip(vip, 16)).toBe(vip);
    expect(checkSeed(0xffffffff)).toBe(0xffffffff);
  });

  it('rejects values that could change the meaning of a batch or command', () => {
    rejects(() => checkInterface('eth0" drop'));
    rejects(() => checkInterface('eth0;flush'));
    rejects(() => checkInterface('a'.repeat(16)));
    rejects(() => checkInterface('-i'));
    rejects(() => checkIpv4('10.0.0.1 }'));
    rejects(() => checkIpv4('10.0.0.256'));
    rejects(() => checkIpv4('010.0.0.1'));
    rejects(() => checkNftName('t; flush ruleset'));
    rejects(() => checkSeed(-1));
    rejects(() => checkSeed(2 ** 32));
    rejects(() => checkSeed(1.5));
    rejects(() => checkMulticastMac('00:00:5e:00:00:01')); // unicast
    rejects(() => checkMulticastMac('01:00:5E:00:00:01')); // upper case is normalized by config, not here
    rejects(() => checkVip({ ...vip, buckets: 17 }, 16));
    rejects(() => checkVip({ ...vip, buckets: 0 }, 16));
  });
});
