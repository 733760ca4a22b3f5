// The netns kernel sampler's double-owner proof: reads of different nodes' sets are tens of ms apart, so a
// handoff between them must not read as two owners, while a double that outlasts a round must.
import { describe, expect, it } from 'vitest';
import { confirmedSamples } from '../../src/netns/dataplane.js';
import type { OwnershipSample } from '../../src/invariant/types.js';

const s = (bucket: number, holders: string[]): OwnershipSample => ({
  t: 1,
  source: 'backend',
  vip: '10.77.0.100',
  bucket,
  holders,
});

describe('confirmedSamples', () => {
  it('a handoff caught between two reads reports the old owner, then the new one', () => {
    const prev = new Map([[1, ['a']]]);
    expect(confirmedSamples(prev, [s(1, ['a', 'b'])])).toEqual([s(1, ['a'])]);
    expect(confirmedSamples(new Map([[1, ['a', 'b']]]), [s(1, ['b'])])).toEqual([s(1, ['b'])]);
  });

  it('a read where every previous holder is gone reports no holder, even if an unproven double is seen', () => {
    // A stale holder must not stand for a node that already let go (the checker's heldAfterRelease).
    expect(confirmedSamples(new Map([[1, ['a']]]), [s(1, ['b', 'c'])])).toEqual([s(1, [])]);
  });

  it('a double held across two rounds is reported as a double', () => {
    expect(confirmedSamples(new Map([[1, ['a', 'b']]]), [s(1, ['a', 'b'])])).toEqual([s(1, ['a', 'b'])]);
    expect(confirmedSamples(new Map([[1, ['a', 'b']]]), [s(1, ['a', 'b', 'c'])])).toEqual([s(1, ['a', 'b'])]);
  });

  it('an unproven double with no carried-over holder is left out; single holders pass through', () => {
    expect(confirmedSamples(new Map([[1, []]]), [s(1, ['a', 'b']), s(2, ['c']), s(3, [])])).toEqual([
      s(2, ['c']),
      s(3, []),
    ]);
  });
});
