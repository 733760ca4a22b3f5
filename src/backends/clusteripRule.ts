import type { VipSpec } from '../config/types.js';

// Pure pieces of CLUSTERIP rule management: the iptables-legacy arguments and the preflight decisions.

/** The user chain where a new CLUSTERIP config is born (see ClusteripBackend.installRule). Never hooked. */
export const INIT_CHAIN = 'CLUSTERIP_HA_INIT';

/**
 * iptables requires --local-node with --new, and the kernel claims that bucket the moment the rule is checked.
 * Always 1, so `-C` (which compares the whole target info) finds the rule again; the backend unclaims it before
 * the rule can see a packet.
 */
export const RULE_LOCAL_NODE = 1;

/** Rule specification after `-I/-C/-D <chain>`. Values must have been validated (validate.checkVip). */
export function clusteripRuleArgs(vip: VipSpec): string[] {
  return [
    '-d',
    `${vip.address}/32`,
    '-i',
    vip.interface,
    '-j',
    'CLUSTERIP',
    '--new',
    '--hashmode',
    vip.hashMode,
    '--clustermac',
    vip.clusterMac,
    '--total-nodes',
    String(vip.buckets),
    '--local-node',
    String(RULE_LOCAL_NODE),
    '--hash-init',
    String(vip.seed),
  ];
}

export type KernelVerdict = { ok: true } | { ok: false; reason: 'removedIn6_3' | 'unparsable'; message: string };

/** CLUSTERIP was removed in Linux 6.3. */
export function kernelSupportsClusterip(release: string): KernelVerdict {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return { ok: false, reason: 'unparsable', message: `cannot parse kernel release ${JSON.stringify(release)}` };
  const [major, minor] = [Number(m[1]), Number(m[2])];
  if (major > 6 || (major === 6 && minor >= 3)) {
    return {
      ok: false,
      reason: 'removedIn6_3',
      message: `this kernel is ${release}: CLUSTERIP was removed in Linux 6.3; use the nftables backend`,
    };
  }
  return { ok: true };
}

export type IptablesVerdict = { ok: true } | { ok: false; reason: 'nftFlavor' | 'unknownFlavor'; message: string };

/** `iptables --version` prints "iptables v1.8.9 (legacy)" or "(nf_tables)"; CLUSTERIP needs the legacy one. */
export function iptablesFlavor(versionOutput: string, path: string): IptablesVerdict {
  if (/\(legacy\)/.test(versionOutput)) return { ok: true };
  if (/nf_tables/.test(versionOutput)) {
    return {
      ok: false,
      reason: 'nftFlavor',
      message: `${path} is iptables-nft (${versionOutput.trim()}), which cannot express -j CLUSTERIP --new; install iptables-legacy (Debian: apt-get install iptables, then use /usr/sbin/iptables-legacy) or use the nftables backend`,
    };
  }
  // iptables before 1.8 has no flavor suffix and is always legacy.
  if (/^iptables v1\.[0-7]\./.test(versionOutput.trim())) return { ok: true };
  return {
    ok: false,
    reason: 'unknownFlavor',
    message: `cannot tell which iptables ${path} is: ${versionOutput.trim()}`,
  };
}

/** Addresses of CLUSTERIP rules in `iptables -S INPUT` output, with the rule's tokens after `-A INPUT`. */
export function parseClusteripRules(listing: string): { vip: string; spec: string[] }[] {
  const out: { vip: string; spec: string[] }[] = [];
  for (const line of listing.split('\n')) {
    const tokens = line.trim().split(/\s+/);
    if (tokens[0] !== '-A' || tokens[1] !== 'INPUT' || !tokens.includes('CLUSTERIP')) continue;
    const d = tokens.indexOf('-d');
    const addr = d >= 0 ? tokens[d + 1]?.replace(/\/32$/, '') : undefined;
    if (addr) out.push({ vip: addr, spec: tokens.slice(2) });
  }
  return out;
}
