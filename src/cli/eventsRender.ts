import type { ClusterState } from '../etcd/store.js';
import type { ClusterEvent, ClusterEventKind } from '../etcd/values.js';
import { paint, type CliIo } from './io.js';

// The leader's change log as text: one line per change, oldest first, for `events` and `status --watch`.

const COLOUR: Record<ClusterEventKind, 'red' | 'yellow' | 'green' | 'blue' | null> = {
  nodeJoined: 'green',
  nodeBack: 'green',
  nodeLost: 'red',
  nodeFenced: 'red',
  nodeUnfenced: 'green',
  nodeDraining: 'yellow',
  nodeUndrained: null,
  bucketsMoved: 'blue',
  leaderChanged: null,
};

export function formatEvent(e: ClusterEvent, io: Pick<CliIo, 'color'>): string {
  const c = COLOUR[e.kind];
  const kind = c ? paint(io, c, e.kind) : e.kind;
  return `${e.at}  ${kind}  ${e.detail}`;
}

/** The events under the prefix in sequence order (oldest first), with their sequence numbers. */
export function orderedEvents(state: ClusterState): [number, ClusterEvent][] {
  return [...state.events.entries()].sort(([a], [b]) => a - b);
}

/** The last `n` changes, one line each; '' when there are none. */
export function renderEventLines(state: ClusterState, n: number, io: Pick<CliIo, 'color'>): string {
  return orderedEvents(state)
    .slice(-n)
    .map(([, e]) => `  ${formatEvent(e, io)}\n`)
    .join('');
}
