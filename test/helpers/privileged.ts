import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

// Tests that need root, network namespaces, nft or qemu skip elsewhere with a printed reason, but CI sets
// CLUSTERIP_HA_REQUIRE_PRIVILEGED=1 and then a missing capability is a failure, not a skip.

export const REQUIRE_PRIVILEGED = process.env.CLUSTERIP_HA_REQUIRE_PRIVILEGED === '1';

export interface Capability {
  ok: boolean;
  reason: string;
}

function probe(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

let netnsCache: Capability | undefined;

/** Root plus the ability to create a network namespace with nftables inside. */
export function netnsCapability(): Capability {
  if (netnsCache) return netnsCache;
  if (process.getuid?.() !== 0) return (netnsCache = { ok: false, reason: 'needs root' });
  if (!existsSync('/usr/sbin/nft') && !probe('nft', ['--version'])) {
    return (netnsCache = { ok: false, reason: 'needs nft (apt-get install -y nftables)' });
  }
  const name = `cipha-probe-${process.pid}`;
  const ok = probe('ip', ['netns', 'add', name]) && probe('ip', ['netns', 'exec', name, 'nft', 'list', 'ruleset']);
  probe('ip', ['netns', 'del', name]);
  return (netnsCache = ok
    ? { ok: true, reason: '' }
    : { ok: false, reason: 'cannot create a network namespace with nftables (ip netns add / nft)' });
}

/**
 * Gate a privileged test file: returns true when it may run. When it may not, prints why and either skips
 * (returns false) or, under CLUSTERIP_HA_REQUIRE_PRIVILEGED=1, throws so the suite fails.
 */
export function requireCapability(what: string, cap: Capability): boolean {
  if (cap.ok) return true;
  const msg = `${what}: ${cap.reason}`;
  if (REQUIRE_PRIVILEGED) throw new Error(`CLUSTERIP_HA_REQUIRE_PRIVILEGED=1 but ${msg}`);
  console.warn(`SKIP ${msg}`);
  return false;
}

/** A command-line tool the suite needs (promtool, setpriv): present when `cmd args` runs. */
export function toolCapability(cmd: string, args: string[], install: string): Capability {
  return probe(cmd, args) ? { ok: true, reason: '' } : { ok: false, reason: `needs ${cmd} (${install})` };
}
