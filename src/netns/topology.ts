import { readdir } from 'node:fs/promises';
import {
  CLIENT_NET6_PREFIX,
  CLIENT_NET_PREFIX,
  CLIENT_PRIMARY,
  CLIENT_PRIMARY6,
  CONTROL_NET_PREFIX,
  DEFAULT_VIP,
  ETCD_CONTROL_ADDRESS,
  checkNodeName,
  namespaceNames,
  nodeClientAddress,
  nodeClientAddress6,
  nodeControlAddress,
  ownerPidOf,
  sourceAddress,
  sourceAddress6,
  type NamespaceNames,
} from './addressing.js';
import { NetnsError, ipBatch, nsRun, run } from './run.js';
import { deriveClusterMac } from '../config/mac.js';

// The namespaces and links of one dataplane, and nothing else (no processes):
//
//   switch ns: br0 (client LAN) and br1 (control network), both with mcast_snooping 0 so frames to the
//              multicast cluster MAC are flooded to every port.
//   node ns:   eth0 on br0 (own address + the VIP), ctl0 on br1 (reaches etcd)
//   client ns: eth0 on br0, a primary address plus one /32 per probe source; VIP → cluster MAC static neighbour
//   etcd ns:   eth0 on br1
//
// With `link: 'macvlan'` a node's eth0 is a macvlan instead, as in VMs and containers: its lower veth sits in an
// underlay namespace of its own (a lower device in the node's namespace would hand the node every frame itself
// and hide the macvlan's multicast filter), so frames to the cluster MAC reach the node only if the MAC is on
// eth0's multicast list. With `resolution: 'learned'` the client has no static entries and resolves the VIPs by
// ARP and neighbour discovery. With `vip6`, IPv6 beside IPv4 (fd77::/64, no duplicate address detection: every
// node carries the VIP).
//
// Every link is created from inside the switch namespace with its peer placed straight into the other
// namespace, so the root namespace never sees an interface. Each namespace gets its ARP sysctls set explicitly
// because new namespaces inherit the host's conf/all.

export interface TopologyNode {
  name: string;
  ns: string;
  /** Own address on the client LAN (eth0). */
  address: string;
  /** Address on the control network (ctl0). */
  controlAddress: string;
  /** The switch-side port of this node's control link (in the switch ns). */
  controlPort: string;
}

export interface TopologyOptions {
  /** Node names ([a-z][a-z0-9]{0,7}); default n1, n2, n3. */
  nodes?: string[];
  /** Number of client source addresses; default 90. */
  sources?: number;
  vip?: string;
  /** Default: derived from the VIP like the config does. */
  clusterMac?: string;
  /** An IPv6 VIP beside the IPv4 one, with as many IPv6 sources. */
  vip6?: string;
  clusterMac6?: string;
  /** Node interfaces: veths on the bridge (default), or macvlans over underlay veths (filters multicast). */
  link?: 'veth' | 'macvlan';
  /** The client's neighbour entries for the VIPs: static (default) or learned by ARP / neighbour discovery. */
  resolution?: 'static' | 'learned';
  /** Create the etcd namespace on the control network (default true). */
  etcdNs?: boolean;
  /** Bound on the whole setup; default 30 s. */
  timeoutMs?: number;
}

export type ControlCutMode =
  /** Detach the node's port from the control bridge: frames vanish silently, like a dead switch port. */
  | 'blackhole'
  /** `ip link set ctl0 down` inside the node: the node's own stack sees the link go (fast connection errors). */
  | 'linkDown';

export interface Topology {
  readonly names: NamespaceNames;
  readonly nodes: TopologyNode[];
  readonly clientNs: string;
  readonly switchNs: string;
  /** null when created with `etcdNs: false`. */
  readonly etcdNs: string | null;
  readonly etcdAddress: string;
  readonly vip: string;
  readonly clusterMac: string;
  readonly sources: string[];
  /** With vip6: the IPv6 VIP and its sources (null / [] without). */
  readonly vip6: string | null;
  readonly sources6: string[];
  readonly link: 'veth' | 'macvlan';
  readonly setupMs: number;
  nsOf(node: string): string;
  node(name: string): TopologyNode;
  cutControl(node: string, mode?: ControlCutMode): Promise<void>;
  healControl(node: string): Promise<void>;
  /** Delete every namespace (idempotent, bounded). Kill the processes inside first. Returns the time taken. */
  destroy(): Promise<number>;
}

let seq = 0;

export async function createTopology(opts: TopologyOptions = {}): Promise<Topology> {
  const started = performance.now();
  const nodeNames = opts.nodes ?? ['n1', 'n2', 'n3'];
  nodeNames.forEach(checkNodeName);
  if (new Set(nodeNames).size !== nodeNames.length) throw new RangeError('node names must be unique');
  const nSources = opts.sources ?? 90;
  const vip = opts.vip ?? DEFAULT_VIP;
  const clusterMac = opts.clusterMac ?? deriveClusterMac(vip);
  const names = namespaceNames(process.pid, ++seq);
  const withEtcd = opts.etcdNs ?? true;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const link = opts.link ?? 'veth';
  const vip6 = opts.vip6 ?? null;
  const clusterMac6 = vip6 ? (opts.clusterMac6 ?? deriveClusterMac(vip6)) : null;
  const staticNeigh = (opts.resolution ?? 'static') === 'static';

  const nodes: TopologyNode[] = nodeNames.map((name, i) => ({
    name,
    ns: names.node(name),
    address: nodeClientAddress(i),
    controlAddress: nodeControlAddress(i),
    controlPort: `c-${name}`,
  }));
  const sources = Array.from({ length: nSources }, (_, i) => sourceAddress(i));
  const sources6 = vip6 ? Array.from({ length: nSources }, (_, i) => sourceAddress6(i)) : [];
  const allNs = [
    names.switchNs,
    ...(link === 'macvlan' ? [names.underlayNs] : []),
    names.clientNs,
    ...(withEtcd ? [names.etcdNs] : []),
    ...nodes.map((n) => n.ns),
  ];
  const created: string[] = [];

  let destroyed = false;
  const destroy = async (): Promise<number> => {
    const t = performance.now();
    if (destroyed) return 0;
    destroyed = true;
    await deleteNamespaces(created);
    return performance.now() - t;
  };

  const deadline = Date.now() + timeoutMs;
  const left = (): number => {
    const ms = deadline - Date.now();
    if (ms <= 0) throw new NetnsError(`topology setup exceeded ${timeoutMs} ms`);
    return ms;
  };

  try {
    for (const ns of allNs) {
      await run('ip', ['netns', 'add', ns], { timeoutMs: left() });
      created.push(ns);
    }
    // ARP and reverse-path settings before any interface exists, so `default` also covers the new ones.
    await Promise.all(
      allNs.map((ns) =>
        nsRun(
          ns,
          'sysctl',
          [
            '-q',
            '-w',
            ...['all', 'default'].flatMap((c) => [
              `net.ipv4.conf.${c}.arp_ignore=1`,
              `net.ipv4.conf.${c}.arp_announce=2`,
              `net.ipv4.conf.${c}.rp_filter=0`,
              `net.ipv6.conf.${c}.accept_dad=0`,
            ]),
          ],
          { timeoutMs: left() },
        ),
      ),
    );

    const sw: string[] = [
      'link set lo up',
      'link add br0 type bridge mcast_snooping 0',
      'link add br1 type bridge mcast_snooping 0',
      'link set br0 up',
      'link set br1 up',
      `link add p-client type veth peer name eth0 netns ${names.clientNs}`,
      'link set p-client master br0 up',
    ];
    if (withEtcd) {
      sw.push(`link add p-etcd type veth peer name eth0 netns ${names.etcdNs}`, 'link set p-etcd master br1 up');
    }
    for (const n of nodes) {
      sw.push(
        link === 'macvlan'
          ? `link add p-${n.name} type veth peer name u-${n.name} netns ${names.underlayNs}`
          : `link add p-${n.name} type veth peer name eth0 netns ${n.ns}`,
        `link set p-${n.name} master br0 up`,
        `link add ${n.controlPort} type veth peer name ctl0 netns ${n.ns}`,
        `link set ${n.controlPort} master br1 up`,
      );
    }
    await ipBatch(names.switchNs, sw, { timeoutMs: left() });
    if (link === 'macvlan') {
      // Created in the underlay, on its lower veth, and placed straight into the node's namespace as eth0.
      await ipBatch(
        names.underlayNs,
        [
          'link set lo up',
          ...nodes.flatMap((n) => [
            `link set u-${n.name} up`,
            `link add link u-${n.name} name eth0 netns ${n.ns} type macvlan mode bridge`,
          ]),
        ],
        { timeoutMs: left() },
      );
    }

    const client = [
      'link set lo up',
      `addr add ${CLIENT_PRIMARY}/${CLIENT_NET_PREFIX} dev eth0`,
      ...sources.map((s) => `addr add ${s}/32 dev eth0`),
      ...(vip6
        ? [
            `addr add ${CLIENT_PRIMARY6}/${CLIENT_NET6_PREFIX} dev eth0 nodad`,
            ...sources6.map((s) => `addr add ${s}/128 dev eth0 nodad`),
          ]
        : []),
      'link set eth0 up',
      // The client reaches the VIP through the cluster MAC (DESIGN §7): the bridge floods it to every node.
      ...(staticNeigh ? [`neigh replace ${vip} lladdr ${clusterMac} dev eth0 nud permanent`] : []),
      ...(staticNeigh && vip6 ? [`neigh replace ${vip6} lladdr ${clusterMac6} dev eth0 nud permanent`] : []),
    ];
    const batches: Promise<void>[] = [ipBatch(names.clientNs, client, { timeoutMs: left() })];
    if (withEtcd) {
      batches.push(
        ipBatch(
          names.etcdNs,
          ['link set lo up', `addr add ${ETCD_CONTROL_ADDRESS}/${CONTROL_NET_PREFIX} dev eth0`, 'link set eth0 up'],
          { timeoutMs: left() },
        ),
      );
    }
    for (const n of nodes) {
      batches.push(
        ipBatch(
          n.ns,
          [
            'link set lo up',
            `addr add ${n.address}/${CLIENT_NET_PREFIX} dev eth0`,
            `addr add ${vip}/32 dev eth0`,
            ...(vip6
              ? [
                  `addr add ${nodeClientAddress6(nodes.indexOf(n))}/${CLIENT_NET6_PREFIX} dev eth0 nodad`,
                  `addr add ${vip6}/128 dev eth0 nodad`,
                ]
              : []),
            'link set eth0 up',
            `addr add ${n.controlAddress}/${CONTROL_NET_PREFIX} dev ctl0`,
            'link set ctl0 up',
          ],
          { timeoutMs: left() },
        ),
      );
    }
    await Promise.all(batches);
  } catch (err) {
    await destroy();
    throw err;
  }

  const byName = new Map(nodes.map((n) => [n.name, n]));
  const nodeOf = (name: string): TopologyNode => {
    const n = byName.get(name);
    if (!n) throw new NetnsError(`no node ${JSON.stringify(name)} in this topology`);
    return n;
  };
  const cutModes = new Map<string, ControlCutMode>();

  return {
    names,
    nodes,
    clientNs: names.clientNs,
    switchNs: names.switchNs,
    etcdNs: withEtcd ? names.etcdNs : null,
    etcdAddress: ETCD_CONTROL_ADDRESS,
    vip,
    clusterMac,
    sources,
    vip6,
    sources6,
    link,
    setupMs: performance.now() - started,
    nsOf: (name) => nodeOf(name).ns,
    node: nodeOf,
    async cutControl(name, mode = 'blackhole') {
      const n = nodeOf(name);
      if (mode === 'blackhole') await run('ip', ['-n', names.switchNs, 'link', 'set', n.controlPort, 'nomaster']);
      else await run('ip', ['-n', n.ns, 'link', 'set', 'ctl0', 'down']);
      cutModes.set(name, mode);
    },
    async healControl(name) {
      const n = nodeOf(name);
      const mode = cutModes.get(name);
      if (mode === 'linkDown') await run('ip', ['-n', n.ns, 'link', 'set', 'ctl0', 'up']);
      else await run('ip', ['-n', names.switchNs, 'link', 'set', n.controlPort, 'master', 'br1']);
      cutModes.delete(name);
    },
    destroy,
  };
}

async function deleteNamespaces(list: readonly string[]): Promise<void> {
  // Nodes and client first, the switch last; each deletion bounded on its own so one stuck call cannot keep the
  // rest alive.
  for (const ns of [...list].reverse()) {
    await run('ip', ['netns', 'del', ns], { allowFail: true, timeoutMs: 5000 });
  }
}

/**
 * Delete topology namespaces (`cipha-dp-<pid>-…`) whose creating process is gone: a crashed test run must not
 * leave namespaces behind forever. Namespaces of live processes are never touched.
 */
export async function sweepStaleNamespaces(): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir('/run/netns');
  } catch {
    return [];
  }
  const stale = entries.filter((ns) => {
    const pid = ownerPidOf(ns);
    return pid !== undefined && pid !== process.pid && !pidAlive(pid);
  });
  for (const ns of stale) {
    // Processes a crashed run left inside (agents, etcd) would keep the namespace alive: end them by pid.
    const r = await run('ip', ['netns', 'pids', ns], { allowFail: true, timeoutMs: 5000 });
    for (const pid of r.stdout.split(/\s+/).filter(Boolean).map(Number)) {
      if (Number.isInteger(pid) && pid > 1) signalPid(pid, 'SIGKILL');
    }
  }
  await deleteNamespaces(stale);
  return stale;
}

function signalPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
