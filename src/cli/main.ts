#!/usr/bin/env node
// The `clusterip-ha` binary. Everything but process wiring lives in program.ts so tests can drive it.
import { runCli } from './program.js';
import { processIo } from './io.js';

const code = await runCli(process.argv, processIo());
process.exitCode = code;
// Commands close what they open; this only guards against a stray handle keeping a finished command alive.
setTimeout(() => process.exit(code), 300).unref();
