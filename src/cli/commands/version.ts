import type { Command } from 'commander';
import type { CliIo } from '../io.js';
import { packageVersion } from '../../version.js';

export { packageVersion };

export function registerVersion(program: Command, io: CliIo): void {
  program
    .command('version')
    .description('print the version')
    .option('--json', 'machine-readable output')
    .addHelpText('after', '\nExamples:\n  clusterip-ha version\n  clusterip-ha version --json')
    .action((opts: { json?: boolean }) => {
      const v = packageVersion();
      io.out(
        opts.json
          ? `${JSON.stringify({ version: v, node: process.versions.node })}\n`
          : `clusterip-ha ${v} (node ${process.versions.node})\n`,
      );
    });
}
