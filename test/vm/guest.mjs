// @ts-check
// Runs inside the qemu VM (Debian 6.1 kernel with ipt_CLUSTERIP), as root, with the host's node and the host's
// root filesystem read-only. Drives the real module three ways and writes what the kernel did to
// /run/results/result.json; the host test (test/kernel/clusterip-qemu.test.ts) holds every expectation.
//   direct  - raw write(2)/read(2) on the proc file, one command per write
//   backend - the project's ClusteripBackend (dist/): ProcFile with every §7 case, then ensure/apply/read/clear
//   hash    - packets from many source addresses through a veth into the VM; which ones the CLUSTERIP rule
//             accepted, counted per source by iptables rules after it, over rounds whose claimed buckets the
//             host chose (bit j of the bucket number in round j)
// Plain JS (no build step inside the VM); it only records observations, never judges them.

import process from 'node:process';
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { setTimeout, clearTimeout } from 'node:timers';
import {
  closeSync,
  constants,
  openSync,
  readFileSync,
  statSync,
  writeFileSync,
  writeSync,
  existsSync,
  mkdirSync,
} from 'node:fs';
import { readFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execa } from 'execa';

const HERE = dirname(fileURLToPath(import.meta.url));
const jobPath = process.argv[2] ?? '/run/results/job.json';
const job = JSON.parse(readFileSync(jobPath, 'utf8'));
const outPath = join(dirname(jobPath), 'result.json');
const PROC = '/proc/net/ipt_CLUSTERIP';
const IPT = job.iptables;
const t0 = performance.now();

/** @type {Record<string, unknown>} */
const result = {
  startedAtUptimeS: Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]),
  stages: {},
  timings: {},
};
const stages = /** @type {Record<string, unknown>} */ (result.stages);
const timings = /** @type {Record<string, number>} */ (result.timings);

function save() {
  result.elapsedMs = Math.round(performance.now() - t0);
  writeFileSync(outPath, JSON.stringify(result, null, 1));
}

/** @param {unknown} err */
function describeError(err) {
  const e = /** @type {any} */ (err);
  return { name: e?.name ?? 'Error', code: e?.code, kind: e?.kind, message: String(e?.message ?? err) };
}

/** @param {string} file @param {string[]} args */
async function run(file, args, opts = {}) {
  return execa(file, args, { timeout: 30_000, ...opts });
}

/** @param {string[]} args */
const ipt = (args) => run(IPT, ['-w', '5', ...args]);

/** One write(2) of `data`; returns the errno code or null. */
function rawWrite(path, data) {
  const fd = openSync(path, constants.O_WRONLY);
  try {
    const buf = Buffer.from(data, 'latin1');
    const n = writeSync(fd, buf, 0, buf.length, null);
    return n === buf.length ? null : `short write ${n}`;
  } catch (err) {
    return /** @type {NodeJS.ErrnoException} */ (err).code ?? String(err);
  } finally {
    closeSync(fd);
  }
}

function rawRead(path) {
  return existsSync(path) ? readFileSync(path, 'latin1') : null;
}

async function timed(name, fn) {
  const s = performance.now();
  try {
    return await fn();
  } finally {
    timings[name] = Math.round(performance.now() - s);
  }
}

// ---------------------------------------------------------------------------------------------------------------

async function setupLinks() {
  const h = job.hash;
  // Two `ip -batch` runs instead of one process per command: every exec costs ~0.5 s under TCG.
  const root = [
    'link set lo up',
    // Direct and backend stages: a dummy interface is enough for the rule's `-i`.
    `link add ${job.dummyIface} type dummy`,
    `link set ${job.dummyIface} up`,
    // Hash stage: a veth into a client namespace, so packets really arrive on the rule's interface.
    `netns add ${h.clientNs}`,
    `link add ${h.iface} type veth peer name eth0 netns ${h.clientNs}`,
    `addr add ${h.hostAddr} dev ${h.iface}`,
    ...h.vips.map((/** @type {any} */ v) => `addr add ${v.address}/32 dev ${h.iface}`),
    `link set ${h.iface} up`,
  ];
  await run('ip', ['-batch', '-'], { input: root.join('\n') + '\n' });
  const client = [
    'link set lo up',
    `addr add ${h.clientAddr} dev eth0`,
    // Every source address is configured: a socket bound to a foreign address gets ENETUNREACH even with
    // ip_nonlocal_bind (only IP_TRANSPARENT skips the source check, and node cannot set it).
    ...h.sources.map((/** @type {any} */ s) => `addr add ${s.saddr}/32 dev eth0`),
    'link set eth0 up',
    // The cluster MAC, as clients learn it from CLUSTERIP's mangled ARP replies: frames arrive as multicast
    // and the target must turn them into PACKET_HOST.
    ...h.vips.flatMap((/** @type {any} */ v) => [
      `route add ${v.address}/32 dev eth0`,
      `neigh replace ${v.address} lladdr ${v.clusterMac} dev eth0 nud permanent`,
    ]),
  ];
  await run('ip', ['-n', h.clientNs, '-batch', '-'], { input: client.join('\n') + '\n' });
  for (const k of ['all', 'default', h.iface]) {
    writeFileSync(`/proc/sys/net/ipv4/conf/${k}/rp_filter`, '0');
  }
}

// ---------------------------------------------------------------------------------------------------------------

/** The CLUSTERIP arguments after `-I INPUT` for a VIP (as the backend's rule, --local-node 1). */
function rawRuleArgs(v, iface) {
  return [
    '-d',
    `${v.address}/32`,
    '-i',
    iface,
    '-j',
    'CLUSTERIP',
    '--new',
    '--hashmode',
    v.hashMode,
    '--clustermac',
    v.clusterMac,
    '--total-nodes',
    String(v.buckets),
    '--local-node',
    '1',
    '--hash-init',
    String(v.seed),
  ];
}

async function stageDirect() {
  const d = job.direct;
  const path = join(PROC, d.vip.address);
  const v = d.vip;
  const install = await run(IPT, ['-w', '5', '-I', 'INPUT', ...rawRuleArgs(v, job.dummyIface)], { reject: false });
  const st = existsSync(path) ? statSync(path) : undefined;
  const out = {
    install: { exitCode: install.exitCode, stderr: install.stderr },
    mode: st ? (st.mode & 0o777).toString(8) : null,
    uid: st?.uid ?? null,
    initial: rawRead(path),
    steps: /** @type {{input: string, errno: string | null, after: string | null}[]} */ ([]),
  };
  for (const input of d.cases) {
    const errno = rawWrite(path, input);
    out.steps.push({ input, errno, after: rawRead(path) });
  }
  stages.direct = out;
}

// ---------------------------------------------------------------------------------------------------------------

async function loadBackendModule() {
  const p = join(job.dist, 'backends', 'clusterip.js');
  return import(p);
}

/** @param {any} backend */
async function heldOf(backend) {
  const held = await backend.read();
  return Object.fromEntries([...held].map(([vip, set]) => [vip, [...set].sort((a, b) => a - b)]));
}

async function clusteripRulesFor(addresses) {
  const s = (await ipt(['-S', 'INPUT'])).stdout;
  return s.split('\n').filter((l) => l.includes('CLUSTERIP') && addresses.some((a) => l.includes(`-d ${a}/32`)));
}

/** Every INPUT rule naming the address (CLUSTERIP rules and the backend's guard jump), as `-S` prints them. */
async function inputRulesFor(address) {
  const s = (await ipt(['-S', 'INPUT'])).stdout;
  return s.split('\n').filter((l) => l.includes(`-d ${address}/32`));
}

/** Deletes every CLUSTERIP rule of the address (what an operator's uninstall does). */
async function deleteRulesFor(address) {
  for (const l of await inputRulesFor(address)) {
    if (l.includes('CLUSTERIP')) await ipt(['-D', 'INPUT', ...l.trim().split(/\s+/).slice(2)]);
  }
}

async function stageBackend() {
  const mod = await loadBackendModule();
  const b = job.backend;
  const out = { procFile: /** @type {unknown} */ (null), steps: /** @type {Record<string, unknown>[]} */ ([]) };
  stages.backend = out;
  const mk = (opts = {}) => new mod.ClusteripBackend({ procDir: PROC, manageRule: true, iptablesPath: IPT, ...opts });
  const backend = mk();
  const addrs = b.vips.map((/** @type {any} */ v) => v.address);
  /** @param {string} name @param {(be: any) => Promise<unknown>} fn @param {any} [be] @param {boolean} [countRules] */
  const step = async (name, fn, be = backend, countRules = false) => {
    const rec = /** @type {Record<string, unknown>} */ ({ name });
    try {
      const r = await fn(be);
      rec.ok = true;
      if (r !== undefined) rec.value = r;
    } catch (err) {
      rec.ok = false;
      rec.error = describeError(err);
    }
    try {
      rec.held = await heldOf(be);
    } catch (err) {
      rec.held = { error: describeError(err) };
    }
    rec.raw = Object.fromEntries(addrs.map((/** @type {string} */ a) => [a, rawRead(join(PROC, a))]));
    // Listing the rules is one more exec (~0.5-1 s under TCG): only where the step is about rules.
    if (countRules) rec.rules = (await clusteripRulesFor(addrs)).length;
    out.steps.push(rec);
    save();
  };
  const spec = { vips: b.vips, rebalance: { joinMovesPerInterval: 0, intervalMs: 1000 } };
  const [c, d] = b.vips;

  await step('ensure', (be) => be.ensure(spec), backend, true);

  // §7 through the backend's own proc-file I/O: the same cases as the direct stage, after "+1" so both start
  // from "1\n".
  const pf = backend.procFile(c.address);
  const pfSteps = [];
  for (const input of ['+1', ...job.direct.cases]) {
    const w = await pf.write(input);
    let parsed;
    try {
      parsed = { ok: true, held: await pf.read() };
    } catch (err) {
      parsed = { ok: false, error: describeError(err) };
    }
    pfSteps.push({ input, outcome: w, after: rawRead(join(PROC, c.address)), parsed });
  }
  out.procFile = pfSteps;
  await step('clearAfterProcFile', (be) => be.clear());

  await step('addSome', (be) =>
    be.apply([
      { vip: c.address, add: [1, 3], remove: [] },
      { vip: d.address, add: [d.buckets], remove: [] },
    ]),
  );
  await step('alreadySo', (be) => be.apply([{ vip: c.address, add: [3], remove: [2] }]));
  await step('move', (be) => be.apply([{ vip: c.address, add: [2], remove: [1] }]));
  await step('overTotal', (be) => be.apply([{ vip: c.address, add: [c.buckets + 1], remove: [] }]));
  await step('zero', (be) => be.apply([{ vip: c.address, add: [0], remove: [] }]));
  await step('overMax', (be) => be.apply([{ vip: d.address, add: [17], remove: [] }]));
  await step('addAndRemoveSame', (be) => be.apply([{ vip: c.address, add: [4], remove: [4] }]));
  await step('batchAcrossVips', (be) =>
    be.apply([
      { vip: c.address, add: [4], remove: [] },
      { vip: d.address, add: [1, 2], remove: [d.buckets] },
    ]),
  );
  // Someone else writes the proc file: read() reports the kernel, not the backend's memory.
  await step('externalWrite', async () => rawWrite(join(PROC, c.address), '-4'));
  // A restarted agent: a fresh backend's ensure() finds the rules and keeps the kernel's claims.
  const second = mk();
  await step('restartEnsure', (be) => be.ensure(spec), second, true);
  await step('clear', (be) => be.clear(), second);
  await step('clearIdempotent', (be) => be.clear(), second);
  // A VIP leaves the spec: its claims are released and its rule stays (dark: no bucket claimed, DESIGN §12).
  await step('holdBeforeShrink', (be) => be.apply([{ vip: d.address, add: [5], remove: [] }]), second);
  await step('shrinkSpec', (be) => be.ensure({ ...spec, vips: [c] }), second, true);
  await step('uninstallD', async () => deleteRulesFor(d.address), second, true);
  // Without rule management a VIP without a rule is a clear error, not a silent no-op.
  const unmanaged = mk({ manageRule: false });
  await step('unmanagedMissingRule', (be) => be.ensure({ ...spec, vips: [d] }), unmanaged);
  await step('describe', async (be) => be.describe(), unmanaged);
  // A rule whose --total-nodes is smaller than the spec's buckets: the kernel answers ENOMEM to "+8" and the
  // read-back disagrees, which must be an error, never "already so".
  const { vip: e, ruleBuckets } = b.mismatch;
  await ipt(['-I', 'INPUT', ...rawRuleArgs({ ...e, buckets: ruleBuckets }, job.dummyIface)]);
  rawWrite(join(PROC, e.address), '-1');
  const mismatchSpec = { ...spec, vips: [e] };
  await step('mismatchEnsure', (be) => be.ensure(mismatchSpec), unmanaged);
  await step('mismatchAdd', (be) => be.apply([{ vip: e.address, add: [ruleBuckets * 2], remove: [] }]), unmanaged);
  await step('mismatchRaw', async () => rawRead(join(PROC, e.address)), unmanaged);
  await step('cleanup', (be) => be.ensure({ ...spec, vips: [] }), second, true);
  await step('uninstallAll', async () => deleteRulesFor(c.address), second, true);

  // Issue 9 hole 1: a new --total-nodes must replace the kernel's config, not be ignored beside the old one.
  const g4 = b.rebuild.vip;
  const g8 = { ...g4, buckets: b.rebuild.newBuckets };
  const gb = mk();
  const gRules = () => inputRulesFor(g4.address);
  await step('rebuildEnsure4', async (be) => (await be.ensure({ ...spec, vips: [g4] }), gRules()), gb);
  await step('rebuildHold', async (be) => (await be.apply([{ vip: g4.address, add: [2], remove: [] }]), gRules()), gb);
  // Buckets still claimed under the old identity: refused, the old rule and its claims untouched.
  await step('rebuildRefused', (be) => be.ensure({ ...spec, vips: [g8] }), gb);
  await step('rebuildRefusedAfter', async () => ({ rules: await gRules(), raw: rawRead(join(PROC, g4.address)) }), gb);
  await step('rebuildRelease', (be) => be.apply([{ vip: g4.address, add: [], remove: [2] }]), gb);
  await step('rebuildEnsure8', async (be) => (await be.ensure({ ...spec, vips: [g8] }), gRules()), gb);
  await step(
    'rebuildAdd5',
    async (be) => {
      await be.apply([{ vip: g4.address, add: [g8.buckets - 3, g8.buckets], remove: [] }]);
      return rawRead(join(PROC, g4.address));
    },
    gb,
  );
  await step('rebuildClear', async (be) => (await be.clear(), await deleteRulesFor(g4.address), gRules()), gb);
}

// ---------------------------------------------------------------------------------------------------------------

/** Per-rule packet counters of the filter table, keyed by "src dst" ("* dst" for rules without -s). */
async function counters() {
  const save = (await run(`${IPT}-save`, ['-c', '-t', 'filter'])).stdout;
  const map = new Map();
  for (const line of save.split('\n')) {
    const m = /^\[(\d+):\d+\] -A INPUT (.*)$/.exec(line);
    if (!m) continue;
    const toks = m[2].split(/\s+/);
    if (toks.includes('CLUSTERIP')) continue;
    const at = (/** @type {string} */ f) => {
      const i = toks.indexOf(f);
      return i >= 0 ? toks[i + 1]?.replace(/\/32$/, '') : undefined;
    };
    const key = `${at('-s') ?? '*'} ${at('-d') ?? '*'}`;
    map.set(key, (map.get(key) ?? 0) + Number(m[1]));
  }
  return map;
}

function startSender(h) {
  const child = spawn('ip', ['netns', 'exec', h.clientNs, process.execPath, join(HERE, 'sender.mjs')], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  /** @type {((line: string) => void)[]} */
  const waiters = [];
  lines.on('line', (l) => waiters.shift()?.(l));
  const next = (timeoutMs) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`sender silent for ${timeoutMs} ms`)), timeoutMs);
      waiters.push((l) => {
        clearTimeout(t);
        resolve(l);
      });
    });
  return {
    /** @param {unknown} msg @param {number} timeoutMs */
    async ask(msg, timeoutMs) {
      const reply = next(timeoutMs);
      child.stdin.write(JSON.stringify(msg) + '\n');
      return JSON.parse(/** @type {string} */ (await reply));
    },
    stop() {
      child.stdin.end();
      child.kill('SIGKILL');
    },
  };
}

async function stageHash() {
  const mod = await loadBackendModule();
  const h = job.hash;
  const spec = { vips: h.vips, rebalance: { joinMovesPerInterval: 0, intervalMs: 1000 } };
  // Rules installed here with the spec's identity, except the first VIP's: its rule carries another identity
  // (h.stale: bucket count, hash mode, seed), as before a spec change. The backend's rule management must replace
  // it (issue 9 hole 1: the kernel reuses a VIP's config for any new rule). --local-node 1 is taken back at once.
  for (const v of h.vips) {
    const installed = v.address === h.stale.address ? { ...v, ...h.stale } : v;
    await ipt(['-I', 'INPUT', ...rawRuleArgs(installed, h.iface)]);
    rawWrite(join(PROC, v.address), '-1');
  }
  const backend = new mod.ClusteripBackend({ procDir: PROC, manageRule: true, iptablesPath: IPT });
  await timed('hashEnsure', () => backend.ensure(spec));
  const staleRulesAfterEnsure = await inputRulesFor(h.stale.address);

  // Counters: one rule before CLUSTERIP per VIP (every arrival), one per (source, VIP) after it (accepted ones).
  // The per-source rules drop, so nothing answers and no conntrack entry is confirmed.
  const lines = ['*filter'];
  for (const v of h.vips) lines.push(`-I INPUT 1 -d ${v.address}/32 -i ${h.iface} -p udp`);
  for (const v of h.vips) {
    for (const s of h.sources) lines.push(`-A INPUT -s ${s.saddr}/32 -d ${v.address}/32 -i ${h.iface} -p udp -j DROP`);
  }
  lines.push('COMMIT', '');
  await timed('hashRules', () => run(`${IPT}-restore`, ['-w', '5', '--noflush'], { input: lines.join('\n') }));

  const packets = [];
  for (const s of h.sources) {
    for (const v of h.vips) packets.push({ saddr: s.saddr, sport: s.sport, daddr: v.address, dport: s.dport });
  }
  const sender = startSender(h);
  const out = {
    staleRulesAfterEnsure,
    packetsPerRound: packets.length,
    rounds: /** @type {unknown[]} */ ([]),
    senderReady: /** @type {unknown} */ (null),
  };
  stages.hash = out;
  try {
    out.senderReady = await timed('senderStart', () => sender.ask({ op: 'open', packets }, 60_000));
    /** @type {Record<string, number[]>} */
    let prev = Object.fromEntries(h.vips.map((/** @type {any} */ v) => [v.address, []]));
    let base = await counters();
    // The host chose the claimed set of every VIP per round; the backend moves there in one apply.
    for (const [r, claim] of /** @type {Record<string, number[]>[]} */ (h.rounds).entries()) {
      const rs = performance.now();
      const changes = h.vips.map((/** @type {any} */ v) => ({
        vip: v.address,
        add: claim[v.address].filter((b) => !prev[v.address].includes(b)),
        remove: prev[v.address].filter((b) => !claim[v.address].includes(b)),
      }));
      const as = performance.now();
      await backend.apply(changes);
      const applyMs = Math.round((performance.now() - as) * 10) / 10;
      prev = claim;
      const held = await heldOf(backend);
      const sent = await sender.ask({ op: 'send' }, 30_000);
      // Counters are cumulative: a round's counts are the difference to the previous read (one exec per round
      // instead of -Z plus a read). A short pause lets the last packets finish their traversal.
      await new Promise((res) => setTimeout(res, 100));
      let now = await counters();
      const delta = (/** @type {string} */ key) => (now.get(key) ?? 0) - (base.get(key) ?? 0);
      const arrivals = () => h.vips.reduce((n, /** @type {any} */ v) => n + delta(`* ${v.address}`), 0);
      const deadline = performance.now() + 10_000;
      while (arrivals() < packets.length && performance.now() < deadline) {
        await new Promise((res) => setTimeout(res, 200));
        now = await counters();
      }
      /** @type {Record<string, number[]>} */
      const accepted = {};
      /** @type {Record<string, number>} */
      const arrived = {};
      for (const v of h.vips) {
        arrived[v.address] = delta(`* ${v.address}`);
        accepted[v.address] = [];
        h.sources.forEach((/** @type {any} */ s, /** @type {number} */ i) => {
          const n = delta(`${s.saddr} ${v.address}`);
          for (let j = 0; j < n; j++) accepted[v.address].push(i);
        });
      }
      base = now;
      out.rounds.push({ round: r, held, sent, arrived, accepted, applyMs, ms: Math.round(performance.now() - rs) });
      save();
    }
  } finally {
    sender.stop();
  }
  await backend.clear();
}

// ---------------------------------------------------------------------------------------------------------------

/** `clusterip-ha fence` (systemd ExecStopPost=) on the real module: every claim of every VIP goes, no etcd. */
async function stageFence() {
  const f = job.fence;
  for (const [vip, buckets] of Object.entries(f.claim)) {
    for (const b of /** @type {number[]} */ (buckets)) rawWrite(join(PROC, vip), `+${b}`);
  }
  const before = Object.fromEntries(
    job.hash.vips.map((/** @type {any} */ v) => [v.address, rawRead(join(PROC, v.address))]),
  );
  const fence = () =>
    run(
      process.execPath,
      [
        join(job.dist, 'cli', 'main.js'),
        'fence',
        '--backend',
        'clusterip',
        '--node-id',
        'vm1',
        '--state-dir',
        '/run/cipha-state',
        '--json',
      ],
      { reject: false, timeout: 120_000, env: { HOME: '/tmp' } },
    );
  // First the ExecStopPost= after a planned restart (SIGHUP): the agent left its record and marker; fence skips.
  const { writeRestartRecord } = await import(pathToFileURL(join(job.dist, 'agent', 'restartRecord.js')).href);
  mkdirSync('/run/cipha-state', { recursive: true });
  await writeRestartRecord('/run/cipha-state', {
    v: 1,
    cluster: 'default',
    nodeId: 'vm1',
    leaseId: '1',
    ttlSeconds: 4,
    deadlineAt: Date.now() + 60_000,
    held: f.claim,
    writtenAt: Date.now(),
  });
  const planned = await fence();
  stages.fencePlanned = {
    exitCode: planned.exitCode,
    stdout: planned.stdout,
    stderr: planned.stderr.slice(-2000),
    after: Object.fromEntries(job.hash.vips.map((/** @type {any} */ v) => [v.address, rawRead(join(PROC, v.address))])),
  };
  // Then any other stop (the marker is consumed): a crash fences.
  const s = performance.now();
  const r = await fence();
  stages.fence = {
    before,
    exitCode: r.exitCode,
    stdout: r.stdout,
    stderr: r.stderr.slice(-2000),
    ms: Math.round(performance.now() - s),
    after: Object.fromEntries(job.hash.vips.map((/** @type {any} */ v) => [v.address, rawRead(join(PROC, v.address))])),
  };
}

// ---------------------------------------------------------------------------------------------------------------

async function main() {
  result.kernel = (await readFile('/proc/sys/kernel/osrelease', 'utf8')).trim();
  result.node = process.version;
  await timed('setupLinks', setupLinks);
  for (const [name, fn] of /** @type {const} */ ([
    ['direct', stageDirect],
    ['backend', stageBackend],
    ['hash', stageHash],
    ['fence', stageFence],
  ])) {
    try {
      await timed(name, fn);
    } catch (err) {
      stages[`${name}Error`] = describeError(err);
    }
    save();
  }
  result.done = true;
  save();
}

main().catch((err) => {
  result.fatal = describeError(err);
  save();
  process.exitCode = 1;
});
