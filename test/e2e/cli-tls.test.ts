import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findEtcdBinary, freePort } from '../../src/etcd/localEtcd.js';
import { runCli } from './cliRun.js';

// TLS against a real etcd with client-certificate auth (certificates made here with openssl): the CLI talks to
// it with no Node warning on stderr (IP endpoints make grpc set an IP as TLS server name: DEP0123), and a
// certificate that does not go with its key, or a CA that did not sign etcd's certificate, is said in words.

const sh = promisify(execFile);

describe('etcd over TLS', () => {
  let dir: string;
  let etcd: ChildProcess | undefined;
  let endpoint: string;
  const f = (n: string) => join(dir, n);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cipha-tls-'));
    const ossl = (args: string[]) => sh('openssl', args, { cwd: dir, timeout: 30_000 });
    const ca = async (name: string) => {
      await ossl(
        ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'].concat([
          '-subj',
          `/CN=${name}`,
          '-keyout',
          `${name}-key.pem`,
          '-out',
          `${name}.pem`,
        ]),
      );
    };
    const leaf = async (name: string, signer: string, ext: string) => {
      await writeFile(f(`${name}.ext`), ext);
      await ossl(
        ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}`].concat([
          '-keyout',
          `${name}-key.pem`,
          '-out',
          `${name}.csr`,
        ]),
      );
      await ossl(
        ['x509', '-req', '-in', `${name}.csr`, '-CA', `${signer}.pem`, '-CAkey', `${signer}-key.pem`].concat([
          '-CAcreateserial',
          '-days',
          '2',
          '-extfile',
          `${name}.ext`,
          '-out',
          `${name}.pem`,
        ]),
      );
    };
    await ca('ca');
    await ca('other-ca');
    await leaf('server', 'ca', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
    await leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n');
    await leaf('client2', 'ca', 'extendedKeyUsage=clientAuth\n');
    const port = await freePort();
    const peer = await freePort();
    endpoint = `https://127.0.0.1:${port}`;
    etcd = spawn(
      findEtcdBinary()!,
      ['--name', 'tls', '--data-dir', f('data'), '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint]
        .concat([
          '--listen-peer-urls',
          `http://127.0.0.1:${peer}`,
          '--initial-advertise-peer-urls',
          `http://127.0.0.1:${peer}`,
        ])
        .concat(['--initial-cluster', `tls=http://127.0.0.1:${peer}`, '--cert-file', f('server.pem')])
        .concat(['--key-file', f('server-key.pem'), '--trusted-ca-file', f('ca.pem'), '--client-cert-auth']),
      { stdio: 'ignore' },
    );
    // Ready when it answers over TLS (bounded).
    for (let i = 0; i < 100; i++) {
      const r = await runCli(['status', '--check', '--no-settle', ...good()]);
      if (r.code === 3) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error('etcd with TLS did not come up');
  });
  afterAll(async () => {
    etcd?.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const good = () =>
    ['--etcd-endpoints', endpoint, '--etcd-ca', f('ca.pem'), '--etcd-cert', f('client.pem')].concat([
      '--etcd-key',
      f('client-key.pem'),
      '--cluster',
      'tls',
      '--timeout',
      '3000',
    ]);

  it('talks TLS with a client certificate and prints no Node warning', async () => {
    const r = await runCli(['status', '--check', ...good()]);
    expect(r.code).toBe(3); // no spec: unhealthy, but etcd answered
    expect(r.stderr).toMatch(/^unhealthy: .*noSpec/);
    expect(r.stderr).not.toMatch(/ServerName|DEP0123|Warning/);
  });

  it('a certificate and a key that do not belong together, and the wrong CA, are said in words', async () => {
    const mismatch = await runCli([
      'status',
      ...good().map((a) => (a === f('client-key.pem') ? f('client2-key.pem') : a)),
    ]);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toMatch(
      /the client certificate and key do not belong together — check --etcd-cert and --etcd-key/,
    );
    expect(mismatch.stderr).not.toMatch(/error:0|report a bug/);
    const wrongCa = await runCli(['status', ...good().map((a) => (a === f('ca.pem') ? f('other-ca.pem') : a))]);
    expect(wrongCa.code).toBe(1);
    expect(wrongCa.stderr).toMatch(/etcd's certificate is not signed by the CA given/);
  });
});
