import type { DeleteBuilder, Etcd3, PutBuilder } from 'etcd3';
import type { Keys } from '../etcd/keys.js';
import { cmpRevision, type CandidateEntry, type ClusterState } from '../etcd/store.js';
import { NotLeaderError } from '../errors.js';
import type { AgentEvent } from './events.js';
import type { HeldLease, LeaseScope } from './leaseScope.js';

// Leader election as etcd's concurrency.Election, on the node's own lease (so the TTL is the node's, never
// etcd3's 60 s default, and losing the lease ends the candidacy with everything else): the candidate key is
// `<electionName>/<lease hex>` holding the node id; the lowest create revision leads. Who leads is decided from
// the cluster picture the agent already watches. Every leader-only write is a txn guarded by
// `Create(candidate key) == its create revision`, so a deposed leader's writes fail even when its key was
// deleted behind its back and it has not noticed yet.

export interface CampaignKey {
  key: string;
  createRevision: string;
}

export type LeadershipDecision =
  | { role: 'leader' }
  | { role: 'follower'; leader: string | null }
  /** Our key is not visible yet in a picture older than its creation. */
  | { role: 'pending' }
  | { role: 'lost'; reason: 'keyDeleted' | 'keyReplaced' };

/** Pure: who leads, from our candidacy and the picture's candidates. */
export function decideLeadership(
  candidates: readonly CandidateEntry[],
  pictureRevision: string,
  mine: CampaignKey,
): LeadershipDecision {
  const seen = candidates.find((c) => c.key === mine.key);
  if (!seen) {
    return cmpRevision(pictureRevision, mine.createRevision) < 0
      ? { role: 'pending' }
      : { role: 'lost', reason: 'keyDeleted' };
  }
  if (seen.createRevision !== mine.createRevision) {
    return cmpRevision(seen.createRevision, mine.createRevision) < 0
      ? { role: 'pending' }
      : { role: 'lost', reason: 'keyReplaced' };
  }
  const first = candidates[0]!;
  return first.key === mine.key ? { role: 'leader' } : { role: 'follower', leader: first.node };
}

export function candidateKey(keys: Keys, leaseId: string): string {
  return `${keys.electionName}/${BigInt(leaseId).toString(16)}`;
}

export interface ElectionOptions {
  etcd: Etcd3;
  keys: Keys;
  nodeId: string;
  /** We stand under the session's lease (etcd's NewElection(s *Session, …)): the candidate key dies with it. */
  session: LeaseScope;
  emit: (e: AgentEvent) => void;
}

export class Election {
  private mine: CampaignKey | null = null;
  private leaseId: string | null = null;
  private leading = false;
  private campaigning: Promise<void> | null = null;

  constructor(private readonly o: ElectionOptions) {}

  get isLeader(): boolean {
    return this.leading;
  }

  get campaignKey(): CampaignKey | null {
    return this.mine;
  }

  /** Stand as a candidate under the session's current lease (idempotent for the same lease; none: no-op). */
  async campaign(): Promise<void> {
    const lease = this.o.session.lease();
    if (!lease) return;
    if (this.leaseId !== lease.id) {
      this.stepDown('leaseChanged');
      this.mine = null;
    }
    this.leaseId = lease.id;
    if (this.mine) return;
    this.campaigning ??= this.doCampaign(lease).finally(() => (this.campaigning = null));
    await this.campaigning;
  }

  private async doCampaign(lease: HeldLease): Promise<void> {
    const { etcd } = this.o;
    const leaseId = lease.id;
    const key = candidateKey(this.o.keys, leaseId);
    const res = await etcd
      .if(key, 'Create', '==', 0)
      .then(lease.put(key).value(this.o.nodeId))
      .else(etcd.get(key))
      .commit();
    if (this.leaseId !== leaseId) return;
    if (res.succeeded) {
      this.mine = { key, createRevision: res.header.revision };
    } else {
      const kv = res.responses[0]?.response_range?.kvs[0];
      if (kv && kv.lease === leaseId) this.mine = { key, createRevision: kv.create_revision };
      else if (kv) {
        // Our key name, not our lease (overwritten from outside): no candidate. Remove it (only that version)
        // and stand again on the next change.
        await etcd
          .if(key, 'Mod', '==', kv.mod_revision)
          .then(etcd.delete().key(key))
          .commit()
          .catch(() => undefined);
      }
    }
  }

  /**
   * Re-decide from a fresh picture. Returns 'recampaign' when our key vanished (deleted from outside) and the
   * caller should campaign again.
   */
  evaluate(state: ClusterState): 'recampaign' | null {
    if (!this.mine) return null;
    const d = decideLeadership(state.candidates, state.revision, this.mine);
    switch (d.role) {
      case 'leader':
        if (!this.leading) {
          this.leading = true;
          this.o.emit({ event: 'elected', revision: this.mine.createRevision });
        }
        return null;
      case 'follower':
        this.stepDown('otherLeader');
        return null;
      case 'pending':
        return null;
      case 'lost':
        this.stepDown(d.reason);
        this.mine = null;
        return 'recampaign';
    }
  }

  /** Called when a fenced write failed or the lease is gone. */
  stepDown(reason: string): void {
    if (this.leading) {
      this.leading = false;
      this.o.emit({ event: 'deposed', reason });
    }
  }

  /** Forget the candidacy (lease lost). */
  reset(reason: string): void {
    this.stepDown(reason);
    this.mine = null;
    this.leaseId = null;
  }

  /**
   * Commit `ops` only if our candidate key still has the create revision we campaigned with.
   * Throws NotLeaderError (and steps down) when it does not.
   */
  async fencedTxn(ops: (PutBuilder | DeleteBuilder)[]): Promise<string> {
    const mine = this.mine;
    const lease = this.leaseId;
    if (!mine || !this.leading || !lease) throw new NotLeaderError('not the leader');
    // The lease too: a put over our key without a lease keeps its create revision but leaves no candidate.
    const res = await this.o.etcd
      .if(mine.key, 'Create', '==', mine.createRevision)
      .and(mine.key, 'Lease', '==', lease)
      .then(...ops)
      .commit();
    if (!res.succeeded) {
      this.stepDown('fencedWriteFailed');
      if (this.mine === mine) this.mine = null;
      throw new NotLeaderError(`campaign key ${mine.key} no longer has create revision ${mine.createRevision}`);
    }
    return res.header.revision;
  }

  /**
   * Delete `key` if it is still at `modRevision`, fenced like every leader write. False when not committed: the
   * key changed (a newer value is judged on its own) or we no longer lead (the next leader judges again).
   */
  async fencedDelete(key: string, modRevision: string): Promise<boolean> {
    const mine = this.mine;
    const lease = this.leaseId;
    if (!mine || !this.leading || !lease) return false;
    const res = await this.o.etcd
      .if(mine.key, 'Create', '==', mine.createRevision)
      .and(mine.key, 'Lease', '==', lease)
      .and(key, 'Mod', '==', modRevision)
      .then(this.o.etcd.delete().key(key))
      .commit();
    return res.succeeded;
  }
}
