import { CommanderError } from 'commander';
import { describe, expect, it } from 'vitest';
import { ConfigError, ConflictError, EtcdUnavailableError } from '../../src/errors.js';
import { describeError, UnhealthyError, UsageError } from '../../src/cli/errors.js';
import { tidyGrpcMessage } from '../../src/cli/connection.js';
import { diffSpecs, renderDiff } from '../../src/cli/specDiff.js';
import { formatTable, ranges } from '../../src/cli/table.js';
import { validateClusterSpec } from '../../src/config/index.js';
import { renderStatus } from '../../src/cli/statusRender.js';
import { buildStatus } from '../../src/cli/statusModel.js';
import { emptyClusterState } from '../../src/etcd/store.js';

describe('describeError', () => {
  it('maps every error family to its exit code and one line', () => {
    const cases: [unknown, number, RegExp][] = [
      [
        new CommanderError(1, 'commander.unknownOption', "error: unknown option '--x'"),
        2,
        /^unknown option '--x' — run `clusterip-ha status --help`$/,
      ],
      [new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)'), 0, /./],
      [new UsageError('bad'), 2, /^bad — run/],
      [
        new ConfigError([
          { where: 'f.yaml', path: 'a', message: 'x', line: 3 },
          { where: 'f.yaml', path: 'b', message: 'y' },
        ]),
        2,
        /^invalid input: f\.yaml:3: a: x; f\.yaml: b: y — fix/,
      ],
      [new ConflictError('spec changed'), 1, /spec changed — .*re-run/],
      [new EtcdUnavailableError('cannot reach etcd'), 1, /check --etcd-endpoints/],
      [new UnhealthyError('3 problems'), 3, /^3 problems$/],
      [new Error('boom\nsecond line'), 1, /^boom; second line — /],
    ];
    for (const [err, code, line] of cases) {
      const r = describeError(err, 'clusterip-ha status');
      expect(r.exitCode, String(err)).toBe(code);
      expect(r.line).toMatch(line);
      expect(r.line).not.toContain('\n');
    }
  });

  it('tidies grpc messages to what an operator acts on', () => {
    expect(
      tidyGrpcMessage(
        '14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ',
      ),
    ).toBe('connection refused');
    expect(tidyGrpcMessage('reading /x/: 12 UNIMPLEMENTED: Received HTTP status code 404')).toBe(
      'Received HTTP status code 404',
    );
  });
});

describe('spec diff', () => {
  const a = validateClusterSpec(
    {
      vips: [
        { address: '10.0.0.1', interface: 'eth0', buckets: 4, seed: 1 },
        { address: '10.0.0.2', interface: 'eth0', buckets: 4, seed: 1 },
      ],
    },
    't',
  );
  const b = validateClusterSpec(
    {
      vips: [
        { address: '10.0.0.1', interface: 'eth0', buckets: 8, seed: 1 },
        { address: '10.0.0.3', interface: 'eth1', buckets: 2, seed: 0x10 },
      ],
      rebalance: { joinMovesPerInterval: 0, intervalMs: 1000 },
    },
    't',
  );
  it('lists added, removed and changed VIPs, flags re-hashing changes', () => {
    const lines = renderDiff(diffSpecs(a, b));
    expect(lines).toContain('~ vip 10.0.0.1: buckets 4 -> 8  (re-hashes every client of this VIP)');
    expect(lines.some((l) => l.startsWith('+ vip 10.0.0.3 on eth1: 2 buckets, sourceip, seed 0x00000010'))).toBe(true);
    expect(lines.some((l) => l.startsWith('- vip 10.0.0.2'))).toBe(true);
    expect(diffSpecs(a, a)).toEqual([]);
    expect(diffSpecs(null, a).map((c) => c.kind)).toEqual(['vipAdded', 'vipAdded']);
  });
});

describe('tables and rendering', () => {
  it('aligns on a TTY, tab-separates in pipes', () => {
    expect(
      formatTable(
        [
          ['A', 'BB'],
          ['ccc', 'd'],
        ],
        true,
      ),
    ).toBe('A    BB\nccc  d\n');
    expect(
      formatTable(
        [
          ['A', 'BB'],
          ['ccc', 'd'],
        ],
        false,
      ),
    ).toBe('A\tBB\nccc\td\n');
    expect(ranges([7, 1, 2, 3, 9, 10])).toBe('1-3,7,9-10');
  });
  it('puts anomalies before everything else and colours only when asked', () => {
    const r = buildStatus({ cluster: 'c', state: emptyClusterState() });
    const plain = renderStatus(r, { color: false, isTTY: false });
    expect(plain.indexOf('ANOMALIES')).toBeLessThan(plain.indexOf('LEADER'));
    expect(plain).not.toContain('\u001b[');
    expect(renderStatus(r, { color: true, isTTY: true })).toContain('\u001b[31m');
  });
});
