import {
  type AccessRecord,
  assertId,
  isValidId,
  type KeyRecord,
  KosError,
  type MetadataStore,
  type Revisioned,
  type ShareSetFilter,
  type ShareSetRecord,
} from '@kos/core';
import type { Cluster, Redis } from 'ioredis';
import { assertInteger, assertNonEmptyString, assertPositiveFinite } from '../argument-checks.js';
import { corrupt, decodeWithIntegrity, encodeWithIntegrity } from '../integrity-json.js';
import {
  assertAccessRecord,
  assertExpectedRevision,
  assertKeyRecord,
  assertRevisionMatches,
  assertShareSetFilter,
  assertShareSetRecord,
  matchesShareSetFilter,
} from '../record-checks.js';
import { assertOptionsObject } from '../store-options.js';
import { checkRedisClientOption, runRedis } from './redis-client.js';
import { redisMetadataKeys } from './redis-metadata-keys.js';
import {
  ACQUIRE_LOCK_SCRIPT,
  DELETE_SHARE_SET_SCRIPT,
  PUT_INDEXED_SCRIPT,
  PUT_KEY_SCRIPT,
  PUT_SHARE_SET_SCRIPT,
  RELEASE_LOCK_SCRIPT,
  UNINDEX_SHARE_SET_SCRIPT,
} from './redis-metadata-scripts.js';
import { createPersistenceGuard, type RedisPersistenceStatus, type RequirePersistence } from './redis-persistence.js';
import { checkRedisStoreOptions } from './redis-store-options.js';

const STORE_NAME = 'redis metadata store';
/** Longest TTL sent to Redis (PX takes milliseconds up to about 2^63). */
const MAX_TTL_MS = Number.MAX_SAFE_INTEGER;
const COUNTER_PATTERN = /^\d+$/;

export interface RedisMetadataStoreOptions {
  /**
   * The ioredis client (`new Redis(…)`, Sentinel included) or `new Cluster(…)`. The store never
   * creates, quits or disconnects it: the caller owns it and closes it.
   */
  readonly redis: Redis | Cluster;
  /**
   * Prefix of every key; letters, digits, `.`, `_`, `:`, `-`, at most 64 characters. Default
   * `kos:`. KOS instances that share metadata must use the same prefix.
   */
  readonly keyPrefix?: string;
  /** What to do when the server has neither AOF nor save points. Default `warn`. */
  readonly requirePersistence?: RequirePersistence;
  /** Receives the one persistence warning. Default: `process.emitWarning` (code `KOS_REDIS_PERSISTENCE`). */
  readonly onWarning?: (message: string) => void;
}

/** A MetadataStore on Redis, with its persistence check. */
export interface RedisMetadataStore extends MetadataStore {
  /** The key prefix in use. */
  readonly keyPrefix: string;
  /**
   * Reads the server's persistence settings now and applies `requirePersistence` (calls do
   * this lazily before their first command; call it at startup to fail fast).
   *
   * @throws KosError ERR_STORE_IO when persistence is off and `requirePersistence` is
   *   `refuse`, or when Redis cannot be reached.
   */
  checkPersistence(): Promise<RedisPersistenceStatus>;
  /** Makes every later call reject with ERR_STORE_IO. Does not touch the Redis client, which the caller owns. */
  close(): Promise<void>;
}

/**
 * A metadata store on Redis that many KOS instances can share (Redis Cluster and Sentinel
 * through ioredis). Every mutation two instances may race on is atomic in Redis:
 *
 * - `putKey`: compare-and-set in a Lua script on `{ rev, doc }`;
 * - `addOps`: `INCRBY`;
 * - `markOnce`: `SET key 1 NX PX ttl` (the single-use grant check);
 * - `acquireLock` / `releaseLock`: a Lua set-if-free-or-mine with `PX`, and a Lua compare-and-delete
 *   of the owner token;
 * - share sets and access records: a Lua script writes the record together with its index
 *   sets (all sets, by kid, by owner), so listing never scans the keyspace.
 *
 * Records are stored in the integrity wrapper of the file stores and checked on every read
 * (ERR_STORE_CORRUPT when damaged). TTLs are kept by Redis, so every instance sees the same
 * expiry. Key layout: see {@link redisMetadataKeys}.
 *
 * @throws KosError ERR_INVALID_OPTIONS for a bad redis, keyPrefix, requirePersistence or onWarning.
 * @example
 * const meta = createRedisMetadataStore({ redis, requirePersistence: 'refuse' });
 * const revision = await meta.putKey(record, null);
 * const firstUse = await meta.markOnce('grants', jti, 120);
 */
export function createRedisMetadataStore(options: RedisMetadataStoreOptions): RedisMetadataStore {
  const what = 'createRedisMetadataStore';
  assertOptionsObject(options, what);
  const redis = checkRedisClientOption(options.redis, what);
  const { keyPrefix, requirePersistence, onWarning } = checkRedisStoreOptions(options, what);
  const guard = createPersistenceGuard({ redis, mode: requirePersistence, onWarning, storeName: STORE_NAME });
  const keys = redisMetadataKeys(keyPrefix);
  let closed = false;

  /** Runs one store operation's Redis work after the closed and persistence checks. */
  async function run<T>(operation: string, call: () => Promise<T>): Promise<T> {
    if (closed) throw new KosError('ERR_STORE_IO', `${STORE_NAME} is closed`);
    await guard.ensure();
    return runRedis(operation, call);
  }

  function decodeKey(kid: string, rev: string | null, doc: string | null): Revisioned<KeyRecord> | undefined {
    if (rev === null && doc === null) return undefined;
    const id = `key ${kid}`;
    if (doc === null) throw corrupt(id, 'record has no document');
    const body = decodeWithIntegrity(doc, id);
    return checkOnRead(id, () => {
      const record = body.record as KeyRecord;
      assertKeyRecord(record);
      assertInteger(body.revision, 'revision', 1);
      if (body.kid !== kid || record.kid !== kid) throw new Error('kid mismatch');
      if (String(body.revision) !== rev) throw new Error('revision mismatch');
      return { value: record, revision: body.revision };
    });
  }

  function decodeShareSet(setId: string, doc: string): ShareSetRecord {
    const id = `share set ${setId}`;
    const body = decodeWithIntegrity(doc, id);
    return checkOnRead(id, () => {
      const set = body as unknown as ShareSetRecord;
      assertShareSetRecord(set);
      if (set.setId !== setId) throw new Error('setId mismatch');
      return set;
    });
  }

  function decodeAccess(clientId: string, doc: string): AccessRecord {
    const id = `access ${clientId}`;
    const body = decodeWithIntegrity(doc, id);
    return checkOnRead(id, () => {
      const record = body as unknown as AccessRecord;
      assertAccessRecord(record);
      if (record.clientId !== clientId) throw new Error('clientId mismatch');
      return record;
    });
  }

  /** The kid and owner a share set is indexed under now (`''` each when it does not exist). */
  async function readShareSetIndexFields(setId: string): Promise<{ kid: string; owner: string }> {
    const [kid, owner] = await redis.hmget(keys.shareSet(setId), 'kid', 'owner');
    if (kid === null || kid === undefined) return { kid: '', owner: '' };
    if (!isValidId(kid) || !isValidId(owner)) throw corrupt(`share set ${setId}`, 'index fields are malformed');
    return { kid, owner };
  }

  /**
   * Takes `setId` out of the kid and owner indexes of the record a script replaced or deleted
   * (`found`) when they are not the ones the script already handled (`expected`): a
   * replacement under another kid or owner, or another writer in between. Conditional, so a
   * set put back under them meanwhile stays indexed.
   */
  async function unindexUnexpected(
    setId: string,
    found: { kid: string; owner: string },
    expected: { kid: string; owner: string },
  ): Promise<void> {
    if (isValidId(found.kid) && found.kid !== expected.kid) {
      await UNINDEX_SHARE_SET_SCRIPT.run(
        redis,
        [keys.shareSet(setId), keys.shareSetsByKid(found.kid)],
        ['kid', found.kid, setId],
      );
    }
    if (isValidId(found.owner) && found.owner !== expected.owner) {
      await UNINDEX_SHARE_SET_SCRIPT.run(
        redis,
        [keys.shareSet(setId), keys.shareSetsByOwner(found.owner)],
        ['owner', found.owner, setId],
      );
    }
  }

  /** Values of `field` (or of string keys when `field` is undefined) in one slot, in one round trip. */
  async function readMany(names: readonly string[], field?: string): Promise<(string | null)[]> {
    if (names.length === 0) return [];
    const pipeline = redis.pipeline();
    for (const name of names) {
      if (field === undefined) pipeline.get(name);
      else pipeline.hget(name, field);
    }
    const results = (await pipeline.exec()) ?? [];
    return results.map(([error, value]) => {
      if (error) throw error;
      return (value as string | null | undefined) ?? null;
    });
  }

  return {
    keyPrefix,

    async getKey(kid: string): Promise<Revisioned<KeyRecord> | undefined> {
      assertId(kid, 'kid');
      const [rev, doc] = await run(`read of key ${kid}`, () => redis.hmget(keys.key(kid), 'rev', 'doc'));
      return decodeKey(kid, rev ?? null, doc ?? null);
    },
    async listKeys(): Promise<string[]> {
      const kids = await run('list of keys', () => redis.smembers(keys.keyIndex));
      return kids.filter((kid) => isValidId(kid)).sort();
    },
    async putKey(record: KeyRecord, expectedRevision: number | null): Promise<number> {
      assertKeyRecord(record);
      assertExpectedRevision(expectedRevision);
      const kid = record.kid;
      const revision = (expectedRevision ?? 0) + 1;
      const doc = encodeWithIntegrity({ kid, revision, record });
      const reply = await run(`write of key ${kid}`, () =>
        PUT_KEY_SCRIPT.run(
          redis,
          [keys.key(kid), keys.keyIndex],
          [expectedRevision === null ? '' : String(expectedRevision), String(revision), doc, kid],
        ),
      );
      const [written, current] = reply as [number, string];
      if (written !== 1) {
        const found = current === '' ? undefined : Number(current);
        assertRevisionMatches(kid, found, expectedRevision);
        // The script saw the expected revision yet refused: the stored revision is malformed.
        throw corrupt(`key ${kid}`, 'revision is malformed');
      }
      return revision;
    },

    async addOps(kid: string, version: number, count: number): Promise<number> {
      assertId(kid, 'kid');
      assertInteger(version, 'version', 1);
      assertInteger(count, 'count', 0);
      return run(`counter of ${kid} v${version}`, () => redis.incrby(keys.ops(kid, version), count));
    },
    async getOps(kid: string, version: number): Promise<number> {
      assertId(kid, 'kid');
      assertInteger(version, 'version', 1);
      const text = await run(`counter of ${kid} v${version}`, () => redis.get(keys.ops(kid, version)));
      if (text === null) return 0;
      if (!COUNTER_PATTERN.test(text)) throw corrupt(`ops ${kid} v${version}`, 'counter is not an integer');
      return Number(text);
    },

    async putShareSet(set: ShareSetRecord): Promise<void> {
      assertShareSetRecord(set);
      const { setId, kid, owner } = set;
      const doc = encodeWithIntegrity(set as unknown as Record<string, unknown>);
      await run(`write of share set ${setId}`, async () => {
        const reply = await PUT_SHARE_SET_SCRIPT.run(
          redis,
          [keys.shareSet(setId), keys.shareSetIndex, keys.shareSetsByKid(kid), keys.shareSetsByOwner(owner)],
          [setId, doc, kid, owner],
        );
        const [oldKid, oldOwner] = reply as [string, string];
        await unindexUnexpected(setId, { kid: oldKid, owner: oldOwner }, { kid, owner });
      });
    },
    async getShareSet(setId: string): Promise<ShareSetRecord | undefined> {
      assertId(setId, 'setId');
      const doc = await run(`read of share set ${setId}`, () => redis.hget(keys.shareSet(setId), 'doc'));
      return doc === null ? undefined : decodeShareSet(setId, doc);
    },
    async listShareSets(filter?: ShareSetFilter): Promise<ShareSetRecord[]> {
      assertShareSetFilter(filter);
      const kid = filter?.kid;
      const owner = filter?.owner;
      const found = await run('list of share sets', async () => {
        const setIds =
          kid !== undefined && owner !== undefined
            ? await redis.sinter(keys.shareSetsByKid(kid), keys.shareSetsByOwner(owner))
            : kid !== undefined
              ? await redis.smembers(keys.shareSetsByKid(kid))
              : owner !== undefined
                ? await redis.smembers(keys.shareSetsByOwner(owner))
                : await redis.smembers(keys.shareSetIndex);
        const ids = setIds.filter((setId) => isValidId(setId)).sort();
        const docs = await readMany(
          ids.map((setId) => keys.shareSet(setId)),
          'doc',
        );
        return ids.map((setId, i) => ({ setId, doc: docs[i] ?? null }));
      });
      // A set deleted between reading the index and the records is simply not listed.
      return found
        .flatMap(({ setId, doc }) => (doc === null ? [] : [decodeShareSet(setId, doc)]))
        .filter((set) => matchesShareSetFilter(set, filter));
    },
    async deleteShareSet(setId: string): Promise<boolean> {
      assertId(setId, 'setId');
      return run(`delete of share set ${setId}`, async () => {
        const expected = await readShareSetIndexFields(setId);
        if (expected.kid === '') return false;
        const reply = await DELETE_SHARE_SET_SCRIPT.run(
          redis,
          [
            keys.shareSet(setId),
            keys.shareSetIndex,
            keys.shareSetsByKid(expected.kid),
            keys.shareSetsByOwner(expected.owner),
          ],
          [setId, expected.kid, expected.owner],
        );
        const [deleted, kid, owner] = reply as [number, string, string];
        await unindexUnexpected(setId, { kid, owner }, expected);
        return deleted === 1;
      });
    },

    async getAccess(clientId: string): Promise<AccessRecord | undefined> {
      assertId(clientId, 'clientId');
      const doc = await run(`read of access ${clientId}`, () => redis.get(keys.access(clientId)));
      return doc === null ? undefined : decodeAccess(clientId, doc);
    },
    async putAccess(record: AccessRecord): Promise<void> {
      assertAccessRecord(record);
      const doc = encodeWithIntegrity(record as unknown as Record<string, unknown>);
      await run(`write of access ${record.clientId}`, () =>
        PUT_INDEXED_SCRIPT.run(redis, [keys.access(record.clientId), keys.accessIndex], [doc, record.clientId]),
      );
    },
    async listAccess(): Promise<AccessRecord[]> {
      const found = await run('list of access records', async () => {
        const ids = (await redis.smembers(keys.accessIndex)).filter((clientId) => isValidId(clientId)).sort();
        const docs = await readMany(ids.map((clientId) => keys.access(clientId)));
        return ids.map((clientId, i) => ({ clientId, doc: docs[i] ?? null }));
      });
      return found.flatMap(({ clientId, doc }) => (doc === null ? [] : [decodeAccess(clientId, doc)]));
    },

    async markOnce(scope: string, id: string, ttlSeconds: number): Promise<boolean> {
      assertNonEmptyString(scope, 'scope');
      assertNonEmptyString(id, 'id');
      assertPositiveFinite(ttlSeconds, 'ttlSeconds');
      const reply = await run('replay check', () =>
        redis.set(keys.replay(scope, id), '1', 'PX', ttlToMs(ttlSeconds * 1000), 'NX'),
      );
      return reply === 'OK';
    },

    async acquireLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
      assertNonEmptyString(name, 'lock name');
      assertNonEmptyString(owner, 'owner');
      assertPositiveFinite(ttlMs, 'ttlMs');
      const reply = await run('lock acquisition', () =>
        ACQUIRE_LOCK_SCRIPT.run(redis, [keys.lock(name)], [owner, ttlToMs(ttlMs)]),
      );
      return reply === 1;
    },
    async releaseLock(name: string, owner: string): Promise<boolean> {
      assertNonEmptyString(name, 'lock name');
      assertNonEmptyString(owner, 'owner');
      const reply = await run('lock release', () => RELEASE_LOCK_SCRIPT.run(redis, [keys.lock(name)], [owner]));
      return reply === 1;
    },

    checkPersistence: () => guard.check(),

    async close(): Promise<void> {
      closed = true;
    },
  };
}

/** A TTL in whole milliseconds Redis accepts: at least 1, at most {@link MAX_TTL_MS}. */
function ttlToMs(ms: number): number {
  return Math.min(Math.max(1, Math.ceil(ms)), MAX_TTL_MS);
}

/** A record read back must pass the same checks as on write, else it is corrupt. */
function checkOnRead<T>(id: string, check: () => T): T {
  try {
    return check();
  } catch {
    throw corrupt(id, 'record is malformed');
  }
}
