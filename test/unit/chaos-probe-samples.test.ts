import { describe, expect, it } from 'vitest';
import { probeSamples, streamSamples } from '../../src/chaos/netnsTarget.js';
import type { ProbeResult, StreamReport } from '../../src/netns/prober.js';

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

describe('netns stream samples', () => {
  const report = (over: Partial<StreamReport>): StreamReport => ({
    t: 2000,
    from: 1900,
    to: 1980,
    sends: 16,
    owners: [[], [], [], []],
    silent: [0, 0, 0, 0],
    doubles: [],
    gaps: [5, 5],
    ...over,
  });
  const sources = ['s1', 's2', 's3', 's4'];

  it('a request answered twice is a double at its send time; agreeing single answers name the owner', () => {
    const r = report({
      owners: [['n1'], ['n3'], ['n1'], ['n3']],
      doubles: [{ seq: 7, t: 1950, i: 2, nodes: ['n2', 'n1'] }],
    });
    expect(streamSamples(r, sources, 'v', bucketOf)).toEqual([
      { t: 1950, source: 'dataplane', vip: 'v', bucket: 2, holders: ['n1', 'n2'] },
      { t: 1980, source: 'dataplane', vip: 'v', bucket: 1, holders: ['n3'] },
      { t: 1980, source: 'dataplane', vip: 'v', bucket: 2, holders: ['n1'] },
    ]);
  });

  it('a handoff within the window (different single answers) is no sample; no answer at all is nobody', () => {
    const r = report({ owners: [[], ['n1', 'n2'], [], ['n2']], silent: [16, 0, 16, 0] });
    expect(streamSamples(r, sources, 'v', bucketOf)).toEqual([
      { t: 1980, source: 'dataplane', vip: 'v', bucket: 2, holders: [] },
    ]);
  });

  it('a report with no settled send says nothing but its doubles', () => {
    expect(streamSamples(report({ sends: 0 }), sources, 'v', bucketOf)).toEqual([]);
  });
});
