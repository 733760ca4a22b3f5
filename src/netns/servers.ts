import { SERVER_ECHO_PORT } from './addressing.js';
import { spawnInNs, type NsProcess } from './nsProcess.js';
import { SERVER_PROGRAM } from './programs.js';

// The tiny per-node server (programs.ts) that answers on the VIP with its node name.

export interface NodeServer {
  readonly node: string;
  readonly pid: number;
  exited(): boolean;
  stop(): Promise<void>;
}

export async function startNodeServer(opts: {
  ns: string;
  node: string;
  vip: string;
  udpPort: number;
  tcpPort: number;
  /** Default SERVER_ECHO_PORT. */
  echoPort?: number;
  readyTimeoutMs?: number;
}): Promise<NodeServer> {
  const cfg = JSON.stringify({
    node: opts.node,
    address: opts.vip,
    udpPort: opts.udpPort,
    tcpPort: opts.tcpPort,
    echoPort: opts.echoPort ?? SERVER_ECHO_PORT,
  });
  const proc: NsProcess = spawnInNs(opts.ns, process.execPath, ['-e', SERVER_PROGRAM, '--', cfg]);
  try {
    await proc.waitLine((l) => l === 'ready', opts.readyTimeoutMs ?? 15_000);
  } catch (err) {
    await proc.stop(200);
    throw err;
  }
  return { node: opts.node, pid: proc.pid, exited: () => proc.exited(), stop: () => proc.stop(500) };
}
