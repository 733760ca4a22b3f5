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

/**
 * The chain a VIP's INPUT traffic jumps to (and is dropped in) while its CLUSTERIP config is rebuilt. Between
 * deleting the old rule and inserting the new one the VIP has no CLUSTERIP rule at all, and then every node would
 * accept its UDP: the guard keeps it dark instead.
 */
export const GUARD_CHAIN = 'CLUSTERIP_HA_GUARD';

/** Rule specification of the guard jump after `-I/-C/-D INPUT`. */
export function guardRuleArgs(address: string): string[] {
  return ['-d', `${address}/32`, '-j', GUARD_CHAIN];
}

/** Addresses whose guard jump is in an `iptables -S INPUT` listing (a rebuild that did not finish). */
export function parseGuardedVips(listing: string): Set<string> {
  const out = new Set<string>();
  for (const line of listing.split('\n')) {
    const m = /^-A INPUT -d (\d+\.\d+\.\d+\.\d+)\/32 -j (\S+)\s*$/.exec(line.trim());
    if (m && m[2] === GUARD_CHAIN) out.add(m[1]!);
  }
  return out;
}

/** The hash identity (and match) of one CLUSTERIP rule as `iptables -S` prints it. */
export interface ClusteripRuleIdentity {
  iface: string | undefined;
  hashMode: string | undefined;
  clusterMac: string | undefined;
  totalNodes: number | undefined;
  hashInit: number | undefined;
}

export function ruleIdentity(spec: readonly string[]): ClusteripRuleIdentity {
  const at = (flag: string): string | undefined => {
    const i = spec.indexOf(flag);
    return i >= 0 ? spec[i + 1] : undefined;
  };
  const num = (flag: string): number | undefined => {
    const s = at(flag);
    return s !== undefined && /^\d+$/.test(s) ? Number(s) : undefined;
  };
  return {
    iface: at('-i'),
    hashMode: at('--hashmode'),
    clusterMac: at('--clustermac')?.toLowerCase(),
    totalNodes: num('--total-nodes'),
    hashInit: num('--hash-init'),
  };
}

/** Whether a listed rule is the one the spec asks for (same interface and hash identity). */
export function ruleMatches(vip: VipSpec, spec: readonly string[]): boolean {
  const r = ruleIdentity(spec);
  return (
    r.iface === vip.interface &&
    r.hashMode === vip.hashMode &&
    r.clusterMac === vip.clusterMac.toLowerCase() &&
    r.totalNodes === vip.buckets &&
    r.hashInit === vip.seed
  );
}

/**
 * What ensure does with one VIP's rule (DESIGN §12). The kernel keeps one config per VIP and reuses it for any new
 * rule naming the VIP (`clusterip_tg_check` compares only the cluster MAC), so a changed identity is applied only by
 * deleting every old rule first (the config dies with its last rule) and creating the config anew.
 */
export type RulePlan =
  | { action: 'keep'; reason: 'matches' }
  | { action: 'install'; reason: 'absent' }
  | {
      action: 'rebuild';
      reason:
        | 'identityChanged' // a rule with other parameters (bucket count, hash mode, seed, MAC, interface)
        | 'duplicateRules' // more than one rule: the config is the oldest one's, whatever the others say
        | 'orphanConfig' // a config without an INPUT rule (an interrupted install): its parameters are unknown
        | 'interrupted'; // a guard left by a rebuild that did not finish
    };

export function planRule(
  vip: VipSpec,
  rules: readonly { spec: readonly string[] }[],
  procExists: boolean,
  guarded: boolean,
): RulePlan {
  if (guarded) return { action: 'rebuild', reason: 'interrupted' };
  if (rules.length === 0)
    return procExists ? { action: 'rebuild', reason: 'orphanConfig' } : { action: 'install', reason: 'absent' };
  if (rules.length > 1) return { action: 'rebuild', reason: 'duplicateRules' };
  return ruleMatches(vip, rules[0]!.spec)
    ? { action: 'keep', reason: 'matches' }
    : { action: 'rebuild', reason: 'identityChanged' };
}
