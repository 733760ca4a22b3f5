// Network-namespace dataplanes for the real nftables path (tests, `clusterip-ha chaos --dataplane netns`).

export * from './addressing.js';
export * from './analysis.js';
export { buildDataplane, defaultDataplaneSpec, unsettledReason } from './dataplane.js';
export type { Dataplane, DataplaneOptions, Ownership, SettleOptions } from './dataplane.js';
export { startEtcdInNs, type NsEtcd } from './etcdNs.js';
export { startMonitor, type Monitor, type MonitorEnd, type MonitorOptions, type MonitorRun } from './monitor.js';
export { ownedSetName, parseSetElements, readOwnedSet } from './nftRead.js';
export { startProber, type ProbeOptions, type ProbeResult, type Prober, type SourceAnswer } from './prober.js';
export { tcpReach } from './reach.js';
export { NetnsError } from './run.js';
export { startNodeServer, type NodeServer } from './servers.js';
export { applyStaticRuleset, renderStaticRuleset, setStaticOwned, type StaticRulesetOptions } from './staticRuleset.js';
export {
  createTopology,
  sweepStaleNamespaces,
  type ControlCutMode,
  type Topology,
  type TopologyNode,
  type TopologyOptions,
} from './topology.js';
