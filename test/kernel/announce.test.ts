import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { arpAnnouncement, unsolicitedNa, type AnnounceResult } from '../../src/backends/announce.js';
import { netnsCapability, requireCapability, toolCapability } from '../helpers/privileged.js';

// The gratuitous announcements against a real Linux client: two namespaces joined by a veth pair; the client holds
// non-permanent (STALE) entries for the VIPs with an old MAC, the node's sendAnnouncements sends the frames, and the
// client's entries must switch to the cluster MACs, though they were updated within ARP's locktime. Controls:
// entries nobody announced keep their MAC, an announcement for an address the client has no entry for creates none
// (arp_accept 0, accept_untracked_na 0), and the same reply with a broadcast target hardware address is ignored.
//
// A packet socket works in its creator's namespace and Node has no setns, so the sender runs as a child under
// `ip netns exec`. Not from dist/ (that needs `npm run build` and may be stale): the test transpiles announce.ts and
// the local modules it imports (TypeScript's transpileModule, no type check) into a temporary directory whose
// node_modules links to the repository's, for koffi.

const PREFIX = `cipha-ann-${process.pid}-`;
const NODE = `${PREFIX}n`;
const CLIENT = `${PREFIX}c`;
const NODE_MAC = '02:00:00:a0:00:02';
const CLIENT_MAC = '02:00:00:a0:00:01';
const OLD_MAC = '02:00:00:00:00:99';
const V4 = { vip: '10.201.0.100', clusterMac: '01:00:5e:49:00:64' };
const V6 = { vip: 'fd01::100', clusterMac: '33:33:00:00:01:00' };
/** Entries the client holds that nobody announces. */
const QUIET = ['10.201.0.101', 'fd01::101'];
/** Announced, but the client has no entry for them. */
const UNKNOWN = [
  { vip: '10.201.0.102', clusterMac: '01:00:5e:49:00:66' },
  { vip: 'fd01::102', clusterMac: '33:33:00:00:01:02' },
];

const koffi = await import('koffi').then(
  () => ({ ok: true, reason: '' }),
  () => ({ ok: false, reason: 'needs koffi (npm install; it is an optional dependency)' }),
);
const enabled = requireCapability('announce', netnsCapability()) && requireCapability('announce', koffi);
const withSetpriv =
  enabled &&
  requireCapability(
    'announce without CAP_NET_RAW',
    toolCapability('setpriv', ['--version'], 'apt-get install -y util-linux'),
  );

const run = promisify(execFile);
const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** Transpiles `entry` and every local module it imports into `out`, keeping the paths relative to the repo. */
function transpileTree(root: string, entry: string, out: string): string {
  const todo = [resolve(root, entry)];
  const seen = new Set<string>();
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    for (const { fileName } of ts.preProcessFile(source, true, false).importedFiles)
      if (fileName.startsWith('.')) todo.push(resolve(dirname(file), fileName.replace(/\.js$/, '.ts')));
    const js = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
      fileName: file,
    }).outputText;
    const target = join(out, relative(root, file)).replace(/\.ts$/, '.js');
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, js);
  }
  return join(out, entry).replace(/\.ts$/, '.js');
}

interface Call {
  iface: string;
  frames: string[];
}

let dir = '';
let sender = '';

/** Runs the sender in the node namespace: one sendAnnouncements per call, in order; their results. */
async function send(calls: Call[], asNobody = false): Promise<AnnounceResult[]> {
  const drop = asNobody ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] : [];
  const { stdout } = await run(
    'ip',
    ['netns', 'exec', NODE, ...drop, process.execPath, sender, JSON.stringify(calls)],
    { timeout: 10_000 },
  );
  return JSON.parse(stdout) as AnnounceResult[];
}

interface Neighbour {
  dst: string;
  lladdr?: string;
  state?: string[];
}

/**
 * Until the kernel has configured IPv6 on `ns`'s eth0: that waits for the carrier event, which linkwatch delivers up
 * to a second after `link set up`. Before it the interface has no ff00::/8 route, and an NA sent to ff02::1 is
 * dropped on arrival (Ip6InNoRoutes) while ARP already gets through. The link-local address comes with the route.
 */
async function ipv6Configured(ns: string): Promise<void> {
  for (let k = 0; k < 100; k++) {
    const { stdout } = await run('ip', ['-j', '-n', ns, 'addr', 'show', 'dev', 'eth0'], { timeout: 5000 });
    const links = JSON.parse(stdout) as { addr_info?: { family: string; scope: string }[] }[];
    if (links.some((l) => l.addr_info?.some((a) => a.family === 'inet6' && a.scope === 'link'))) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`IPv6 not configured on eth0 in ${ns} after 5 s`);
}

async function neighbours(): Promise<Map<string, { lladdr: string | undefined; state: string }>> {
  const { stdout } = await run('ip', ['-j', '-n', CLIENT, 'neigh', 'show', 'dev', 'eth0'], { timeout: 5000 });
  const list = JSON.parse(stdout || '[]') as Neighbour[];
  return new Map(list.map((n) => [n.dst, { lladdr: n.lladdr, state: (n.state ?? []).join(',') }]));
}

describe.runIf(enabled)('gratuitous announcements reach a Linux client', () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), PREFIX));
    const root = resolve(import.meta.dirname, '../..');
    const announce = transpileTree(root, 'src/backends/announce.ts', dir);
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
    sender = join(dir, 'send.mjs');
    writeFileSync(
      sender,
      [
        `import { sendAnnouncements } from ${JSON.stringify(announce)};`,
        `const out = [];`,
        `for (const c of JSON.parse(process.argv[2])) out.push(await sendAnnouncements(c.iface, c.frames.map((h) => Buffer.from(h, 'hex'))));`,
        `console.log(JSON.stringify(out));`,
      ].join('\n'),
    );
    chmodSync(dir, 0o755); // readable by the unprivileged sender too

    ip('netns', 'add', NODE);
    ip('netns', 'add', CLIENT);
    // Created inside the node namespace, its peer moved straight into the client's: the root namespace never sees it.
    const veth = `link add eth0 address ${NODE_MAC} type veth peer name eth0 address ${CLIENT_MAC} netns ${CLIENT}`;
    ip('-n', NODE, ...veth.split(' '));
    for (const [ns, last] of [
      [NODE, 2],
      [CLIENT, 1],
    ] as const) {
      ip('-n', ns, 'addr', 'add', `10.201.0.${last}/24`, 'dev', 'eth0');
      ip('-n', ns, 'addr', 'add', `fd01::${last}/64`, 'dev', 'eth0', 'nodad');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
    }
    // ARP ignores a non-gratuitous reply for an entry updated within `locktime` (default 1 s): 10 s here, so that
    // the entries made just below are "recent" for the whole test however slow the machine.
    ip('-n', CLIENT, 'ntable', 'change', 'name', 'arp_cache', 'dev', 'eth0', 'locktime', '10000');
    for (const vip of [V4.vip, V6.vip, ...QUIET])
      ip('-n', CLIENT, 'neigh', 'replace', vip, 'lladdr', OLD_MAC, 'dev', 'eth0', 'nud', 'stale');
    await ipv6Configured(CLIENT);
  });

  afterAll(() => {
    for (const ns of [NODE, CLIENT]) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // not created
      }
    }
    if (dir) rmSync(dir, { recursive: true, force: true }); // removes the node_modules link, not its target
  });

  it('control: without an announcement the entries keep the old MAC', async () => {
    await new Promise((r) => setTimeout(r, 300));
    const n = await neighbours();
    for (const vip of [V4.vip, V6.vip, ...QUIET]) expect(n.get(vip), vip).toEqual({ lladdr: OLD_MAC, state: 'STALE' });
  });

  it('why the ARP reply targets the cluster MAC: with a broadcast target, Linux ignores it within locktime', async () => {
    const f = arpAnnouncement({ ...V4, ifaceMac: NODE_MAC });
    f.fill(0xff, 32, 38); // tha := ff:ff:ff:ff:ff:ff (arp_is_garp wants tha == sha in a reply)
    expect(await send([{ iface: 'eth0', frames: [hex(f)] }])).toEqual([{ sent: 1 }]);
    await new Promise((r) => setTimeout(r, 300));
    expect((await neighbours()).get(V4.vip)).toEqual({ lladdr: OLD_MAC, state: 'STALE' });
  });

  it('an ARP reply and an unsolicited NA switch the existing entries to the cluster MAC and create none', async () => {
    const frames = [
      arpAnnouncement({ ...V4, ifaceMac: NODE_MAC }),
      unsolicitedNa({ ...V6, ifaceMac: NODE_MAC }),
      ...UNKNOWN.map((u) => (u.vip.includes(':') ? unsolicitedNa : arpAnnouncement)({ ...u, ifaceMac: NODE_MAC })),
    ];
    expect(await send([{ iface: 'eth0', frames: frames.map(hex) }])).toEqual([{ sent: 4 }]);
    // The client takes the frames in softirq after the sends returned: poll, bounded.
    let n = await neighbours();
    for (let k = 0; k < 40 && (n.get(V4.vip)?.lladdr === OLD_MAC || n.get(V6.vip)?.lladdr === OLD_MAC); k++) {
      await new Promise((r) => setTimeout(r, 50));
      n = await neighbours();
    }
    // Both families: the new lladdr, and STALE (an unconfirmed update; the next use of the entry probes it).
    expect(n.get(V4.vip)).toEqual({ lladdr: V4.clusterMac, state: 'STALE' });
    expect(n.get(V6.vip)).toEqual({ lladdr: V6.clusterMac, state: 'STALE' });
    for (const vip of QUIET) expect(n.get(vip), vip).toEqual({ lladdr: OLD_MAC, state: 'STALE' });
    for (const u of UNKNOWN) expect(n.get(u.vip), u.vip).toBeUndefined();
  });

  it('a reason, not an exception, when it cannot send', async () => {
    const frame = hex(arpAnnouncement({ ...V4, ifaceMac: NODE_MAC }));
    const results = await send([
      { iface: 'nope0', frames: [frame] },
      { iface: '../eth0', frames: [frame] },
      { iface: 'eth0', frames: ['0000'] },
      { iface: 'eth0', frames: [] },
    ]);
    expect(results.map((r) => ('reason' in r ? r.reason : r))).toEqual([
      'noInterface',
      'badInterface',
      'badFrame',
      { sent: 0 },
    ]);
  });

  it.runIf(withSetpriv)('without CAP_NET_RAW: the socket call fails, and the reason says why', async () => {
    const frame = hex(arpAnnouncement({ ...V4, ifaceMac: NODE_MAC }));
    const [r] = await send([{ iface: 'eth0', frames: [frame] }], true);
    expect(r).toEqual({ reason: 'socket', error: 'socket(AF_PACKET): Operation not permitted (errno 1)' });
  });
});
