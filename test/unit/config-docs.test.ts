import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { NODE_OPTIONS, envVarFor, renderConfigReference } from '../../src/config/index.js';

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
