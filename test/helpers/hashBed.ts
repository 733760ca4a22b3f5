import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

// The bed of the kernel hash tests (nft-hash.test.ts): a client namespace that sends one UDP datagram from each
// source address over a veth pair to a server namespace whose nft ruleset records what it hashed. IPv4 or IPv6,
// by the server's address. Nothing leaves the two namespaces.

const sh = promisify(execFile);

export async function run(cmd: string, args: string[], input?: string, timeoutMs = 30_000): Promise<string> {
  const child = sh(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20 });
  if (input !== undefined) child.child.stdin!.end(input);
  return (await child).stdout;
}

export const inNs = (ns: string, cmd: string[], input?: string): Promise<string> =>
  run('ip', ['netns', 'exec', ns, ...cmd], input);

// Runs inside the client namespace: one datagram per `source|dport`, at most 32 sockets open at once.
const SENDER = `
import dgram from 'node:dgram';
const [dst, ...args] = process.argv.slice(2);
const sendFrom = (arg) => new Promise((resolve) => {
  const [src, dport] = arg.split('|');
  const s = dgram.createSocket(dst.includes(':') ? 'udp6' : 'udp4');
  const done = (err) => { s.close(); resolve(err ? arg + ': ' + err.message : null); };
  s.once('error', done);
  s.bind({ address: src, port: 0 }, () => s.send('x', Number(dport), dst, done));
});
const errors = [];
for (let i = 0; i < args.length; i += 32) {
  for (const e of await Promise.all(args.slice(i, i + 32).map(sendFrom))) if (e) errors.push(e);
}
if (errors.length) { console.error(errors.join('\\n')); process.exit(1); }
`;

export interface HashBedOptions {
  client: string;
  server: string;
  serverIp: string;
  serverMac: string;
  /** The client's own address on the link, with its prefix ("10.200.0.2/24"). */
  clientAddress: string;
  sources: readonly string[];
  ruleset: string;
  dportOf: (source: string) => number;
  /** The sources the server recorded so far: those missing are sent again (3 rounds at most). */
  seen: () => Promise<Set<string>>;
}

export interface HashBed {
  teardown(): Promise<void>;
}

export async function createHashBed(o: HashBedOptions): Promise<HashBed> {
  const v6 = o.serverIp.includes(':');
  const nodad = v6 ? ' nodad' : '';
  const dir = mkdtempSync(join(tmpdir(), 'cipha-hash-'));
  const teardown = async (): Promise<void> => {
    for (const ns of [o.client, o.server])
      await run('ip', ['netns', 'del', ns], undefined, 10_000).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await run('ip', ['netns', 'add', o.client]);
    await run('ip', ['netns', 'add', o.server]);
    // Both ends are created from inside the server namespace: the root namespace never sees the link.
    await run('ip', [
      '-n',
      o.server,
      'link',
      'add',
      'eth0',
      'address',
      o.serverMac,
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      o.client,
    ]);
    const prefix = v6 ? 64 : 24;
    await run(
      'ip',
      ['-n', o.server, '-batch', '-'],
      [`address add ${o.serverIp}/${prefix} dev eth0${nodad}`, 'link set lo up', 'link set eth0 up', ''].join('\n'),
    );
    await run(
      'ip',
      ['-n', o.client, '-batch', '-'],
      [
        `address add ${o.clientAddress} dev eth0${nodad}`,
        'link set lo up',
        'link set eth0 up',
        `neighbour replace ${o.serverIp} lladdr ${o.serverMac} dev eth0 nud permanent`,
        ...o.sources.map((a) => `address add ${a}/${v6 ? 128 : 32} dev eth0${nodad}`),
        '',
      ].join('\n'),
    );
    await inNs(o.server, ['nft', '-f', '-'], o.ruleset);
    writeFileSync(join(dir, 'send.mjs'), SENDER);
    let missing = [...o.sources];
    for (let round = 0; round < 3 && missing.length > 0; round++) {
      await inNs(o.client, [
        process.execPath,
        join(dir, 'send.mjs'),
        o.serverIp,
        ...missing.map((a) => `${a}|${o.dportOf(a)}`),
      ]);
      await new Promise((r) => setTimeout(r, 200));
      const seen = await o.seen();
      missing = missing.filter((a) => !seen.has(a));
    }
  } catch (err) {
    await teardown();
    throw err;
  }
  return { teardown };
}

/** The elements of a set as `nft -j` lists them. */
export async function listSet(ns: string, family: 'ip' | 'ip6', table: string, name: string): Promise<unknown[]> {
  const json = JSON.parse(await inNs(ns, ['nft', '-j', 'list', 'set', family, table, name])) as {
    nftables: { set?: { elem?: unknown[] } }[];
  };
  return json.nftables.find((x) => x.set)?.set?.elem ?? [];
}

/** An element's value: bare, or inside {elem: {val}} when it carries a timeout or counter. */
export const valOf = (e: unknown): unknown =>
  typeof e === 'object' && e !== null && 'elem' in e ? (e as { elem: { val: unknown } }).elem.val : e;
