// Addresses and names of a netns topology. Pure, so tests and chaos can predict them. Everything lives inside
// namespaces the topology creates, so fixed private ranges cannot collide with the host or other topologies.

/** Client network (the cluster's LAN): nodes, client and the VIP. */
export const CLIENT_NET_PREFIX = 16;
/** Control network (nodes ↔ etcd). */
export const CONTROL_NET_PREFIX = 24;
export const DEFAULT_VIP = '10.77.0.100';
export const CLIENT_PRIMARY = '10.77.0.2';
export const ETCD_CONTROL_ADDRESS = '10.78.0.1';
export const ETCD_CLIENT_PORT = 2379;
export const SERVER_UDP_PORT = 7000;
export const SERVER_TCP_PORT = 7001;
/** Long-lived TCP: greets with the node name, then echoes every line (a held connection's liveness). */
export const SERVER_ECHO_PORT = 7002;
export const MAX_NODES = 200;
export const MAX_SOURCES = 250 * 40;

/** Node i (0-based) on the client network. */
export function nodeClientAddress(i: number): string {
  if (i < 0 || i >= MAX_NODES) throw new RangeError(`node index ${i} out of range`);
  return `10.77.${Math.floor(i / 50) + 200}.${(i % 50) + 11}`;
}

/** IPv6 on the client network: fd77::/64 (nodes fd77::2:<i+11>, client fd77::2, sources fd77::1:<i+1>). */
export const CLIENT_NET6_PREFIX = 64;
export const CLIENT_PRIMARY6 = 'fd77::2';
export const DEFAULT_VIP6 = 'fd77::100';

export function nodeClientAddress6(i: number): string {
  if (i < 0 || i >= MAX_NODES) throw new RangeError(`node index ${i} out of range`);
  return `fd77::2:${(i + 11).toString(16)}`;
}

export function sourceAddress6(i: number): string {
  if (i < 0 || i >= MAX_SOURCES) throw new RangeError(`source index ${i} out of range`);
  return `fd77::1:${(i + 1).toString(16)}`;
}

/** Node i (0-based) on the control network. */
export function nodeControlAddress(i: number): string {
  if (i < 0 || i >= 240) throw new RangeError(`node index ${i} out of range for the control network`);
  return `10.78.0.${i + 11}`;
}

/** Client source i (0-based): 10.77.1.1 … 10.77.1.250, 10.77.2.1 … */
export function sourceAddress(i: number): string {
  if (i < 0 || i >= MAX_SOURCES) throw new RangeError(`source index ${i} out of range`);
  return `10.77.${Math.floor(i / 250) + 1}.${(i % 250) + 1}`;
}

export interface NamespaceNames {
  prefix: string;
  switchNs: string;
  clientNs: string;
  etcdNs: string;
  /** Where the lower veths of macvlan nodes live (see topology.ts). */
  underlayNs: string;
  node(name: string): string;
}

/** `cipha-dp-<pid>-<seq>-…`: the pid lets a later run sweep namespaces whose owner died. */
export function namespaceNames(pid: number, seq: number): NamespaceNames {
  const prefix = `cipha-dp-${pid}-${seq}-`;
  return {
    prefix,
    switchNs: `${prefix}sw`,
    clientNs: `${prefix}client`,
    etcdNs: `${prefix}etcd`,
    underlayNs: `${prefix}under`,
    node: (name) => `${prefix}node-${name}`,
  };
}

/** The pid encoded in a topology namespace name, or undefined for names that are not ours. */
export function ownerPidOf(ns: string): number | undefined {
  const m = /^cipha-dp-(\d+)-\d+-/.exec(ns);
  return m ? Number(m[1]) : undefined;
}

const NODE_NAME_RE = /^[a-z][a-z0-9]{0,7}$/;

/** Node names end up in interface and namespace names: short, lower-case, no separators. */
export function checkNodeName(name: string): void {
  if (!NODE_NAME_RE.test(name)) throw new RangeError(`node name ${JSON.stringify(name)}: use [a-z][a-z0-9]{0,7}`);
}
