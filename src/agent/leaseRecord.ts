import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

// DESIGN §13: the leases this node was granted, kept in stateDir. A start may revoke only a lease it finds here:
// any other lease on nodes/<id> belongs to another agent with the same id (a cloned VM), and revoking it would
// shorten a live node's lease under its kernel.

const KEEP = 16;

const recordSchema = z.strictObject({
  v: z.literal(1),
  cluster: z.string(),
  nodeId: z.string(),
  /** Lease ids (decimal, as etcd3 reports them), newest last. */
  leases: z.array(z.string().regex(/^\d{1,20}$/)).max(KEEP),
});

export class LeaseRecord {
  private leases: string[] = [];
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    readonly file: string | null,
    private readonly cluster: string,
    private readonly nodeId: string,
  ) {}

  /**
   * Load the record of (cluster, node) from stateDir. A missing file is an empty record; an unreadable one is
   * reported through `onBad` and treated as empty (at worst we refuse to start until the old lease expires).
   */
  static async load(
    stateDir: string | undefined,
    cluster: string,
    nodeId: string,
    onBad: (file: string, error: string) => void,
  ): Promise<LeaseRecord> {
    const file = stateDir ? join(stateDir, `lease-${cluster}-${nodeId}.json`) : null;
    const r = new LeaseRecord(file, cluster, nodeId);
    if (!file) return r;
    let raw: string;
    try {
      raw = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') onBad(file, (err as Error).message);
      return r;
    }
    try {
      const v = recordSchema.parse(JSON.parse(raw));
      if (v.cluster === cluster && v.nodeId === nodeId) r.leases = v.leases;
    } catch (err) {
      onBad(file, (err as Error).message.slice(0, 300));
    }
    return r;
  }

  /** Whether this node was granted `leaseId` (this run or an earlier one recorded here). */
  has(leaseId: string): boolean {
    return this.leases.includes(leaseId);
  }

  /** Remember a granted lease, in memory at once and on disk before the promise resolves. */
  add(leaseId: string): Promise<void> {
    if (!this.leases.includes(leaseId)) this.leases = [...this.leases, leaseId].slice(-KEEP);
    const text = JSON.stringify({ v: 1, cluster: this.cluster, nodeId: this.nodeId, leases: this.leases });
    const file = this.file;
    if (!file) return Promise.resolve();
    // Serialized, so an older write never lands after a newer one.
    const p = this.writing.then(async () => {
      await mkdir(join(file, '..'), { recursive: true });
      const tmp = `${file}.tmp`;
      await writeFile(tmp, text);
      await rename(tmp, file);
    });
    this.writing = p.catch(() => undefined);
    return p;
  }
}
