import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { renderConfigReference } from './reference.js';

// Regenerates docs/configuration.md: npm run build && node dist/config/writeReference.js [path]
const target = process.argv[2] ?? 'docs/configuration.md';
mkdirSync(dirname(target), { recursive: true });
writeFileSync(target, renderConfigReference());
console.log(`wrote ${target}`);
