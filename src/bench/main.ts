import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BenchContext, BenchRow, BenchSuite } from './types.js';
import { dataplaneBench } from '../netns/bench.js';
import { agentBench } from './agent.js';
import { backendsBench } from './backends.js';
import { healthBench } from './health.js';
import { plannerBench } from './planner.js';
import { restartBench } from './restart.js';
import { scaleBench } from './scale.js';

// `npm run bench [-- --quick] [-- --only planner,agent] [-- --out DIR]`: runs every suite, prints one table with
// each figure against its target (and failover as a ratio of the lease TTL), writes JSON.

interface SuiteRef {
  name: string;
  suite: BenchSuite;
}

const SUITES: SuiteRef[] = [
  { name: 'planner', suite: plannerBench },
  { name: 'backends', suite: backendsBench },
  { name: 'dataplane', suite: dataplaneBench },
  { name: 'agent', suite: agentBench },
  { name: 'scale', suite: scaleBench },
  { name: 'health', suite: healthBench },
  { name: 'restart', suite: restartBench },
];

function parseArgs(argv: string[]): { quick: boolean; only?: Set<string>; out: string } {
  let quick = false;
  let only: Set<string> | undefined;
  let out = '.bench';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') quick = true;
    else if (a === '--only') only = new Set((argv[++i] ?? '').split(',').filter(Boolean));
    else if (a === '--out') out = argv[++i] ?? out;
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: npm run bench -- [--quick] [--only planner,backends,dataplane,agent,scale,health,restart] [--out DIR]',
      );
      process.exit(0);
    } else {
      console.error(`bench: unknown argument ${a}; see --help`);
      process.exit(2);
    }
  }
  return { quick, only, out };
}

function fmt(n: number | undefined): string {
  if (n === undefined || Number.isNaN(n)) return '-';
  if (Math.abs(n) >= 100) return n.toFixed(0);
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function verdict(r: BenchRow): string {
  if (!r.target) return '';
  const ok = r.target.op === '<=' ? r.value <= r.target.value : r.value >= r.target.value;
  return ok ? 'ok' : 'MISSED';
}

export function renderTable(rows: BenchRow[]): string {
  const header = ['group', 'figure', 'p50', 'p99', 'max', 'value', 'unit', 'target', '×TTL', 'n', ''];
  const body = rows.map((r) => [
    r.group,
    r.name,
    fmt(r.p50),
    fmt(r.p99),
    fmt(r.max),
    fmt(r.value),
    r.unit,
    r.target ? `${r.target.op} ${r.target.value}` : '',
    r.ttlMs ? (r.value / r.ttlMs).toFixed(3) : '',
    r.samples !== undefined ? String(r.samples) : '',
    verdict(r),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const ctx: BenchContext = { quick: args.quick, log: (l) => process.stderr.write(`${l}\n`) };
  const rows: BenchRow[] = [];
  const failures: { suite: string; error: string }[] = [];
  for (const s of SUITES) {
    if (args.only && !args.only.has(s.name)) continue;
    ctx.log(`bench: ${s.name} ...`);
    const started = Date.now();
    try {
      const suite = s.suite;
      rows.push(...(await suite(ctx)));
      ctx.log(`bench: ${s.name} done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } catch (err) {
      const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
      failures.push({ suite: s.name, error });
      ctx.log(`bench: ${s.name} FAILED: ${error}`);
    }
  }
  console.log(renderTable(rows));
  for (const f of failures) console.log(`suite ${f.suite} failed: ${f.error.split('\n')[0]}`);
  await mkdir(args.out, { recursive: true });
  const file = join(args.out, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const doc = { at: new Date().toISOString(), node: process.version, quick: args.quick, rows, failures };
  await writeFile(file, JSON.stringify(doc, null, 2));
  await writeFile(join(args.out, 'latest.json'), JSON.stringify(doc, null, 2));
  console.log(`\nwritten: ${file}`);
  if (failures.length > 0) process.exitCode = 1;
}

await main();
