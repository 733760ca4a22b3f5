import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/program.js';
import type { CliIo } from '../../src/cli/io.js';

// The README's promises that code can check: the two commands exist, every CLI command is documented, every
// relative link resolves, and the configuration reference it points to is the generated one (config-docs test).

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const io: CliIo = { out: () => undefined, err: () => undefined, isTTY: false, color: false, env: {}, exitCode: 0 };

describe('README.md', () => {
  it('opens with what it is, then exactly the two setup commands, which exist', () => {
    const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)![1]!.trim().split('\n');
    expect(firstBlock.map((l) => l.split('#')[0]!.trim())).toEqual([
      'sudo ./scripts/demo.sh',
      'sudo ./scripts/test.sh',
    ]);
    expect(readme.indexOf('```sh')).toBeLessThan(readme.indexOf('## How it works'));
    for (const s of ['scripts/demo.sh', 'scripts/test.sh']) expect(existsSync(join(ROOT, s))).toBe(true);
    expect(readFileSync(join(ROOT, 'scripts/demo.sh'), 'utf8')).toContain('node dist/cli/main.js demo');
  });

  it('documents every CLI command', () => {
    for (const c of buildProgram(io).commands) expect(readme).toContain(`clusterip-ha ${c.name()}`);
  });

  it('has no broken relative links', () => {
    for (const m of readme.matchAll(/\]\(([^)#]+)\)/g)) {
      const target = m[1]!;
      if (/^[a-z]+:/.test(target)) continue;
      expect(existsSync(join(ROOT, target)), target).toBe(true);
    }
    expect(readme).toContain('(docs/configuration.md)');
  });

  it('keeps the sections operators look for', () => {
    for (const h of [
      '## How it works',
      '## Configuration',
      '## Operations',
      '## Compared with',
      '## Measured figures',
    ]) {
      expect(readme).toContain(h);
    }
    for (const w of ['keepalived', 'IPaddr2', 'MetalLB', 'drain', 'Upgrade', 'TTL', 'frozen'])
      expect(readme).toContain(w);
  });
});
