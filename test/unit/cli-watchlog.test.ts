import { describe, expect, it } from 'vitest';
import { emptyClusterState, type ClusterState } from '../../src/etcd/store.js';
import type { ClusterEvent } from '../../src/etcd/values.js';
import type { StatusReport } from '../../src/cli/statusModel.js';
import { watchLogStep } from '../../src/cli/watchLog.js';

// `status --watch` into a pipe: the first picture once, then one line per change, nothing when nothing changed.

const io = { color: false };
const report = (health: StatusReport['health'], kinds: string[] = []): StatusReport =>
  ({
    schema: 1,
    cluster: 'demo',
    revision: '1',
    healthy: health === 'healthy',
    health,
    leader: 'n1',
    specGeneration: 1,
    panic: null,
    anomalies: kinds.map((kind) => ({ kind, severity: 'error', detail: kind })),
    settling: [],
    nodes: [],
    vips: [],
  }) as unknown as StatusReport;
const event = (kind: ClusterEvent['kind'], detail: string): ClusterEvent =>
  ({ v: 1, at: '2026-12-02T21:00:00.000Z', revision: '5', leader: 'n1', kind, detail }) as ClusterEvent;
const withEvents = (...evs: [number, ClusterEvent][]): ClusterState => {
  const s = emptyClusterState();
  for (const [seq, e] of evs) s.events.set(seq, e);
  return s;
};
const now = new Date('2026-12-02T21:00:01.000Z');

describe('watchLogStep', () => {
  it('prints the frame first, then only what changed', () => {
    const e1 = event('nodeJoined', 'n1 joined');
    const first = watchLogStep(
      null,
      { report: report('healthy'), state: withEvents([1, e1]), stale: null, frame: 'FRAME\n', now },
      io,
    );
    expect(first.text).toBe('FRAME\n');
    // A status write moved the revision, nothing else: no output.
    const same = watchLogStep(
      first.next,
      { report: { ...report('healthy'), revision: '9' }, state: withEvents([1, e1]), stale: null, frame: 'F', now },
      io,
    );
    expect(same.text).toBe('');
    const e2 = event('nodeLost', 'n2 lost its lease');
    const lost = watchLogStep(
      same.next,
      { report: report('degraded'), state: withEvents([1, e1], [2, e2]), stale: null, frame: 'F', now },
      io,
    );
    const lines = lost.text.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain('nodeLost');
    expect(lines[0]).toContain('n2 lost its lease');
    expect(lines[1]).toMatch(/cluster demo {2}DEGRADED/);
    const gone = watchLogStep(
      lost.next,
      { report: report('degraded'), state: withEvents([2, e2]), stale: 'deadline exceeded', frame: 'F', now },
      io,
    );
    expect(gone.text).toMatch(/^\S+ {2}STALE: etcd unreachable for 0 s \(deadline exceeded\)\n$/);
    const again = watchLogStep(
      gone.next,
      { report: report('unhealthy', ['unowned']), state: withEvents([2, e2]), stale: null, frame: 'F', now },
      io,
    );
    expect(again.text).toMatch(/etcd reachable again\n.*cluster demo {2}UNHEALTHY \(1 problem\): unowned\n$/);
  });
});
