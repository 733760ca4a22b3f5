import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { ConfigError, type InputIssue } from '../errors.js';
import { show, sortIssues, toInputIssues } from './issues.js';
import {
  CONFIG_ENV,
  CONFIG_FLAG,
  NODE_OPTION_BY_KEY,
  NODE_OPTIONS,
  envVarFor,
  parseListen,
  type NodeOption,
  type NodeOptionKey,
  type OptionType,
} from './nodeOptions.js';
import type { BackendConfig, BackendKind, CheckConfig, LogLevel, NodeConfig } from './types.js';
import { parseYamlSource, type YamlSource } from './yamlSource.js';

// Node config resolution: for every option of NODE_OPTIONS the first of flag > environment > file > default
// wins; each value is validated where it came from, so an error names the flag, the variable or file:line.

export interface LoadNodeConfigInput {
  /** commander's opts(): keys are the camelCase option names (`etcdEndpoints`); kebab-case keys work too. */
  flags: Record<string, unknown>;
  env: NodeJS.ProcessEnv;
  /** Overrides `--config` / CLUSTERIP_HA_CONFIG. */
  configFile?: string;
}

export type FileKind = 'file' | 'missing' | 'notFile';

/** Everything resolution needs from the outside world, so it can run without I/O in tests. */
export interface ResolveInput {
  flags: Record<string, unknown>;
  env: NodeJS.ProcessEnv;
  file?: { path: string; text: string };
  hostname: string;
  fileKind(path: string): FileKind;
}

type Source = { kind: 'flag' } | { kind: 'env' } | { kind: 'file'; file: string; line?: number } | { kind: 'default' };

interface Resolved {
  value: unknown;
  source: Source;
}

function issueAt(o: NodeOption, src: Source, message: string): InputIssue {
  switch (src.kind) {
    case 'flag':
      return { where: `--${o.flag}`, path: '', message };
    case 'env':
      return { where: envVarFor(o.flag), path: '', message };
    case 'file':
      return {
        where: src.file,
        path: o.yaml.join('.'),
        message,
        ...(src.line !== undefined ? { line: src.line } : {}),
      };
    case 'default':
      return { where: `--${o.flag}`, path: '', message: `default (${o.defaultText}): ${message}` };
  }
}

/** How `o` is spelled in the source it came from, for messages about other options. */
function nameIn(o: NodeOption, src: Source): string {
  switch (src.kind) {
    case 'flag':
    case 'default':
      return `--${o.flag}`;
    case 'env':
      return envVarFor(o.flag);
    case 'file':
      return o.yaml.join('.');
  }
}

type Coerced = { ok: true; value: unknown } | { ok: false; message: string };

/** Text (flag or environment) to the option's typed value; typed values (programmatic flags) pass through. */
export function fromText(type: OptionType, raw: unknown): Coerced {
  if (typeof raw !== 'string') return { ok: true, value: raw };
  const s = raw.trim();
  switch (type) {
    case 'string':
      return { ok: true, value: raw };
    case 'int':
      // Not a number: pass the text on so the option's schema words the error with its range.
      return { ok: true, value: /^[+-]?\d+$/.test(s) ? Number(s) : raw };
    case 'boolean': {
      const v = { true: true, '1': true, false: false, '0': false }[s.toLowerCase()];
      return v === undefined
        ? { ok: false, message: `expected true, false, 1 or 0, got ${show(raw)}` }
        : { ok: true, value: v };
    }
    case 'list':
      return {
        ok: true,
        value: s
          .split(',')
          .map((p) => p.trim())
          .filter((p) => p !== ''),
      };
    case 'json':
      try {
        return { ok: true, value: JSON.parse(s) as unknown };
      } catch (err) {
        return { ok: false, message: `expected JSON, got invalid JSON (${(err as Error).message})` };
      }
    case 'argv': {
      if (!s.startsWith('[')) return { ok: true, value: [s] };
      try {
        return { ok: true, value: JSON.parse(s) as unknown };
      } catch (err) {
        return { ok: false, message: `expected a JSON list of strings, got invalid JSON (${(err as Error).message})` };
      }
    }
  }
}

function check(o: NodeOption, value: unknown): Coerced {
  const r = o.schema.safeParse(value, { reportInput: true });
  if (r.success) return { ok: true, value: r.data };
  return {
    ok: false,
    message: r.error.issues
      .map(
        (i) =>
          (i.path.length ? `${i.path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('')}: ` : '') +
          i.message,
      )
      .join('; '),
  };
}

type Tree = { [k: string]: Tree | NodeOption };

/** The YAML file schema, nested like NodeConfig, every field optional, unknown fields rejected. */
function fileSchema(): z.ZodType {
  const root: Tree = {};
  for (const o of NODE_OPTIONS) {
    let t = root;
    for (const seg of o.yaml.slice(0, -1)) t = (t[seg] ??= {}) as Tree;
    t[o.yaml[o.yaml.length - 1]!] = o;
  }
  const build = (t: Tree): z.ZodType =>
    z.strictObject(
      Object.fromEntries(
        Object.entries(t).map(([k, v]) => [
          k,
          'schema' in v ? (v as NodeOption).schema.optional() : build(v as Tree).optional(),
        ]),
      ),
      { error: (iss) => `expected a mapping, got ${show(iss.input)}` },
    );
  return build(root);
}
const FILE_SCHEMA = fileSchema();

function getPath(v: unknown, path: readonly string[]): unknown {
  let cur = v;
  for (const seg of path) {
    if (typeof cur !== 'object' || cur === null || Array.isArray(cur)) return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

/** Resolve and validate; throws one ConfigError with every issue found. */
export function resolveNodeConfig(input: ResolveInput): NodeConfig {
  const issues: InputIssue[] = [];
  let src: YamlSource | undefined;
  if (input.file) {
    src = parseYamlSource(input.file.text, input.file.path);
    issues.push(...src.syntaxIssues);
    if (src.syntaxIssues.length === 0 && src.value !== undefined && src.value !== null) {
      const r = FILE_SCHEMA.safeParse(src.value, { reportInput: true });
      if (!r.success)
        issues.push(...toInputIssues(r.error.issues, { where: src.file, lineOf: src.lineOf }, FILE_SCHEMA));
    }
  }

  const explicit = new Map<NodeOptionKey, Resolved>();
  for (const o of NODE_OPTIONS) {
    const flagVal = input.flags[o.key] ?? input.flags[o.flag];
    const envVal = input.env[envVarFor(o.flag)];
    let src2: Source | undefined;
    let raw: unknown;
    if (flagVal !== undefined) [src2, raw] = [{ kind: 'flag' }, flagVal];
    else if (envVal !== undefined && envVal !== '') [src2, raw] = [{ kind: 'env' }, envVal];
    else if (src) {
      const v = getPath(src.value, o.yaml);
      if (v !== undefined) {
        const line = src.lineOf(o.yaml);
        // The whole file was validated above; an invalid leaf is already reported, so only take valid ones.
        const c = check(o, v);
        if (c.ok)
          explicit.set(o.key, {
            value: c.value,
            source: { kind: 'file', file: src.file, ...(line !== undefined ? { line } : {}) },
          });
        else explicit.set(o.key, { value: undefined, source: { kind: 'file', file: src.file } });
        continue;
      }
    }
    if (!src2) continue;
    const c1 = fromText(o.type, raw);
    const c2 = c1.ok ? check(o, c1.value) : c1;
    if (!c2.ok) issues.push(issueAt(o, src2, c2.message));
    explicit.set(o.key, { value: c2.ok ? c2.value : undefined, source: src2 });
  }

  // Defaults may depend on other options (backend dir on the state dir, fence margin on the TTL).
  const resolved = new Map<NodeOptionKey, Resolved>();
  const get = (key: NodeOptionKey): unknown => resolve(key).value;
  const resolve = (key: NodeOptionKey): Resolved => {
    const done = resolved.get(key);
    if (done) return done;
    const o = NODE_OPTION_BY_KEY.get(key)!;
    let r = explicit.get(key);
    if (!r) {
      let value: unknown = undefined;
      if (o.default) {
        const c = check(o, o.default({ get, hostname: input.hostname }));
        if (c.ok) value = c.value;
        else if (!(key === 'fenceMargin' && get('leaseTtl') === undefined))
          issues.push(issueAt(o, { kind: 'default' }, c.message));
      }
      r = { value, source: { kind: 'default' } };
    }
    resolved.set(key, r);
    return r;
  };
  for (const o of NODE_OPTIONS) resolve(o.key);

  issues.push(...crossFieldIssues(resolved, input));
  if (issues.length > 0) throw new ConfigError(sortIssues(dedupe(issues)));
  return build(resolved);
}

function dedupe(issues: InputIssue[]): InputIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${i.where}\0${i.line ?? ''}\0${i.path}\0${i.message}`;
    return seen.has(k) ? false : (seen.add(k), true);
  });
}

function crossFieldIssues(r: ReadonlyMap<NodeOptionKey, Resolved>, input: ResolveInput): InputIssue[] {
  const out: InputIssue[] = [];
  const opt = (k: NodeOptionKey) => NODE_OPTION_BY_KEY.get(k)!;
  const at = (k: NodeOptionKey) => r.get(k)!;
  const given = (k: NodeOptionKey) => at(k).source.kind !== 'default' && at(k).value !== undefined;
  const backend = at('backend').value as BackendKind | undefined;

  if (backend !== undefined) {
    for (const o of NODE_OPTIONS) {
      if (o.backend && o.backend !== backend && given(o.key)) {
        out.push(
          issueAt(o, at(o.key).source, `applies only to the ${o.backend} backend, but the backend is ${backend}`),
        );
      }
    }
    if (backend === 'exec' && at('execCommand').value === undefined && at('execCommand').source.kind === 'default') {
      const e = opt('execCommand');
      out.push(
        issueAt(
          opt('backend'),
          at('backend').source,
          `the exec backend needs a command: give --${e.flag}, ${envVarFor(e.flag)} or ${e.yaml.join('.')} in the config file`,
        ),
      );
    }
  }

  for (const k of ['etcdCa', 'etcdCert', 'etcdKey', 'etcdPasswordFile'] as const) {
    const v = at(k).value;
    if (typeof v !== 'string') continue;
    const kind = input.fileKind(v);
    if (kind !== 'file') {
      out.push(issueAt(opt(k), at(k).source, kind === 'missing' ? `file not found: ${v}` : `not a regular file: ${v}`));
    }
  }
  const pairs: [NodeOptionKey, NodeOptionKey][] = [
    ['etcdCert', 'etcdKey'],
    ['etcdKey', 'etcdCert'],
    ['etcdPassword', 'etcdUser'],
    ['etcdPasswordFile', 'etcdUser'],
  ];
  const missing = (k: NodeOptionKey) => at(k).value === undefined && at(k).source.kind === 'default';
  for (const [a, b] of pairs) {
    if (given(a) && missing(b))
      out.push(issueAt(opt(a), at(a).source, `needs ${nameIn(opt(b), at(a).source)} as well`));
  }
  if (given('etcdUser') && missing('etcdPassword') && missing('etcdPasswordFile'))
    out.push(
      issueAt(
        opt('etcdUser'),
        at('etcdUser').source,
        `needs ${nameIn(opt('etcdPasswordFile'), at('etcdUser').source)} (or ${nameIn(opt('etcdPassword'), at('etcdUser').source)}) as well`,
      ),
    );
  if (given('etcdPassword') && given('etcdPasswordFile'))
    out.push(
      issueAt(opt('etcdPasswordFile'), at('etcdPasswordFile').source, 'give the password or its file, not both'),
    );
  const endpoints = at('etcdEndpoints').value as string[] | undefined;
  const tls = (['etcdCa', 'etcdCert'] as const).find((k) => given(k));
  if (tls && endpoints?.some((e) => e.startsWith('http://'))) {
    const e = opt('etcdEndpoints');
    out.push(
      issueAt(
        opt(tls),
        at(tls).source,
        `TLS files are given but ${nameIn(e, at('etcdEndpoints').source)} uses http://; use https:// URLs`,
      ),
    );
  }

  const checks = (at('checks').value ?? []) as CheckConfig[];
  checks.forEach((c, i) => {
    if (c.type !== 'https' || c.ca === undefined) return;
    const kind = input.fileKind(c.ca);
    if (kind === 'file') return;
    const issue = issueAt(opt('checks'), at('checks').source, '');
    out.push({
      ...issue,
      path: issue.path !== '' ? `${issue.path}[${i}].ca` : '',
      message: `${issue.path !== '' ? '' : `[${i}].ca: `}${kind === 'missing' ? 'file not found' : 'not a regular file'}: ${c.ca}`,
    });
  });

  // The fence must fire before the lease can expire with room to spare: margin < TTL/2.
  const ttl = at('leaseTtl').value as number | undefined;
  const margin = at('fenceMargin').value as number | undefined;
  if (ttl !== undefined && margin !== undefined && margin >= (ttl * 1000) / 2) {
    const blame: NodeOptionKey = given('fenceMargin') ? 'fenceMargin' : 'leaseTtl';
    out.push(
      issueAt(
        opt(blame),
        at(blame).source,
        `fence margin ${margin} ms must be below half the lease TTL (${(ttl * 1000) / 2} ms for a ${ttl} s TTL)`,
      ),
    );
  }
  return out;
}

function build(r: ReadonlyMap<NodeOptionKey, Resolved>): NodeConfig {
  const v = <T>(k: NodeOptionKey): T => r.get(k)!.value as T;
  const opt = <T>(k: NodeOptionKey): T | undefined => r.get(k)!.value as T | undefined;
  const kind = v<BackendKind>('backend');
  let backend: BackendConfig;
  switch (kind) {
    case 'file':
      backend = { kind, dir: v('backendDir') };
      break;
    case 'nftables':
      backend = {
        kind,
        table: v('nftTable'),
        nftPath: v('nftPath'),
        arpMangle: v('nftArpMangle'),
        multicastSubscribe: v('nftMulticastSubscribe'),
        transport: v('nftTransport'),
      };
      break;
    case 'clusterip':
      backend = {
        kind,
        procDir: v('clusteripProcDir'),
        manageRule: v('clusteripManageRule'),
        iptablesPath: v('iptablesPath'),
      };
      break;
    case 'exec':
      backend = { kind, command: v('execCommand'), timeoutMs: v('execTimeout') };
      break;
  }
  const optional = (k: NodeOptionKey, name: string) => (opt(k) !== undefined ? { [name]: opt<string>(k) } : {});
  return {
    nodeId: v('nodeId'),
    weight: v('weight'),
    etcd: {
      endpoints: v('etcdEndpoints'),
      ...optional('etcdCa', 'ca'),
      ...optional('etcdCert', 'cert'),
      ...optional('etcdKey', 'key'),
      ...optional('etcdUser', 'user'),
      ...optional('etcdPassword', 'password'),
      ...optional('etcdPasswordFile', 'passwordFile'),
      requestTimeoutMs: v('etcdRequestTimeout'),
    },
    cluster: v('cluster'),
    backend,
    leaseTtlSeconds: v('leaseTtl'),
    fenceMarginMs: v('fenceMargin'),
    metricsListen: parseListen(v('metricsListen'))!,
    stateDir: v('stateDir'),
    logLevel: v<LogLevel>('logLevel'),
    shutdownTimeoutMs: v('shutdownTimeout'),
    restartBudgetMs: v('restartBudget'),
    health: {
      checks: v('checks'),
      ...(opt('maintenanceFile') !== undefined ? { maintenanceFile: opt<string>('maintenanceFile')! } : {}),
      holdMs: v('healthHold'),
    },
  } satisfies NodeConfig;
}

function fileKindOf(path: string): FileKind {
  try {
    return statSync(path).isFile() ? 'file' : 'notFile';
  } catch {
    return 'missing';
  }
}

/** flags > environment > `--config` file > defaults; throws ConfigError listing every issue. */
export async function loadNodeConfig(input: LoadNodeConfigInput): Promise<NodeConfig> {
  const fromFlag = input.flags[CONFIG_FLAG];
  const envFile = input.env[CONFIG_ENV];
  const path =
    input.configFile ??
    (typeof fromFlag === 'string' ? fromFlag : undefined) ??
    (envFile !== undefined && envFile !== '' ? envFile : undefined);
  let file: ResolveInput['file'];
  if (path !== undefined) {
    try {
      file = { path, text: await readFile(path, 'utf8') };
    } catch (err) {
      const where = input.configFile !== undefined || fromFlag !== undefined ? '--config' : CONFIG_ENV;
      throw new ConfigError([
        {
          where,
          path: '',
          message: `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        },
      ]);
    }
  }
  const cfg = resolveNodeConfig({
    flags: input.flags,
    env: input.env,
    ...(file ? { file } : {}),
    hostname: osHostname(),
    fileKind: fileKindOf,
  });
  const pwFile = cfg.etcd.passwordFile;
  if (pwFile === undefined) return cfg;
  let password: string;
  try {
    password = (await readFile(pwFile, 'utf8')).replace(/\r?\n$/, '');
  } catch (err) {
    throw new ConfigError([
      {
        where: 'etcd.passwordFile',
        path: '',
        message: `cannot read ${pwFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      },
    ]);
  }
  if (password === '') throw new ConfigError([{ where: 'etcd.passwordFile', path: '', message: `${pwFile} is empty` }]);
  const { passwordFile: _f, ...etcd } = cfg.etcd;
  return { ...cfg, etcd: { ...etcd, password } };
}

/** Register every node option on `cmd` without commander defaults, so loadNodeConfig can apply precedence. */
export function addNodeConfigOptions(cmd: Command): Command {
  cmd.addOption(new Option(`--${CONFIG_FLAG} <FILE>`, `node config YAML file (env ${CONFIG_ENV})`));
  for (const o of NODE_OPTIONS) {
    const arg = o.type === 'boolean' ? `[${o.valueName}]` : `<${o.valueName}>`;
    cmd.addOption(
      new Option(`--${o.flag} ${arg}`, `${o.description} (env ${envVarFor(o.flag)}; default ${o.defaultText})`),
    );
  }
  return cmd;
}
