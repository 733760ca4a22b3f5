import type { IKeyValue } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { planSweep } from '../../src/agent/rebalancer.js';
import { keysFor } from '../../src/etcd/keys.js';
import { applyPut, emptyClusterState, type ClusterState } from '../../src/etcd/store.js';

// The leader's sweep decision (pure) and the picture it works from: which keys are deleted, which wait.

const keys = keysFor('c');
const VIP = '10.0.0.1';
let rev = 10;

function put(state: ClusterState, key: string, value: string, lease = '0'): void {
  rev++;
  const kv = {
    key: Buffer.from(key),
    value: Buffer.from(value),
    lease,
    create_revision: String(rev),
    mod_revision: String(rev),
    version: '1',
  } as IKeyValue;
  applyPut(state, keys, kv);
  state.revision = String(rev);
}

const node = JSON.stringify({ v: 1, address: 'x', weight: 1, draining: false, version: '0', startedAt: '' });
const status = (held: number[]) =>
  JSON.stringify({
    v: 1,
    held: { [VIP]: held },
    backend: 'file',
    fenced: false,
    lastError: null,
    lastErrorAt: null,
    lastApplyAt: null,
    lastAckAt: null,
    updatedAt: '',
  });

function cluster(): ClusterState {
  const s = emptyClusterState();
  put(s, keys.node('n1'), node, '101');
  put(s, keys.node('n2'), node, '102');
  put(s, keys.claim(VIP, 1), 'n1', '101');
  put(s, keys.claim(VIP, 2), 'n2', '102');
  put(s, keys.status('n1'), status([1]), '101');
  put(s, keys.status('n2'), status([2]), '102');
  return s;
}

const summary = (s: ClusterState) => planSweep(s, keys).map((d) => `${d.action}:${d.reason}:${d.key}`);

describe('planSweep', () => {
  it('a healthy cluster: nothing to sweep', () => {
    expect(summary(cluster())).toEqual([]);
  });

  it('a node key without a lease is not a node, and is deleted', () => {
    const s = cluster();
    put(s, keys.node('ghost'), node);
    expect(s.nodes.has('ghost')).toBe(false);
    expect(summary(s)).toEqual([`delete:nodeWithoutLease:${keys.node('ghost')}`]);
    // Over a live node's key: that node is not live until it puts its key back under its lease.
    put(s, keys.node('n2'), node);
    expect(s.nodes.has('n2')).toBe(false);
  });

  it('garbage over a claim: no longer anyone’s claim; deleted once no node reports the bucket held', () => {
    const s = cluster();
    put(s, keys.claim(VIP, 2), '{garbage', '102');
    expect(s.claims.get(VIP)?.has(2)).toBe(false);
    expect(summary(s)).toEqual([`wait:heldInKernel:${keys.claim(VIP, 2)}`]);
    put(s, keys.status('n2'), status([]), '102');
    expect(summary(s)).toEqual([`delete:claimUnreadable:${keys.claim(VIP, 2)}`]);
  });

  it('a claim naming a ghost under a live node’s lease, or a node under another node’s lease, is a ghost', () => {
    const s = cluster();
    put(s, keys.claim(VIP, 2), 'ghost', '101');
    put(s, keys.claim(VIP, 1), 'n1', '102');
    put(s, keys.status('n1'), status([]), '101');
    put(s, keys.status('n2'), status([]), '102');
    expect(summary(s).sort()).toEqual(
      [`delete:claimGhost:${keys.claim(VIP, 1)}`, `delete:claimGhost:${keys.claim(VIP, 2)}`].sort(),
    );
  });

  it('a claim whose node has no key and whose lease carries none is left alone (a node re-registering)', () => {
    const s = cluster();
    put(s, keys.claim(VIP, 3), 'n3', '103');
    expect(summary(s)).toEqual([]);
  });
});
