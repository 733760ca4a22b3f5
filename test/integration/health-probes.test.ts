// The check probes against real processes, sockets and HTTP(S) servers on loopback (DESIGN §14 "safety of the
// checker itself"): a hanging exec is killed at its timeout, its output is bounded, its environment is clean.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckConfig } from '../../src/config/types.js';
import { MAX_LINE_CHARS, execProbe, httpProbe, tcpProbe } from '../../src/health/probes.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'cipha-probe-'));
let http: Server;
let https: Server;
let httpPort = 0;
let httpsPort = 0;
let ca = '';

const listen = (s: Server): Promise<number> =>
  new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port)));

beforeAll(async () => {
  const handler = (req: { url?: string }, res: { statusCode: number; end(b?: string): void }) => {
    if (req.url === '/hang') return; // never answers
    res.statusCode = req.url === '/down' ? 503 : req.url === '/nocontent' ? 204 : 200;
    res.end('x'.repeat(100_000));
  };
  http = createHttpServer(handler);
  httpPort = await listen(http);
  // A self-signed certificate for 127.0.0.1; the probe trusts it only through `ca`.
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-keyout',
    join(dir, 'key.pem'),
    '-out',
    join(dir, 'cert.pem'),
  ]);
  ca = readFileSync(join(dir, 'cert.pem'), 'utf8');
  https = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert: ca }, handler);
  httpsPort = await listen(https);
});

afterAll(async () => {
  http.closeAllConnections();
  https.closeAllConnections();
  await new Promise((r) => http.close(r));
  await new Promise((r) => https.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const httpCheck = (over: Partial<Extract<CheckConfig, { type: 'http' | 'https' }>>) =>
  ({
    name: 'h',
    type: 'http',
    target: `http://127.0.0.1:${httpPort}/`,
    intervalMs: 1000,
    timeoutMs: 300,
    rise: 1,
    fall: 1,
    initial: 'up',
    method: 'GET',
    expectStatus: [],
    ...over,
  }) as Extract<CheckConfig, { type: 'http' | 'https' }>;

describe('exec probe', () => {
  it('passes on exit 0, fails on another exit code with its last output line', async () => {
    expect(await execProbe(['true'], 1000)).toMatchObject({ ok: true });
    const r = await execProbe(['sh', '-c', 'echo first; echo "nginx is dead" >&2; exit 3'], 1000);
    expect(r).toMatchObject({ ok: false, failure: 'exitCode', output: 'exit 3; nginx is dead' });
    expect(await execProbe(['/nonexistent/check'], 1000)).toMatchObject({ ok: false, failure: 'error' });
  });

  it('runs with a clean environment: no etcd credentials, only PATH', async () => {
    process.env.CLUSTERIP_HA_ETCD_PASSWORD = 'secret';
    try {
      const r = await execProbe(['sh', '-c', 'env | grep -v "^PWD=" | sort | tr "\\n" " "'], 1000);
      expect(r.ok).toBe(true);
      expect(r.output).toMatch(/^PATH=\S+$/);
      expect(r.output).not.toContain('secret');
    } finally {
      delete process.env.CLUSTERIP_HA_ETCD_PASSWORD;
    }
  });

  it('a hanging command is killed at its timeout, with its children (process group)', async () => {
    const marker = `${(process.pid % 500) + 500}.${Date.now() % 10_000}`;
    const t0 = Date.now();
    const r = await execProbe(['sh', '-c', `sleep ${marker}; true`], 200);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(r).toMatchObject({ ok: false, failure: 'timeout' });
    await new Promise((res) => setTimeout(res, 100));
    const left = await run('pgrep', ['-f', `^sleep ${marker}`]).then(
      (x) => x.stdout.trim(),
      () => '',
    );
    expect(left).toBe('');
  });

  it('bounds the output it keeps: a flood of output costs no memory and shows one short line', async () => {
    const r = await execProbe(['sh', '-c', 'head -c 5000000 /dev/zero | tr "\\0" "y"; exit 1'], 3000);
    expect(r).toMatchObject({ ok: false, failure: 'exitCode' });
    expect(r.output.length).toBeLessThanOrEqual(MAX_LINE_CHARS);
  });
});

describe('tcp probe', () => {
  it('connects, and tells refused from a timeout', async () => {
    const srv = createTcpServer((c) => c.destroy());
    const port = await listen(srv as unknown as Server);
    expect(await tcpProbe('127.0.0.1', port, 300)).toMatchObject({ ok: true });
    await new Promise((r) => srv.close(r));
    expect(await tcpProbe('127.0.0.1', port, 300)).toMatchObject({ ok: false, failure: 'refused' });
  });
});

describe('http(s) probe', () => {
  it('2xx/3xx pass by default; expectStatus narrows; a hanging server fails at the timeout', async () => {
    expect(await httpProbe(httpCheck({}))).toMatchObject({ ok: true, output: 'HTTP 200 OK' });
    expect(await httpProbe(httpCheck({ target: `http://127.0.0.1:${httpPort}/down` }))).toMatchObject({
      ok: false,
      failure: 'status',
      output: 'HTTP 503 Service Unavailable',
    });
    expect(
      await httpProbe(httpCheck({ target: `http://127.0.0.1:${httpPort}/nocontent`, expectStatus: [200] })),
    ).toMatchObject({ ok: false, failure: 'status' });
    expect(await httpProbe(httpCheck({ method: 'HEAD', expectStatus: [200] }))).toMatchObject({ ok: true });
    const t0 = Date.now();
    expect(await httpProbe(httpCheck({ target: `http://127.0.0.1:${httpPort}/hang` }))).toMatchObject({
      ok: false,
      failure: 'timeout',
    });
    expect(Date.now() - t0).toBeLessThan(1500);
  });

  it('https: trusts the given CA, refuses an unknown certificate', async () => {
    const c = httpCheck({ type: 'https', target: `https://127.0.0.1:${httpsPort}/` });
    expect(await httpProbe(c, { ca })).toMatchObject({ ok: true, output: 'HTTP 200 OK' });
    expect(await httpProbe(c)).toMatchObject({ ok: false, failure: 'error' });
  });
});
