// The metrics area's public surface.
export {
  attachAgentMetrics,
  type AgentMetrics,
  type AgentEventSource,
  type AgentMetricsOptions,
} from './agentMetrics.js';
export { startMetricsServer, type MetricsServer, type HealthState } from './server.js';
export { nextHealth, trackHealth, withRegistration, INITIAL_HEALTH, type Health, type HealthReason } from './health.js';
