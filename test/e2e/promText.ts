// A strict parser for the Prometheus text exposition format (what /metrics serves), so tests read values by
// name and labels instead of grepping. Throws on any line it does not understand.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface ParsedMetrics {
  samples: Sample[];
  types: Map<string, string>;
  help: Map<string, string>;
  get(name: string, labels?: Record<string, string>): number | undefined;
}

const SAMPLE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$/;
const LABEL_RE = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/gy;

export function parsePromText(text: string): ParsedMetrics {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  for (const [i, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue;
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      (meta[1] === 'HELP' ? help : types).set(meta[2]!, meta[3]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = SAMPLE_RE.exec(line);
    if (!m) throw new Error(`line ${i + 1}: not a sample: ${line}`);
    const labels: Record<string, string> = {};
    if (m[3]) {
      LABEL_RE.lastIndex = 0;
      let consumed = 0;
      let lm: RegExpExecArray | null;
      while ((lm = LABEL_RE.exec(m[3])) !== null) {
        labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
        consumed = LABEL_RE.lastIndex;
      }
      if (consumed !== m[3].length) throw new Error(`line ${i + 1}: bad labels: ${m[3]}`);
    }
    const raw = m[4]!;
    // Go's ParseFloat (Prometheus' parser) takes NaN and Inf in any case; prom-client writes "Nan".
    const lower = raw.toLowerCase();
    const value = /^[+]?inf$/.test(lower)
      ? Infinity
      : lower === '-inf'
        ? -Infinity
        : lower === 'nan'
          ? NaN
          : Number(raw);
    if (Number.isNaN(value) && lower !== 'nan') throw new Error(`line ${i + 1}: bad value ${raw}`);
    samples.push({ name: m[1]!, labels, value });
  }
  return {
    samples,
    types,
    help,
    get(name, want = {}) {
      const s = samples.find(
        (x) =>
          x.name === name &&
          Object.keys(want).length === Object.keys(x.labels).length &&
          Object.entries(want).every(([k, v]) => x.labels[k] === v),
      );
      return s?.value;
    },
  };
}
