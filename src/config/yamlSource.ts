import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';
import type { InputIssue } from '../errors.js';

// A parsed YAML document that remembers where each field was written, so that a schema issue found on the
// plain JS value can name the line: lineOf(['vips', 1, 'buckets']) is the line of that key.

export interface YamlSource {
  file: string;
  /** The document as plain JS (undefined for an empty document). */
  value: unknown;
  /** Syntax errors (duplicate keys, bad indentation, several documents), each with its line. */
  syntaxIssues: InputIssue[];
  /** Line (1-based) of the deepest node of `path` that exists in the document. */
  lineOf(path: readonly PropertyKey[]): number | undefined;
}

export function parseYamlSource(text: string, file: string): YamlSource {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: true, uniqueKeys: true });
  const syntaxIssues: InputIssue[] = doc.errors.map((e) => ({
    where: file,
    path: '',
    // prettyErrors appends " at line L, column C:" and a snippet; the line goes into the issue instead.
    message: `YAML: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`,
    ...(e.linePos ? { line: e.linePos[0].line } : {}),
  }));
  const lineAt = (offset: number | undefined) => (offset === undefined ? undefined : lc.linePos(offset).line);
  const lineOf = (path: readonly PropertyKey[]): number | undefined => {
    let node: unknown = doc.contents;
    let line = lineAt((node as Node | null)?.range?.[0]);
    for (const seg of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
        if (!pair) break;
        line = lineAt((pair.key as Node).range?.[0]) ?? line;
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number') {
        const item = node.items[seg] as Node | undefined;
        if (!item) break;
        line = lineAt(item.range?.[0]) ?? line;
        node = item;
      } else break;
    }
    return line;
  };
  let value: unknown = undefined;
  if (doc.errors.length === 0) value = doc.toJS({ maxAliasCount: 100 }) ?? undefined;
  return { file, value, syntaxIssues, lineOf };
}
