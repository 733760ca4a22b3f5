#!/usr/bin/env node
// The `clusterip-ha` binary. Everything but process wiring lives in program.ts so tests can drive it.
import { runCli } from './program.js';
import { processIo } from './io.js';

// grpc-js names IP endpoints as the TLS server name, and Node warns about that (DEP0123) on every connection:
// noise in the CLI's stderr and in the agent's JSON log, about nothing the operator can change. Other warnings
// are printed as Node would.
process.removeAllListeners('warning');
process.on('warning', (w: Error & { code?: string }) => {
  if (w.code !== 'DEP0123') process.stderr.write(`(node) ${w.name}: ${w.message}\n`);
});

const code = await runCli(process.argv, processIo());
process.exitCode = code;
// Commands close what they open; this only guards against a stray handle keeping a finished command alive.
setTimeout(() => process.exit(code), 300).unref();
