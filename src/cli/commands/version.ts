import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import type { CliIo } from '../io.js';

/** The package version, read from package.json next to dist/ (also in node_modules installs). */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

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
