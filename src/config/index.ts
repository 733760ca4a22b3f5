// The config area's public surface: everything outside src/config imports from here.

export * from './types.js';
export { deriveClusterMac, isMulticastMac, normalizeMac } from './mac.js';
export {
  clusterSpecSchema,
  isValidInterfaceName,
  parseSeed,
  parseClusterSpecYaml,
  validateClusterSpec,
  loadClusterSpecFile,
  type ClusterSpecOptions,
} from './clusterSpec.js';
export {
  loadNodeConfig,
  resolveNodeConfig,
  addNodeConfigOptions,
  type LoadNodeConfigInput,
  type ResolveInput,
} from './nodeConfig.js';
export {
  NODE_OPTIONS,
  envVarFor,
  defaultFenceMarginMs,
  defaultNodeId,
  parseListen,
  type NodeOption,
} from './nodeOptions.js';
export { renderConfigReference } from './reference.js';
