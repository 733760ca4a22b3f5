import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  HASH_MODES,
  NODE_OPTIONS,
  envVarFor,
  renderConfigReference,
  validateClusterSpec,
} from '../../src/config/index.js';
import { hashExpr } from '../../src/backends/nftRuleset.js';

// docs/configuration.md is generated; this fails when it drifts from the option table.
// Regenerate: npm run build && node dist/config/writeReference.js
describe('docs/configuration.md', () => {
  it('equals renderConfigReference()', () => {
    const onDisk = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
    expect(onDisk).toBe(renderConfigReference());
  });

  it('lists every flag, environment variable and YAML field', () => {
    const md = renderConfigReference();
    for (const o of NODE_OPTIONS) {
      expect(md).toContain(`--${o.flag}`);
      expect(md).toContain(envVarFor(o.flag));
      expect(md).toContain(`\`${o.yaml.join('.')}\``);
    }
  });
});

describe('docs/configuration.md on the nftables hash', () => {
  it('names, per hash mode, the jhash input of the rule the backend really writes (ports too)', () => {
    const md = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
    const row = md.split('\n').find((l) => l.startsWith('| `vips[].hashMode`'))!;
    expect(row).not.toMatch(/source address only/);
    for (const mode of HASH_MODES) {
      const vip = validateClusterSpec(
        { vips: [{ address: '10.0.0.1', interface: 'eth0', buckets: 4, seed: 1, hashMode: mode }] },
        't',
      ).vips[0]!;
      const input = /^jhash (.+) mod 4 /.exec(hashExpr(vip))![1]!;
      expect(row).toContain(`\`${mode}\` → \`jhash ${input}\``);
    }
    expect(row).toContain('th sport . th dport');
  });
});
