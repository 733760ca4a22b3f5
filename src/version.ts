import { readFileSync } from 'node:fs';

/** The package version, read from package.json beside src/ or dist/ (also in node_modules installs). */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
