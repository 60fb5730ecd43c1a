import {
  type AccessRecord,
  assertId,
  type KeyRecord,
  type MetadataStore,
  type Revisioned,
  type ShareSetFilter,
  type ShareSetRecord,
} from '@kos/core';
import { assertInteger, assertNonEmptyString, assertPositiveFinite } from './argument-checks.js';
import { frozenCopy } from './frozen-copy.js';
import {
  assertAccessRecord,
  assertExpectedRevision,
  assertKeyRecord,
  assertRevisionMatches,
  assertShareSetFilter,
  assertShareSetRecord,
  matchesShareSetFilter,
} from './record-checks.js';

/** Replay entries are swept of expired ones whenever their number doubles past this floor. */
const REPLAY_SWEEP_FLOOR = 1024;

interface HeldLock {
  readonly owner: string;
  readonly expiresAtMs: number;
}

/**
 * A metadata store in process memory: for tests and single-process demos. Every method runs
 * to completion without awaiting, so each is atomic with respect to the others. Records are
 * deep-copied and frozen on the way in; what callers get back is frozen, so store state can
 * only change through the store.
 *
 * @example
 * const meta = createMemoryMetadataStore();
 * const revision = await meta.putKey(record, null);
 * await meta.putKey({ ...record, updatedAt: Date.now() }, revision);
 */
export function createMemoryMetadataStore(): MetadataStore {
  const keys = new Map<string, Revisioned<KeyRecord>>();
  const ops = new Map<string, number>();
  const sets = new Map<string, ShareSetRecord>();
  const access = new Map<string, AccessRecord>();
  const replay = new Map<string, number>();
  const locks = new Map<string, HeldLock>();
  let sweepAtSize = REPLAY_SWEEP_FLOOR;

  function sweepReplay(nowMs: number): void {
    for (const [key, expiresAtMs] of replay) {
      if (expiresAtMs <= nowMs) replay.delete(key);
    }
    sweepAtSize = Math.max(REPLAY_SWEEP_FLOOR, replay.size * 2);
  }

  return {
    async getKey(kid: string): Promise<Revisioned<KeyRecord> | undefined> {
      assertId(kid, 'kid');
      return keys.get(kid);
    },
    async listKeys(): Promise<string[]> {
      return [...keys.keys()].sort();
    },
    async putKey(record: KeyRecord, expectedRevision: number | null): Promise<number> {
      assertKeyRecord(record);
      assertExpectedRevision(expectedRevision);
      const current = keys.get(record.kid);
      assertRevisionMatches(record.kid, current?.revision, expectedRevision);
      const revision = (current?.revision ?? 0) + 1;
      keys.set(record.kid, frozenCopy({ value: record, revision }));
      return revision;
    },

    async addOps(kid: string, version: number, count: number): Promise<number> {
      assertId(kid, 'kid');
      assertInteger(version, 'version', 1);
      assertInteger(count, 'count', 0);
      const key = `${kid}\u0000${version}`;
      const total = (ops.get(key) ?? 0) + count;
      ops.set(key, total);
      return total;
    },
    async getOps(kid: string, version: number): Promise<number> {
      assertId(kid, 'kid');
      assertInteger(version, 'version', 1);
      return ops.get(`${kid}\u0000${version}`) ?? 0;
    },

    async putShareSet(set: ShareSetRecord): Promise<void> {
      assertShareSetRecord(set);
      sets.set(set.setId, frozenCopy(set));
    },
    async getShareSet(setId: string): Promise<ShareSetRecord | undefined> {
      assertId(setId, 'setId');
      return sets.get(setId);
    },
    async listShareSets(filter?: ShareSetFilter): Promise<ShareSetRecord[]> {
      assertShareSetFilter(filter);
      return [...sets.values()]
        .filter((set) => matchesShareSetFilter(set, filter))
        .sort((a, b) => (a.setId < b.setId ? -1 : 1));
    },
    async deleteShareSet(setId: string): Promise<boolean> {
      assertId(setId, 'setId');
      return sets.delete(setId);
    },

    async getAccess(clientId: string): Promise<AccessRecord | undefined> {
      assertId(clientId, 'clientId');
      return access.get(clientId);
    },
    async putAccess(record: AccessRecord): Promise<void> {
      assertAccessRecord(record);
      access.set(record.clientId, frozenCopy(record));
    },
    async listAccess(): Promise<AccessRecord[]> {
      return [...access.values()].sort((a, b) => (a.clientId < b.clientId ? -1 : 1));
    },

    async markOnce(scope: string, id: string, ttlSeconds: number): Promise<boolean> {
      assertNonEmptyString(scope, 'scope');
      assertNonEmptyString(id, 'id');
      assertPositiveFinite(ttlSeconds, 'ttlSeconds');
      const nowMs = Date.now();
      if (replay.size >= sweepAtSize) sweepReplay(nowMs);
      // JSON keeps the pair unambiguous whatever characters scope and id hold.
      const key = JSON.stringify([scope, id]);
      const expiresAtMs = replay.get(key);
      if (expiresAtMs !== undefined && expiresAtMs > nowMs) return false;
      replay.set(key, nowMs + ttlSeconds * 1000);
      return true;
    },

    async acquireLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
      assertNonEmptyString(name, 'lock name');
      assertNonEmptyString(owner, 'owner');
      assertPositiveFinite(ttlMs, 'ttlMs');
      const nowMs = Date.now();
      const held = locks.get(name);
      if (held !== undefined && held.expiresAtMs > nowMs && held.owner !== owner) return false;
      locks.set(name, { owner, expiresAtMs: nowMs + ttlMs });
      return true;
    },
    async releaseLock(name: string, owner: string): Promise<boolean> {
      assertNonEmptyString(name, 'lock name');
      assertNonEmptyString(owner, 'owner');
      const held = locks.get(name);
      if (held === undefined || held.owner !== owner) return false;
      locks.delete(name);
      return held.expiresAtMs > Date.now();
    },
  };
}
