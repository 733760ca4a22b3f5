import type { StatusValue } from '../../src/etcd/values.js';

/** A valid `status/<node>` value holding `held` of one VIP (unit tests build pictures from it). */
export function statusValue(vip: string, held: number[], over: Partial<StatusValue> = {}): StatusValue {
  return {
    v: 1,
    held: { [vip]: held },
    backend: 'file',
    fenced: false,
    lastError: null,
    lastErrorAt: null,
    lastApplyAt: null,
    lastAckAt: null,
    updatedAt: '',
    ...over,
  };
}
