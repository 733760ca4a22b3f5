import { connect, createServer, type Socket } from 'node:net';

// A loopback TCP proxy that can partition its clients from the upstream (an etcd endpoint) on demand.
// `cut('reset')` kills every connection and refuses new ones at once (a crashed peer / RST);
// `cut('blackhole')` keeps connections open but forwards nothing (a pulled cable: the client only notices by
// timeout). `heal()` lets new connections through again; blackholed ones are closed so clients reconnect.

export type CutMode = 'reset' | 'blackhole';

export interface TcpProxy {
  readonly port: number;
  cut(mode?: CutMode): void;
  heal(): void;
  isCut(): boolean;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket | undefined;
}

export async function startTcpProxy(
  upstream: { host: string; port: number },
  listenHost = '127.0.0.1',
): Promise<TcpProxy> {
  let cutMode: CutMode | null = null;
  const pairs = new Set<Pair>();

  const destroy = (p: Pair): void => {
    p.client.destroy();
    p.upstream?.destroy();
    pairs.delete(p);
  };

  const server = createServer((client) => {
    client.on('error', () => undefined);
    const pair: Pair = { client, upstream: undefined };
    pairs.add(pair);
    client.on('close', () => destroy(pair));
    if (cutMode === 'reset') {
      destroy(pair);
      return;
    }
    if (cutMode === 'blackhole') {
      // Swallow what the client sends; connect nowhere.
      client.on('data', () => undefined);
      return;
    }
    const up = connect(upstream.port, upstream.host);
    pair.upstream = up;
    up.on('error', () => destroy(pair));
    up.on('close', () => destroy(pair));
    // Forward by hand (not pipe) so a blackhole can drop bytes in flight without buffering them.
    client.on('data', (b) => {
      if (cutMode === null) up.write(b);
    });
    up.on('data', (b) => {
      if (cutMode === null) client.write(b);
    });
  });
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, listenHost, () => resolve());
  });
  const addr = server.address();
  if (typeof addr !== 'object' || addr === null) throw new Error('proxy has no address');

  return {
    port: addr.port,
    cut(mode = 'reset') {
      cutMode = mode;
      if (mode === 'reset') for (const p of [...pairs]) destroy(p);
    },
    heal() {
      const wasBlackhole = cutMode === 'blackhole';
      cutMode = null;
      if (wasBlackhole) for (const p of [...pairs]) destroy(p);
    },
    isCut: () => cutMode !== null,
    async close() {
      cutMode = 'reset';
      for (const p of [...pairs]) destroy(p);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
