import { Command, CommanderError } from 'commander';
import { describeError, EXIT } from './errors.js';
import type { CliIo } from './io.js';
import { registerAgent } from './commands/agent.js';
import { registerFence } from './commands/fence.js';
import { packageVersion, registerVersion } from './commands/version.js';
import { registerChaos } from './commands/chaos.js';
import { registerApply } from './commands/apply.js';
import { registerStatus } from './commands/status.js';
import { registerDrain } from './commands/drain.js';
import { registerWhois } from './commands/whois.js';
import { registerDemo } from './commands/demo.js';
import { registerEvents } from './commands/events.js';
import { registerForget } from './commands/forget.js';
import { registerSpec } from './commands/spec.js';

export function buildProgram(io: CliIo): Command {
  const program = new Command('clusterip-ha')
    .description(
      'Active-active virtual IPs on Linux: nodes share a VIP through kernel hash buckets (CLUSTERIP or nftables)\n' +
        'whose ownership is coordinated in etcd.',
    )
    .version(packageVersion(), '-V, --version', 'print the version')
    .exitOverride()
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (s) => io.out(s),
      writeErr: (s) => io.err(s),
      // Errors are printed once, on one line, by runCli.
      outputError: () => undefined,
    })
    .addHelpText(
      'after',
      `
Exit codes: 0 ok, 1 error, 2 usage or invalid input, 3 unhealthy, 4 degraded (status --check).
Every command that talks to etcd takes --etcd-endpoints, --etcd-ca/-cert/-key, --etcd-user/-password,
--cluster, --config and --timeout (or the CLUSTERIP_HA_* environment variables).

Examples:
  clusterip-ha demo                                   # a local 3-node cluster on this machine
  clusterip-ha apply -f cluster.yaml --dry-run        # show what would change
  clusterip-ha status --etcd-endpoints http://10.0.0.1:2379
  clusterip-ha whois 192.0.2.10 --vip 10.77.0.100`,
    );
  registerAgent(program, io);
  registerFence(program, io);
  registerApply(program, io);
  registerSpec(program, io);
  registerStatus(program, io);
  registerDrain(program, io);
  registerForget(program, io);
  registerEvents(program, io);
  registerWhois(program, io);
  registerDemo(program, io);
  registerChaos(program, io);
  registerVersion(program, io);
  return program;
}

/** Parse argv, run the command, print a one-line error if any; returns the process exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const program = buildProgram(io);
  if (argv.length <= 2) {
    io.err(program.helpInformation());
    return EXIT.usage;
  }
  try {
    await program.parseAsync(argv);
    return io.exitCode;
  } catch (err) {
    const r = describeError(err, commandPath(program, argv));
    if (!(err instanceof CommanderError && r.exitCode === EXIT.ok)) io.err(`clusterip-ha: ${r.line}\n`);
    return r.exitCode;
  }
}

function commandPath(program: Command, argv: string[]): string {
  const sub = argv[2];
  const known = program.commands.some((c) => c.name() === sub);
  return known ? `clusterip-ha ${sub}` : 'clusterip-ha';
}
