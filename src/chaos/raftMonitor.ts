// Watches the raft term of local etcd members, so the chaos checker knows when etcd elected a new leader.
// Every etcd leader change refreshes every lease (etcd 3.4 `lessor.Promote`: expiry = now + election timeout + TTL),
// so a failover that was waiting on a dead or cut-off node's lease restarts at the election: that is etcd's
// behaviour, not ours, and the checker must know when it happened rather than guess it from the member kill
// (an election can come up to two election timeouts after the kill, or from a restarted member without pre-vote).

export interface RaftChange {
  /** Wall-clock ms when the new term was first seen (at most one poll after the election). */
  t: number;
  term: number;
  leader: string;
}

export interface RaftMonitor {
  changes(): readonly RaftChange[];
  stop(): void;
}

interface StatusBody {
  leader?: string;
  raftTerm?: string;
}

/** Poll `POST /v3/maintenance/status` (the gRPC gateway) of every member; report each term increase once. */
export function startRaftMonitor(
  clientUrls: readonly string[],
  onChange: (c: RaftChange) => void,
  everyMs = 50,
): RaftMonitor {
  const seen: RaftChange[] = [];
  let term = -1;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  const poll = async (url: string): Promise<StatusBody | null> => {
    try {
      const res = await fetch(`${url}/v3/maintenance/status`, {
        method: 'POST',
        body: '{}',
        signal: AbortSignal.timeout(Math.max(everyMs * 4, 200)),
      });
      return res.ok ? ((await res.json()) as StatusBody) : null;
    } catch {
      return null; // a killed member: the others answer
    }
  };

  const tick = async (): Promise<void> => {
    const answers = await Promise.all(clientUrls.map(poll));
    const t = Date.now();
    for (const a of answers) {
      const tm = Number(a?.raftTerm);
      // A member's term moves up before it knows the leader (leader "0"): wait until one names a leader.
      if (!Number.isFinite(tm) || tm <= term || !a?.leader || a.leader === '0') continue;
      const first = term === -1;
      term = tm;
      const c = { t, term: tm, leader: a.leader };
      if (!first) {
        seen.push(c);
        onChange(c);
      }
    }
    if (!stopped) timer = setTimeout(() => void tick(), everyMs);
  };
  void tick();
  return {
    changes: () => seen,
    stop: () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
