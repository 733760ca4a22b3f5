import { CONFIG_ENV, CONFIG_FLAG, NODE_OPTIONS, envVarFor } from './nodeOptions.js';
import { BACKEND_KINDS, CHECK_TYPES, HASH_MODES, HTTP_METHODS, MAX_BUCKETS } from './types.js';
import { hashInput } from '../backends/nftRuleset.js';

// docs/configuration.md is this function's output (a unit test fails when they differ), so the reference
// cannot drift from the option table. Regenerate: npm run build && node dist/config/writeReference.js

const cell = (s: string) => s.replaceAll('|', '\\|');

function checksTable(): string {
  return [
    '| field | types | default | meaning |',
    '|---|---|---|---|',
    '| `name` | all | required | Unique per node; names the check in the drain reason `unhealthy:<name>`, metrics and status. |',
    `| \`type\` | all | required | ${CHECK_TYPES.map((t) => `\`${t}\``).join(', ')}. |`,
    '| `target` | all | required | exec: the command as an argv list (no shell unless you write `["sh", "-c", "..."]`); tcp: `HOST:PORT`; http(s): a URL. |',
    '| `intervalMs` | all | `1000` | Time from the start of one run to the start of the next (10..3600000). |',
    '| `timeoutMs` | all | `intervalMs` | A run that takes longer fails; an exec check is killed (SIGKILL to its process group). At most `intervalMs`. |',
    '| `rise` | all | `1` | Consecutive successes that make a down check up (1..100). |',
    '| `fall` | all | `1` | Consecutive failures that make an up check down (1..100). |',
    "| `initial` | all | `up` | State before the first `rise`/`fall` results; `down` is keepalived's `init_fail`. |",
    `| \`method\` | http, https | \`GET\` | ${HTTP_METHODS.join(', ')}. |`,
    '| `expectStatus` | http, https | any 2xx or 3xx | List of status codes that count as success. |',
    '| `ca` | https | system CAs | CA bundle (PEM) that signed the service certificate; the file must exist. |',
  ].join('\n');
}

function nodeTable(): string {
  const rows = NODE_OPTIONS.map(
    (o) =>
      `| ${cell(`\`--${o.flag} ${o.type === 'boolean' ? `[${o.valueName}]` : o.valueName}\``)} | \`${envVarFor(o.flag)}\` | \`${o.yaml.join('.')}\` | ${cell(o.defaultText)} | ${cell(o.description)} |`,
  );
  return [
    '| flag | environment | YAML field | default | meaning |',
    '|---|---|---|---|---|',
    `| \`--${CONFIG_FLAG} FILE\` | \`${CONFIG_ENV}\` | | none | The node config YAML file. |`,
    ...rows,
  ].join('\n');
}

const NODE_EXAMPLE = `# /etc/clusterip-ha/node.yaml — every field is optional; flags and environment variables override it.
nodeId: node1                 # default: the host name
weight: 1
cluster: default              # keys live under /clusterip-ha/default/
etcd:
  endpoints: [https://10.0.0.1:2379, https://10.0.0.2:2379, https://10.0.0.3:2379]
  ca: /etc/clusterip-ha/etcd-ca.pem
  cert: /etc/clusterip-ha/node1.pem
  key: /etc/clusterip-ha/node1-key.pem
  requestTimeoutMs: 1000
backend:
  kind: nftables              # clusterip | nftables | file | exec
  table: clusterip_ha
  nftPath: nft
  arpMangle: false
  # kind: file      -> dir: /var/lib/clusterip-ha/buckets
  # kind: clusterip -> procDir: /proc/net/ipt_CLUSTERIP, manageRule: true, iptablesPath: iptables-legacy
  # kind: exec      -> command: ["/usr/local/bin/vip-hook"], timeoutMs: 5000
leaseTtlSeconds: 2
fenceMarginMs: 500            # default max(250, TTL*1000/4); must be below TTL*1000/2
metricsListen: 127.0.0.1:9477 # or "off"
stateDir: /var/lib/clusterip-ha
logLevel: info
shutdownTimeoutMs: 10000
restartBudgetMs: 2500         # SIGHUP: hitless restart only with this much left before the fence deadline
checks:                       # a failing check drains the node (reason unhealthy:<name>)
  - name: web
    type: tcp                 # exec | tcp | http | https
    target: 127.0.0.1:80
    intervalMs: 1000
    timeoutMs: 500
    rise: 2
    fall: 2
  - name: api
    type: https
    target: https://127.0.0.1:8443/healthz
    method: GET
    expectStatus: [200, 204]
    ca: /etc/clusterip-ha/api-ca.pem
  - name: dns
    type: exec
    target: ["/usr/bin/dig", "+time=1", "+tries=1", "@127.0.0.1", "health.example.", "A"]
maintenanceFile: /etc/clusterip-ha/maintenance   # exists = drain (reason maintenance)
healthHoldMs: 10000
`;

const SPEC_EXAMPLE = `# cluster spec — stored in etcd by \`clusterip-ha apply\`
vips:
  - address: 10.77.0.100
    interface: eth0
    buckets: 16
    hashMode: sourceip        # sourceip | sourceip-sourceport | sourceip-sourceport-destport
    seed: 0x5eed1234          # CLUSTERIP --hash-init / nftables jhash seed
    clusterMac: 01:00:5e:4d:00:64   # optional
    sticky: false             # nftables only
rebalance:
  joinMovesPerInterval: 1     # 0 = never move buckets of live nodes
  intervalMs: 1000
minHealthyNodes: 1            # keep this many serving even when every node's checks fail
`;

function specTable(): string {
  const max = BACKEND_KINDS.map((k) => `${k} ${MAX_BUCKETS[k]}`).join(', ');
  return [
    '| field | required | meaning |',
    '|---|---|---|',
    '| `vips[].address` | yes | Unicast IPv4 or IPv6 address of the VIP (IPv6: global or unique-local, stored in RFC 5952 form; nftables, file and exec backends only); unique in the spec. |',
    '| `vips[].interface` | yes | Interface it is served on: 1–15 characters, no `/`, `:` or spaces (Linux IFNAMSIZ rules). |',
    `| \`vips[].buckets\` | yes | Bucket count N (buckets 1..N); the most per backend: ${max}. |`,
    `| \`vips[].hashMode\` | no, \`sourceip\` | ${HASH_MODES.map((m) => `\`${m}\``).join(', ')}. What the nftables backend hashes for each: ${HASH_MODES.map((m) => `\`${m}\` → \`jhash ${hashInput(m)}\``).join('; ')} (other bucket numbers than CLUSTERIP's for the same client; \`whois\` knows both). |`,
    '| `vips[].seed` | yes | 32-bit hash seed: an integer or a `0x…` hex string. Explicit, so every node hashes alike. |',
    '| `vips[].clusterMac` | no, derived | Multicast MAC; default `01:00:5e` + the low 23 bits of an IPv4 address (10.77.0.100 → 01:00:5e:4d:00:64), `33:33` + the low 32 bits of an IPv6 one (2001:db8::100 → 33:33:00:00:01:00). |',
    '| `vips[].sticky` | no, `false` | Keep established TCP on the old owner when a bucket moves (not with the clusterip backend). |',
    '| `rebalance.joinMovesPerInterval` | no, `1` | Buckets of live nodes moved per interval after a join; 0 = never. |',
    '| `rebalance.intervalMs` | no, `1000` | The interval, in milliseconds (10..3600000). |',
    '| `minHealthyNodes` | no, `1` | Panic threshold: when fewer live nodes pass their checks, the leader keeps this many of the failing ones serving (in node id order) and says so in status, events and metrics; 0 = drain them all. |',
  ].join('\n');
}

export function renderConfigReference(): string {
  // prettier-ignore keeps `prettier --check .` from reformatting (and so un-matching) the generated file.
  return `<!-- prettier-ignore-start -->
<!-- Generated by renderConfigReference() in src/config/reference.ts; do not edit by hand. -->
# Configuration

clusterip-ha reads two YAML documents: the **node config** (one per machine, given to \`clusterip-ha agent\`)
and the **cluster spec** (one per cluster, stored in etcd by \`clusterip-ha apply\`). Both are validated
strictly: an unknown field is an error, and every problem is reported at once with the file, the line, the
field and what was expected, e.g.

\`\`\`
spec.yaml:9: vips[1].buckets: 40 exceeds 16, the most the clusterip backend supports
\`\`\`

## Node config

Every setting can be given as a flag, an environment variable or a field of the YAML file named by
\`--${CONFIG_FLAG}\`. Precedence: **flag > environment > file > default**. In flags and the environment, lists
are comma-separated and booleans are \`true\`, \`false\`, \`1\` or \`0\`; an empty environment variable counts as
unset. Options of one backend are errors when another backend is selected. Paths are used as written
(relative ones relative to the agent's working directory).

${nodeTable()}

Checks across fields: the fence margin must be below half the lease TTL; \`--etcd-cert\` and \`--etcd-key\` go
together, as do \`--etcd-user\` and \`--etcd-password\`; TLS files must exist and need \`https://\` endpoints;
the exec backend needs \`--exec-command\`.

### Service checks

Each entry of \`checks\` (DESIGN §14; keepalived's \`vrrp_script\` defaults). A node whose check is down, or whose
\`maintenanceFile\` exists, drains through the graceful path (its node key says why: \`unhealthy:<name>\` or
\`maintenance\`); it takes buckets again once every check is up and the maintenance file is gone, but no sooner than
\`healthHoldMs\` after it drained. An operator's \`clusterip-ha drain\` is kept apart and is never undone by a check.
Exec checks run without a shell, with an empty environment except \`PATH\` (no etcd credentials), and their output
is cut at 4 KiB. Names are unique; each check runs one probe at a time and never blocks the event loop that keeps the lease.

${checksTable()}

\`\`\`yaml
${NODE_EXAMPLE}\`\`\`

## Cluster spec

${specTable()}

Checks across fields: VIP addresses are unique; when the backend is known (\`clusterip-ha apply --backend\`,
and every agent when it reads the spec) the bucket count must fit it, \`sticky\` needs nftables, and IPv6 VIPs cannot use the clusterip backend.

\`\`\`yaml
${SPEC_EXAMPLE}\`\`\`
<!-- prettier-ignore-end -->
`;
}
