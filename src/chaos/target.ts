import type { FullObserver, FullReport } from '../invariant/observer.js';
import type { LocalCluster, NodeRunState } from '../localcluster/cluster.js';

// What the chaos runner needs from a cluster under test, whatever its dataplane: local processes with file
// backends (LocalCluster) or agents in network namespaces with nftables (netnsTarget.ts).

export interface ChaosTarget {
  readonly observer: FullObserver;
  /** etcd members the runner may kill (0 when etcd is not ours). */
  readonly killableEtcdMembers: number;
  /** Client URLs of the etcd members we started (to watch their raft term); empty when etcd is not ours. */
  readonly etcdClientUrls: readonly string[];
  readonly supportsAddNode: boolean;
  nodes(): { id: string; run: NodeRunState }[];
  kill(id: string, sig?: NodeJS.Signals): Promise<void>;
  freeze(id: string): void;
  thaw(id: string): void;
  restart(id: string): Promise<void>;
  addNode(): Promise<string>;
  /** 'reset': the peer is gone at once; 'blackhole': packets vanish, only timeouts tell. */
  partition(id: string, mode: 'reset' | 'blackhole'): Promise<void>;
  heal(id: string): Promise<void>;
  drain(id: string): Promise<boolean>;
  undrain(id: string): Promise<boolean>;
  terminate(id: string): Promise<void>;
  killMember(i: number): Promise<void>;
  restartMember(i: number): Promise<void>;
  waitConverged(timeoutMs: number): Promise<boolean>;
  finish(opts?: { expectConverged?: boolean; convergeTimeoutMs?: number }): Promise<FullReport>;
  /** Figures only this dataplane has (probe counts, double replies), for the report. */
  extras(): Record<string, number>;
  stop(): Promise<void>;
}

export function localTarget(lc: LocalCluster, killableEtcdMembers: number): ChaosTarget {
  return {
    observer: lc.observer,
    killableEtcdMembers,
    etcdClientUrls: killableEtcdMembers > 0 ? lc.etcd.members.map((m) => m.clientUrl) : [],
    supportsAddNode: true,
    nodes: () => lc.nodes().map((n) => ({ id: n.id, run: n.run })),
    kill: (id, sig) => lc.kill(id, sig),
    freeze: (id) => lc.freeze(id),
    thaw: (id) => lc.thaw(id),
    restart: (id) => lc.restart(id),
    addNode: () => lc.addNode(),
    partition: async (id, mode) => lc.partition(id, mode),
    heal: async (id) => lc.heal(id),
    drain: (id) => lc.drain(id),
    undrain: (id) => lc.undrain(id),
    terminate: (id) => lc.terminate(id),
    killMember: (i) => lc.etcd.killMember(i),
    restartMember: (i) => lc.etcd.restartMember(i),
    waitConverged: (ms) => lc.waitConverged(ms),
    finish: (o) => lc.finish(o),
    extras: () => ({}),
    stop: () => lc.stop(),
  };
}
