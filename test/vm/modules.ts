import { readFile } from 'node:fs/promises';

// Nothing auto-loads modules in the VM (no udev, no modprobe.d), so the host computes the insmod order from the
// `depends=` field each .ko carries in its .modinfo section.

/** What the VM needs: the 9p root share, a dummy and a veth for `-i`, and iptables with CLUSTERIP. */
export const VM_ROOT_MODULES = [
  'virtio_pci',
  '9pnet_virtio',
  '9p',
  'dummy',
  'veth',
  'iptable_filter',
  'xt_tcpudp',
  'ipt_CLUSTERIP',
] as const;

/**
 * Dependencies `depends=` does not name. libcrc32c asks for "crc32c" through a softdep (an alias that only
 * modprobe resolves); without crc32c_generic loaded first its init fails and nf_conntrack with it.
 */
export const SOFT_DEPS: Readonly<Record<string, readonly string[]>> = {
  libcrc32c: ['crc32c_generic'],
};

/** The `depends=` list from a .ko file's .modinfo strings (NUL-separated key=value pairs). */
export function parseModinfoDepends(ko: Buffer): string[] {
  const marker = Buffer.from('\0depends=');
  const at = ko.indexOf(marker);
  if (at < 0) return [];
  const start = at + marker.length;
  const end = ko.indexOf(0, start);
  const value = ko.subarray(start, end < 0 ? undefined : end).toString('latin1');
  return value === '' ? [] : value.split(',');
}

export type LoadOrderResult =
  { ok: true; order: string[] } | { ok: false; reason: 'missing' | 'cycle'; module: string };

/** Depth-first topological order: every module after everything it depends on, roots in the given order. */
export function moduleLoadOrder(
  roots: readonly string[],
  depsOf: (name: string) => readonly string[] | undefined,
): LoadOrderResult {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string): LoadOrderResult | undefined => {
    const s = state.get(name);
    if (s === 'done') return undefined;
    if (s === 'visiting') return { ok: false, reason: 'cycle', module: name };
    const deps = depsOf(name);
    if (deps === undefined) return { ok: false, reason: 'missing', module: name };
    state.set(name, 'visiting');
    for (const d of [...(SOFT_DEPS[name] ?? []), ...deps]) {
      const bad = visit(d);
      if (bad) return bad;
    }
    state.set(name, 'done');
    order.push(name);
    return undefined;
  };
  for (const r of roots) {
    const bad = visit(r);
    if (bad) return bad;
  }
  return { ok: true, order };
}

/** Index of module name -> .ko path for a `lib/modules/<release>/kernel` tree listing. */
export function indexModules(koPaths: readonly string[]): Map<string, string> {
  const index = new Map<string, string>();
  for (const p of koPaths) {
    const base = p.slice(p.lastIndexOf('/') + 1).replace(/\.ko$/, '');
    // Module names treat '-' and '_' alike; the files use either.
    index.set(base.replace(/-/g, '_'), p);
  }
  return index;
}

/** Resolve the load order against real .ko files; returns the ordered file paths. */
export async function resolveModuleFiles(
  index: ReadonlyMap<string, string>,
  roots: readonly string[] = VM_ROOT_MODULES,
): Promise<{ name: string; path: string }[]> {
  const deps = new Map<string, string[]>();
  const pending = [...roots];
  while (pending.length > 0) {
    const name = pending.pop()!;
    if (deps.has(name)) continue;
    const path = index.get(name);
    if (path === undefined) continue; // reported as 'missing' by moduleLoadOrder
    const d = parseModinfoDepends(await readFile(path));
    deps.set(name, d);
    pending.push(...d, ...(SOFT_DEPS[name] ?? []));
  }
  const res = moduleLoadOrder(roots, (n) => deps.get(n));
  if (!res.ok) throw new Error(`kernel module ${res.module}: ${res.reason}`);
  return res.order.map((name) => ({ name, path: index.get(name)! }));
}
