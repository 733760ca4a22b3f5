// The spec the demo applies: the same YAML an operator writes (deploy/examples/cluster.yaml is the commented
// version), parsed by the same code as `apply`.
export const DEMO_SPEC_YAML = `# clusterip-ha demo cluster
vips:
  - address: 10.77.0.100
    interface: eth0
    buckets: 16
    hashMode: sourceip
    seed: 0x5eed1234
  - address: 10.77.0.101
    interface: eth0
    buckets: 8
    hashMode: sourceip-sourceport
    seed: 0x0badcafe
rebalance:
  joinMovesPerInterval: 2
  intervalMs: 500
`;
