// @ts-check
// Runs inside the VM's client namespace (`ip netns exec <ns> node sender.mjs`, ip_nonlocal_bind=1): one UDP
// socket per (source address, source port), so every probe leaves with exactly the tuple the host hashes.
// Line protocol on stdin/stdout, one JSON object per line:
//   {"op":"open","packets":[{saddr,sport,daddr,dport}]}  -> {"sockets":n}
//   {"op":"send"}                                       -> {"sent":n,"errors":[...]}   (one datagram per packet)
import process from 'node:process';
import { Buffer } from 'node:buffer';
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

/** @type {Map<string, import('node:dgram').Socket>} */
const sockets = new Map();
/** @type {{saddr: string, sport: number, daddr: string, dport: number}[]} */
let packets = [];

/** @param {unknown} msg */
const reply = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');

async function open(/** @type {typeof packets} */ list) {
  packets = list;
  for (const p of list) {
    const key = `${p.saddr}:${p.sport}`;
    if (sockets.has(key)) continue;
    const s = createSocket('udp4');
    await new Promise((resolve, reject) => {
      s.once('error', reject);
      s.bind({ address: p.saddr, port: p.sport, exclusive: true }, () => {
        s.off('error', reject);
        resolve(undefined);
      });
    });
    sockets.set(key, s);
  }
  return { sockets: sockets.size };
}

async function send() {
  const errors = [];
  let sent = 0;
  const payload = Buffer.from('cipha-probe');
  for (const p of packets) {
    const s = sockets.get(`${p.saddr}:${p.sport}`);
    if (!s) {
      errors.push(`${p.saddr}:${p.sport}: no socket`);
      continue;
    }
    try {
      await new Promise((resolve, reject) =>
        s.send(payload, p.dport, p.daddr, (err) => (err ? reject(err) : resolve(undefined))),
      );
      sent++;
    } catch (err) {
      errors.push(`${p.saddr}:${p.sport} -> ${p.daddr}:${p.dport}: ${String(err)}`);
    }
  }
  return { sent, errors: errors.slice(0, 10) };
}

const rl = createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  try {
    const msg = JSON.parse(line);
    if (msg.op === 'open') reply(await open(msg.packets));
    else if (msg.op === 'send') reply(await send());
    else reply({ error: `unknown op ${msg.op}` });
  } catch (err) {
    reply({ error: String(err) });
  }
});
rl.on('close', () => {
  for (const s of sockets.values()) s.close();
});
