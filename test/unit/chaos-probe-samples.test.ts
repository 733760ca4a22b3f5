import { describe, expect, it } from 'vitest';
import { probeSamples } from '../../src/chaos/netnsTarget.js';
import type { ProbeResult } from '../../src/netns/prober.js';

const probe = (answers: [string, string[]][]): ProbeResult => ({
  id: 1,
  t0: 1000,
  t1: 1040,
  udpProbed: true,
  tcpProbed: false,
  answers: answers.map(([source, udp]) => ({ source, udp, tcp: null, tcpError: null })),
  late: [],
});

// Sources s1..s6; bucket = the digit's parity + 1.
const bucketOf = (s: string): number => (Number(s.slice(1)) % 2) + 1;

describe('netns probe samples', () => {
  it('one packet answered by two nodes is a double owner of its bucket', () => {
    const r = probe([
      ['s1', ['n1', 'n2']],
      ['s3', ['n1']],
      ['s2', ['n3']],
      ['s4', ['n3']],
    ]);
    expect(probeSamples(r, 'v', bucketOf)).toEqual([
      { t: 1000, source: 'dataplane', vip: 'v', bucket: 1, holders: ['n3'] },
      { t: 1000, source: 'dataplane', vip: 'v', bucket: 2, holders: ['n1', 'n2'] },
    ]);
  });

  it('a repeated reply from one node is not a double; different single answers in one bucket are no sample', () => {
    const r = probe([
      ['s1', ['n1', 'n1']],
      ['s3', ['n1']],
      ['s2', ['n2']],
      ['s4', ['n3']],
    ]);
    expect(probeSamples(r, 'v', bucketOf)).toEqual([
      { t: 1000, source: 'dataplane', vip: 'v', bucket: 2, holders: ['n1'] },
    ]);
  });

  it('a bucket nobody answered is an unowned sample', () => {
    const r = probe([
      ['s1', []],
      ['s3', []],
    ]);
    expect(probeSamples(r, 'v', bucketOf)).toEqual([
      { t: 1000, source: 'dataplane', vip: 'v', bucket: 2, holders: [] },
    ]);
  });
});
