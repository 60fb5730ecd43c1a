import type { KeyRecord } from '../keys/key-record.js';
import type { ShareSetRecord } from '../shares/share-set.js';

/** A record together with the revision a compare-and-set must name. */
export interface Revisioned<T> {
  readonly value: T;
  readonly revision: number;
}

export interface ShareSetFilter {
  readonly kid?: string;
  readonly version?: number;
  readonly owner?: string;
}

/** Which keys a client may read. `allow` may hold `*`. */
export interface AccessRecord {
  readonly clientId: string;
  readonly allow: readonly string[];
  readonly deny: readonly string[];
}

/**
 * Everything KOS remembers besides shares: the key registry, share set records (placements
 * and digests), client access rights, a replay cache and locks. Every mutation that two KOS
 * instances may race on is atomic in the store (compare-and-set, set-if-absent).
 */
export interface MetadataStore {
  getKey(kid: string): Promise<Revisioned<KeyRecord> | undefined>;
  listKeys(): Promise<string[]>;
  /**
   * Writes a key record if its current revision is `expectedRevision` (`null`: must not
   * exist). Resolves the new revision; rejects with ERR_STORE_CONFLICT otherwise.
   */
  putKey(record: KeyRecord, expectedRevision: number | null): Promise<number>;

  /** Atomically adds `count` to the operation counter of a key version; resolves the new total. */
  addOps(kid: string, version: number, count: number): Promise<number>;
  getOps(kid: string, version: number): Promise<number>;

  putShareSet(set: ShareSetRecord): Promise<void>;
  getShareSet(setId: string): Promise<ShareSetRecord | undefined>;
  listShareSets(filter?: ShareSetFilter): Promise<ShareSetRecord[]>;
  deleteShareSet(setId: string): Promise<boolean>;

  getAccess(clientId: string): Promise<AccessRecord | undefined>;
  putAccess(record: AccessRecord): Promise<void>;
  listAccess(): Promise<AccessRecord[]>;

  /** Records `id` in `scope` for `ttlSeconds`; resolves `true` only the first time (replay cache). */
  markOnce(scope: string, id: string, ttlSeconds: number): Promise<boolean>;

  /** Takes the named lock for `ttlMs` if free or expired; resolves whether `owner` now holds it. */
  acquireLock(name: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Releases the lock if `owner` holds it. */
  releaseLock(name: string, owner: string): Promise<boolean>;

  close?(): Promise<void>;
}
