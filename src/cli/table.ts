// Plain column alignment for terminals; pipes get tab-separated rows that `cut -f` and `awk -F'\t'` read.
export function formatTable(rows: string[][], tty: boolean, visibleLength: (s: string) => number = stripLen): string {
  if (rows.length === 0) return '';
  if (!tty) return rows.map((r) => r.join('\t')).join('\n') + '\n';
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, visibleLength(c))));
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c + ' '.repeat((widths[i] ?? 0) - visibleLength(c))))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;]*m/g;
export const stripLen = (s: string): number => s.replace(ANSI, '').length;

/** `1-3,7,9-10` from a list of bucket numbers. */
export function ranges(nums: number[]): string {
  const s = [...nums].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < s.length;) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    out.push(i === j ? `${s[i]}` : `${s[i]}-${s[j]}`);
    i = j + 1;
  }
  return out.join(',');
}
