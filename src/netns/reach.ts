import { CONNECT_PROGRAM } from './programs.js';
import { nsRun } from './run.js';

// Can namespace `ns` open a TCP connection to host:port? For checking that a control cut partitions a node from
// etcd while the client LAN still works.

export type ReachResult = 'ok' | 'timeout' | string;

export async function tcpReach(ns: string, host: string, port: number, timeoutMs = 1000): Promise<ReachResult> {
  const cfg = JSON.stringify({ host, port, timeoutMs });
  const r = await nsRun(ns, process.execPath, ['-e', CONNECT_PROGRAM, '--', cfg], { timeoutMs: timeoutMs + 10_000 });
  return r.stdout.trim();
}
