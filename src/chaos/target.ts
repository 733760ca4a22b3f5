import type { FullObserver, FullReport } from '../invariant/observer.js';
import type { WriteFaultSpec } from '../backends/writeFaults.js';
import type { ClusterSpec } from '../config/types.js';
import type { AgentExit } from '../localcluster/agentProcess.js';
import type { LocalCluster, NodeRunState } from '../localcluster/cluster.js';
import { applyWithCli } from './clusterOps.js';
import type { FaultKind } from './schedule.js';

// What the chaos runner needs from a cluster under test, whatever its dataplane: local processes with file
// backends (LocalCluster) or agents in network namespaces with nftables (netnsTarget.ts).

export interface ChaosTarget {
  readonly observer: FullObserver;
  /** etcd members the runner may kill (0 when etcd is not ours). */
  readonly killableEtcdMembers: number;
  /** Client URLs of the etcd members we started (to watch their raft term); empty when etcd is not ours. */
  readonly etcdClientUrls: readonly string[];
  readonly supportsAddNode: boolean;
  /** Fault kinds this target cannot inject (left out of the schedule). */
  readonly unsupported: readonly FaultKind[];
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
  freezeMember(i: number): void;
  thawMember(i: number): void;
  /** `clusterip-ha apply` this spec. */
  applySpec(spec: ClusterSpec): Promise<void>;
  /** A second agent with a live node's id, as another machine; its exit (null: had to be killed). */
  startClone(id: string, waitMs: number): Promise<{ label: string; exit: AgentExit | null }>;
  setWriteFaults(id: string, spec: WriteFaultSpec | null): Promise<void>;
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
    unsupported: [],
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
    freezeMember: (i) => lc.freezeMember(i),
    thawMember: (i) => lc.thawMember(i),
    applySpec: (spec) => applyWithCli(lc.etcd.endpoints, lc.cluster, spec),
    startClone: (id, ms) => lc.startClone(id, ms),
    setWriteFaults: (id, spec) => lc.setWriteFaults(id, spec),
    waitConverged: (ms) => lc.waitConverged(ms),
    finish: (o) => lc.finish(o),
    extras: () => ({}),
    stop: () => lc.stop(),
  };
}
