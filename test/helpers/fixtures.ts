import type { RestartRecord } from '../../src/agent/restartRecord.js';
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

/** What an agent leaves on SIGHUP for node n1 (src/agent/restartRecord.ts). */
export function restartRecord(over: Partial<RestartRecord> = {}): RestartRecord {
  return {
    v: 1,
    cluster: 'default',
    nodeId: 'n1',
    leaseId: '12345',
    ttlSeconds: 4,
    deadlineAt: Date.now() + 3000,
    held: { '10.0.0.1': [1, 3] },
    writtenAt: Date.now(),
    ...over,
  };
}
