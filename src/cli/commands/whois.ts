import { Option, type Command } from 'commander';
import { isIP } from 'node:net';
import { canonicalVip, familyOf } from '../../config/address.js';
import { HASH_MODES, type HashMode, type VipSpec } from '../../config/index.js';
import { bucketOf, type HashBackend } from '../../hash/index.js';
import { loadClusterState, type ClusterState } from '../../etcd/store.js';
import { addConnectionOptions, withConnection } from '../connection.js';
import { CliError, UsageError } from '../errors.js';
import type { CliIo } from '../io.js';

export interface WhoisAnswer {
  client: string;
  vip: string;
  bucket: number;
  /** The claim owner now (who really serves the client), or null. */
  owner: string | null;
  assigned: string | null;
  /** The node whose backend reports holding the bucket, or null. */
  backend: string | null;
  /** Which kernel hash was used. */
  hashedAs: HashBackend;
}

const port = (name: string) => (v: string) => {
  if (!/^\d+$/.test(v) || Number(v) > 65535) throw new UsageError(`${name}: "${v}" is not a port (0..65535)`);
  return Number(v);
};

export function registerWhois(program: Command, io: CliIo): void {
  const cmd = program
    .command('whois')
    .argument('<client-ip>', 'the client address (IPv4 or IPv6)')
    .description("which bucket the kernel's hash gives a client, and which node owns it now")
    .option('--sport <port>', 'client source port (hash modes with ports)', port('--sport'))
    .option('--dport <port>', 'destination port (sourceip-sourceport-destport)', port('--dport'))
    .option('--vip <address>', 'only this VIP (default: every VIP of the spec)')
    .option('--json', 'machine-readable output: one object, or an array when several VIPs answer')
    .option('--buckets <n>', 'offline: bucket count (no etcd; needs --seed)', (v) => {
      if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 4096)
        throw new UsageError(`--buckets: "${v}" is not 1..4096`);
      return Number(v);
    })
    .option('--seed <seed>', 'offline: hash seed, decimal or 0x hex')
    .addOption(
      new Option('--hash-mode <mode>', 'offline: hash mode (which fields are hashed)')
        .choices([...HASH_MODES])
        .default('sourceip'),
    )
    .addOption(
      new Option(
        '--backend <kind>',
        'which kernel hash (default: what the live nodes run; nftables for file/exec)',
      ).choices(['clusterip', 'nftables']),
    )
    .addHelpText(
      'after',
      `
Both backends hash what the VIP's hash mode names (ports too), but with different functions: the same client can\nland in different buckets under clusterip and nftables.

Examples:
  clusterip-ha whois 192.0.2.10
  clusterip-ha whois 192.0.2.10 --sport 51000 --vip 10.77.0.100 --json
  clusterip-ha whois 2001:db8:1::10 --vip 2001:db8::100
  clusterip-ha whois 192.0.2.10 --buckets 16 --seed 0x5eed1234 --backend nftables --json   # offline: {"bucket":N}`,
    );
  addConnectionOptions(cmd);
  cmd.action(async (given: string, opts: Record<string, unknown>) => {
    if (isIP(given) === 0) throw new UsageError(`"${given}" is not an IPv4 or IPv6 address`);
    const client = canonicalVip(given);
    if (typeof opts.vip === 'string') opts.vip = canonicalVip(opts.vip);
    const packet = {
      saddr: client,
      ...(opts.sport !== undefined ? { sport: opts.sport as number } : {}),
      ...(opts.dport !== undefined ? { dport: opts.dport as number } : {}),
    };
    if (opts.buckets !== undefined || opts.seed !== undefined) {
      // Offline: the hash alone, no etcd.
      if (opts.buckets === undefined || opts.seed === undefined)
        throw new UsageError('offline whois needs both --buckets and --seed');
      const seed = parseSeedFlag(opts.seed as string);
      const vip: VipSpec = {
        address: (opts.vip as string | undefined) ?? '0.0.0.0',
        interface: '-',
        buckets: opts.buckets as number,
        hashMode: opts.hashMode as HashMode,
        seed,
        clusterMac: '',
        sticky: false,
      };
      const backend = (opts.backend as HashBackend | undefined) ?? 'nftables';
      checkPorts(vip.hashMode, packet);
      const bucket = bucketOf(vip, backend, packet);
      io.out(opts.json ? `${JSON.stringify({ bucket })}\n` : `bucket ${bucket}\n`);
      return;
    }
    const skipped: string[] = [];
    const answers = await withConnection(opts, io.env, async (c) => {
      const state = await c.call('reading the cluster', () => loadClusterState(c.etcd, c.keys));
      return whoisOnline(
        state,
        client,
        packet,
        opts.vip as string | undefined,
        opts.backend as HashBackend | undefined,
        skipped,
      );
    });
    for (const sk of skipped) io.err(`skipped ${sk}\n`);
    if (opts.json) {
      io.out(`${JSON.stringify(answers.length === 1 ? answers[0] : answers)}\n`);
      return;
    }
    for (const a of answers) {
      io.out(
        `${a.client} -> ${a.vip} bucket ${a.bucket} (${a.hashedAs} hash): owner ${a.owner ?? 'NONE'}, assigned ${a.assigned ?? '-'}, backend ${a.backend ?? '-'}\n`,
      );
    }
  });
}

function parseSeedFlag(v: string): number {
  const n = /^0[xX][0-9a-fA-F]{1,8}$/.test(v) ? parseInt(v.slice(2), 16) : /^\d{1,10}$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n > 0xffffffff)
    throw new UsageError(`--seed: "${v}" is not a 32-bit number (decimal or 0x hex)`);
  return n;
}

// Both kernels hash the ports the mode names (CLUSTERIP's jhash_Nwords, nftables' `ip saddr . th sport …`).
function missingPort(mode: HashMode, p: { sport?: number; dport?: number }): string | undefined {
  if (mode !== 'sourceip' && p.sport === undefined) return `hash mode ${mode} needs --sport`;
  if (mode === 'sourceip-sourceport-destport' && p.dport === undefined) return `hash mode ${mode} needs --dport`;
  return undefined;
}

function checkPorts(mode: HashMode, p: { sport?: number; dport?: number }): void {
  const m = missingPort(mode, p);
  if (m) throw new UsageError(m);
}

/**
 * Pure: the answer for the VIP asked, or for every VIP of the spec whose hash mode the given ports can serve
 * (the others are listed in `skipped` with the flag they need).
 */
export function whoisOnline(
  state: ClusterState,
  client: string,
  packet: { saddr: string; sport?: number; dport?: number },
  onlyVip?: string,
  backendFlag?: HashBackend,
  skipped: string[] = [],
): WhoisAnswer[] {
  const spec = state.spec?.spec;
  if (!spec) throw new CliError('no cluster spec in etcd', 'apply one with `clusterip-ha apply -f cluster.yaml`');
  const vips = onlyVip ? spec.vips.filter((v) => v.address === onlyVip) : spec.vips;
  if (vips.length === 0) {
    throw new CliError(
      `VIP ${onlyVip} is not in the spec`,
      `known VIPs: ${spec.vips.map((v) => v.address).join(', ') || 'none'}`,
    );
  }
  const hashedAs = backendFlag ?? liveHash(state);
  const family = familyOf(client);
  if (onlyVip) {
    if (familyOf(vips[0]!.address) !== family)
      throw new UsageError(`VIP ${onlyVip} is ${familyOf(onlyVip)}; the client ${client} is ${family}`);
    checkPorts(vips[0]!.hashMode, packet);
  }
  const usable = vips.filter((v) => {
    // A client reaches the VIPs of its own address family only.
    if (familyOf(v.address) !== family) return false;
    const m = missingPort(v.hashMode, packet);
    if (m) skipped.push(`${v.address}: ${m}`);
    return m === undefined;
  });
  if (usable.length === 0) throw new UsageError(`no VIP can be answered: ${skipped.join('; ')}`);
  return usable.map((v) => {
    const bucket = bucketOf(v, hashedAs, packet);
    let backend: string | null = null;
    for (const [id, s] of [...state.statuses.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (state.nodes.has(id) && s.held[v.address]?.includes(bucket)) {
        backend = id;
        break;
      }
    }
    return {
      client,
      vip: v.address,
      bucket,
      owner: state.claims.get(v.address)?.get(bucket)?.owner ?? null,
      assigned: state.assignments.get(v.address)?.value.owners[String(bucket)] ?? null,
      backend,
      hashedAs,
    };
  });
}

/** The kernel hash the live nodes use: clusterip when they run it, else nftables (also for file and exec). */
function liveHash(state: ClusterState): HashBackend {
  const kinds = new Set([...state.statuses.values()].map((s) => s.backend));
  return kinds.size === 1 && kinds.has('clusterip') ? 'clusterip' : 'nftables';
}
