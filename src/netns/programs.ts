// The two small programs that run inside the namespaces, as CommonJS source for `node -e`. They are strings
// (not files under src/) so they run the same from the TypeScript sources (tests) and from dist/ (chaos), with
// no build step and no dependency but node itself. Each takes one JSON argument (the last argv entry).

/**
 * The per-node server. Binds UDP and TCP on the VIP and answers every UDP datagram `P <probeId> <i>` with
 * `<node> <probeId> <i>` (so the prober can attribute every reply, even a late one) and every TCP connection
 * with `<node>\n`; on the echo port it greets with `<node>\n` and answers every line `x` with `<node> x` for as long as
 * the client keeps the connection. Prints `ready` once all three are bound. Exits when stdin closes, so it cannot outlive its parent.
 */
export const SERVER_PROGRAM = String.raw`
'use strict';
const dgram = require('node:dgram');
const net = require('node:net');
const cfg = JSON.parse(process.argv[process.argv.length - 1]);
const udp = dgram.createSocket(cfg.address.includes(':') ? 'udp6' : 'udp4');
udp.on('message', (msg, rinfo) => {
  const text = msg.toString('utf8');
  if (!text.startsWith('P ')) return;
  udp.send(cfg.node + ' ' + text.slice(2), rinfo.port, rinfo.address);
});
udp.on('error', (e) => { console.error('udp: ' + e.message); process.exit(2); });
const tcp = net.createServer((sock) => {
  sock.on('error', () => {});
  sock.end(cfg.node + '\n');
});
tcp.on('error', (e) => { console.error('tcp: ' + e.message); process.exit(2); });
const echo = net.createServer((sock) => {
  sock.on('error', () => {});
  sock.setEncoding('utf8');
  sock.write(cfg.node + '\n');
  let buf = '';
  sock.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) { sock.write(cfg.node + ' ' + buf.slice(0, nl) + '\n'); buf = buf.slice(nl + 1); }
    if (buf.length > 4096) sock.destroy();
  });
});
echo.on('error', (e) => { console.error('echo: ' + e.message); process.exit(2); });
let bound = 0;
const up = () => { if (++bound === 3) process.stdout.write('ready\n'); };
udp.bind(cfg.udpPort, cfg.address, up);
tcp.listen(cfg.tcpPort, cfg.address, 256, up);
echo.listen(cfg.echoPort, cfg.address, 256, up);
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
`;

/**
 * The client-side prober: one UDP socket bound to each source address, kept for the life of the process.
 * Requests and answers are JSON lines over stdin/stdout:
 *   > {"id":7,"windowMs":60,"tcp":true,"tcpTimeoutMs":400}
 *   < {"id":7,"t0":..,"t1":..,"udp":[["n1"],[],["n1","n2"],...],"tcp":["n1",null,...],"tcpErr":[null,"timeout",..],
 *      "late":[{"id":6,"i":3,"node":"n2"}]}
 * `udp[i]` lists EVERY reply that source i got for this probe within the window (duplicates kept); replies that
 * arrive for an older probe are reported in `late` of the next answer, so nothing is silently lost.
 * Stream mode (`{"stream":{"id":1,"periodMs":5,"reportMs":50,"settleMs":20}}`, stopped by `{"stream":null}`):
 * the prober sends from every source every periodMs on its own clock and reports every reportMs:
 *   < {"stream":1,"t":..,"from":..,"to":..,"sends":10,"owners":[["n1"],[],..],"silent":[0,3,..],
 *      "doubles":[{"seq":..,"t":..,"i":4,"nodes":["n1","n2"]}],"gaps":[5,5,6,..]}
 */
export const PROBER_PROGRAM = String.raw`
'use strict';
const dgram = require('node:dgram');
const net = require('node:net');
const readline = require('node:readline');
const cfg = JSON.parse(process.argv[process.argv.length - 1]);
const n = cfg.sources.length;
const sockets = [];
let current = null; // { id, udp: string[][] }
let late = [];
let bound = 0;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
for (let i = 0; i < n; i++) {
  const s = dgram.createSocket(cfg.vip.includes(':') ? 'udp6' : 'udp4');
  s.on('error', (e) => { out({ fatal: 'udp ' + cfg.sources[i] + ': ' + e.message }); process.exit(2); });
  s.on('message', (msg) => {
    const parts = msg.toString('utf8').trim().split(' ');
    if (parts.length !== 3) return;
    const node = parts[0];
    const id = Number(parts[1]);
    const idx = Number(parts[2]);
    if (idx !== i) return; // a reply must come back to the socket that asked
    if (current && current.id === id) current.udp[i].push(node);
    else if (stream && id >= STREAM_BASE) streamReply(id, i, node);
    else if (late.length < 10000) late.push({ id, i, node });
  });
  s.bind(0, cfg.sources[i], () => { if (++bound === n) out({ ready: true }); });
  sockets.push(s);
}
function tcpOne(i, timeoutMs) {
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    const finish = (node, err) => { if (done) return; done = true; clearTimeout(timer); sock.destroy(); resolve([node, err]); };
    const sock = net.connect({ host: cfg.vip, port: cfg.tcpPort, localAddress: cfg.sources[i] });
    const timer = setTimeout(() => finish(null, 'timeout'), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (d) => { data += d; });
    sock.on('end', () => { const name = data.trim(); finish(name || null, name ? null : 'empty'); });
    sock.on('error', (e) => finish(null, e.code || e.message));
  });
}
async function probe(req) {
  const t0 = Date.now();
  current = { id: req.id, udp: Array.from({ length: n }, () => []) };
  const cur = current;
  if (req.udp !== false) {
    for (let i = 0; i < n; i++) sockets[i].send('P ' + req.id + ' ' + i, cfg.udpPort, cfg.vip);
  }
  const tcpP = req.tcp
    ? Promise.all(Array.from({ length: n }, (_, i) => tcpOne(i, req.tcpTimeoutMs || 500)))
    : Promise.resolve(null);
  const [tcpRes] = await Promise.all([tcpP, new Promise((r) => setTimeout(r, req.windowMs || 50))]);
  const t1 = Date.now();
  current = null;
  const lateNow = late;
  late = [];
  out({
    id: req.id, t0, t1, udp: req.udp === false ? null : cur.udp,
    tcp: tcpRes ? tcpRes.map((x) => x[0]) : null,
    tcpErr: tcpRes ? tcpRes.map((x) => x[1]) : null,
    late: lateNow,
  });
}
// Stream mode: every periodMs one request from every source, whatever the harness is doing; every reportMs a
// report line. A request answered by two nodes is a double (reported once, with its send time); per source the
// distinct nodes that answered the sends of the report window (sends older than settleMs, so their replies are in).
const STREAM_BASE = 1000000000;
let stream = null;
function streamReply(seq, i, node) {
  const e = stream.sent.get(seq);
  if (!e) return;
  const got = (e.got[i] = e.got[i] || []);
  if (got.includes(node)) return;
  got.push(node);
  if (got.length >= 2) stream.doubles.push({ seq, t: e.t, i, nodes: got.slice() });
}
function streamTick() {
  if (!stream) return;
  const now = Date.now();
  if (stream.lastSend !== null) stream.gaps.push(now - stream.lastSend);
  stream.lastSend = now;
  const seq = ++stream.seq;
  stream.sent.set(seq, { t: now, got: new Array(n) });
  for (let i = 0; i < n; i++) sockets[i].send('P ' + seq + ' ' + i, cfg.udpPort, cfg.vip);
  stream.timer = setTimeout(streamTick, Math.max(0, stream.periodMs - (Date.now() - now)));
}
function streamReport() {
  if (!stream) return;
  const now = Date.now();
  const upTo = now - stream.settleMs;
  const owners = Array.from({ length: n }, () => []);
  const silent = new Array(n).fill(0);
  let sends = 0;
  for (const [seq, e] of stream.sent) {
    if (e.t > upTo) continue;
    if (!e.reported) {
      e.reported = true;
      sends++;
      for (let i = 0; i < n; i++) {
        const got = e.got[i] || [];
        if (got.length === 0) silent[i]++;
        else if (got.length === 1 && !owners[i].includes(got[0])) owners[i].push(got[0]);
      }
    }
    if (e.t < now - 2000) stream.sent.delete(seq);
  }
  out({ stream: stream.id, t: now, from: stream.reportedUpTo, to: upTo, sends, owners, silent,
        doubles: stream.doubles.splice(0), gaps: stream.gaps.splice(0) });
  stream.reportedUpTo = upTo;
}
let chain = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let req;
  try { req = JSON.parse(line); } catch { out({ fatal: 'bad request' }); return; }
  if (req.stream !== undefined) {
    if (stream) { clearTimeout(stream.timer); clearInterval(stream.reporter); streamReport(); stream = null; }
    if (req.stream === null) return;
    stream = { id: req.stream.id, periodMs: req.stream.periodMs || 5, settleMs: req.stream.settleMs || 20,
               seq: STREAM_BASE, sent: new Map(), doubles: [], gaps: [], lastSend: null, reportedUpTo: Date.now() };
    stream.reporter = setInterval(streamReport, req.stream.reportMs || 50);
    streamTick();
    return;
  }
  chain = chain.then(() => probe(req)).catch((e) => out({ id: req.id, error: String(e) }));
});
rl.on('close', () => process.exit(0));
`;

/** One TCP connect from inside a namespace: prints `ok`, or the error code, then exits. */
export const CONNECT_PROGRAM = String.raw`
'use strict';
const net = require('node:net');
const cfg = JSON.parse(process.argv[process.argv.length - 1]);
const s = net.connect({ host: cfg.host, port: cfg.port });
const t = setTimeout(() => { console.log('timeout'); process.exit(0); }, cfg.timeoutMs);
s.on('connect', () => { clearTimeout(t); console.log('ok'); s.destroy(); process.exit(0); });
s.on('error', (e) => { clearTimeout(t); console.log(e.code || e.message); process.exit(0); });
`;

/**
 * Long-lived TCP connections from the client namespace, one per source, to the echo port. Each reads the greeting
 * (the node that accepted it), then sends a numbered line every `intervalMs` and expects it echoed by the same node.
 * On the stdin line `report` it prints one JSON line per connection state; it never reconnects, so a connection
 * reset, closed, or silent for `staleMs` stays visible. Exits when stdin closes.
 */
export const HOLD_PROGRAM = String.raw`
'use strict';
const net = require('node:net');
const readline = require('node:readline');
const cfg = JSON.parse(process.argv[process.argv.length - 1]);
const conns = cfg.sources.map((source) => {
  const c = { source, node: null, sent: 0, echoed: 0, lastEchoAt: null, wrongNode: 0, error: null, closed: false };
  const sock = net.connect({ host: cfg.vip, port: cfg.port, localAddress: source });
  c.sock = sock;
  sock.setEncoding('utf8');
  let buf = '';
  sock.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (c.node === null) { c.node = line; c.lastEchoAt = Date.now(); continue; }
      const [node] = line.split(' ');
      if (node !== c.node) c.wrongNode++;
      c.echoed++;
      c.lastEchoAt = Date.now();
    }
  });
  sock.on('error', (e) => { c.error = c.error || e.code || e.message; });
  sock.on('close', () => { c.closed = true; });
  return c;
});
const tick = setInterval(() => {
  for (const c of conns) if (c.node !== null && !c.closed) { c.sent++; c.sock.write(String(c.sent) + '\n'); }
}, cfg.intervalMs);
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line !== 'report') return;
  const now = Date.now();
  process.stdout.write(JSON.stringify({ report: conns.map((c) => ({
    source: c.source, node: c.node, sent: c.sent, echoed: c.echoed, wrongNode: c.wrongNode, error: c.error,
    closed: c.closed, silentMs: c.lastEchoAt === null ? null : now - c.lastEchoAt,
  })) }) + '\n');
});
rl.on('close', () => { clearInterval(tick); process.exit(0); });
`;
