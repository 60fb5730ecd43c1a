import {
  assertId,
  encodeShareBody,
  KosError,
  type ShareStore,
  type StoreCallOptions,
  type StoredShare,
} from '@kos/core';
import type { Cluster, Redis } from 'ioredis';
import { throwIfAborted } from '../abort.js';
import { corrupt, decodeWithIntegrity, encodeWithIntegrity } from '../integrity-json.js';
import { assertStorableShare, storedShareFromRecord } from '../share-validation.js';
import { assertOptionsObject, checkNodeOptions } from '../store-options.js';
import { checkRedisClientOption, runRedis } from './redis-client.js';
import { createPersistenceGuard, type RedisPersistenceStatus, type RequirePersistence } from './redis-persistence.js';
import { checkRedisStoreOptions } from './redis-store-options.js';

const STORE_NAME = 'redis share store';

export interface RedisShareStoreOptions {
  /** This node's id (a valid KOS id, unique among configured nodes). */
  readonly nodeId: string;
  /** Optional failure zone (a valid KOS id). */
  readonly zone?: string;
  /**
   * The ioredis client (`new Redis(…)`, Sentinel included) or `new Cluster(…)` to use. The
   * store never creates, quits or disconnects it: the caller owns it and closes it.
   */
  readonly redis: Redis | Cluster;
  /** Prefix of every key; letters, digits, `.`, `_`, `:`, `-`, at most 64 characters. Default `kos:`. */
  readonly keyPrefix?: string;
  /** What to do when the server has neither AOF nor save points. Default `warn`. */
  readonly requirePersistence?: RequirePersistence;
  /** Receives the one persistence warning. Default: `process.emitWarning` (code `KOS_REDIS_PERSISTENCE`). */
  readonly onWarning?: (message: string) => void;
}

/** A ShareStore on Redis, with its persistence check. */
export interface RedisShareStore extends ShareStore {
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
 * A share store on Redis: one string key per share, `<keyPrefix>{node:<nodeId>}:share:<shareId>`,
 * holding the share's metadata and bytes (base64url) in the same integrity wrapper as the
 * file store (`{ "v": 1, "body": …, "sha256": … }`). A put is a single `SET`, so a share is
 * stored whole or not at all; it is as durable as the server's persistence (see
 * `requirePersistence`). Every read is checked: a damaged value, or a valid one copied under
 * another share id or node, is ERR_STORE_CORRUPT, never returned.
 *
 * The `{node:<nodeId>}` hash tag keeps one node's shares in one Cluster slot. Every call
 * honours its AbortSignal: it rejects with ERR_STORE_IO at once, though a command already
 * sent may still be applied.
 *
 * @throws KosError ERR_INVALID_OPTIONS for a bad nodeId, zone, redis, keyPrefix,
 *   requirePersistence or onWarning.
 * @example
 * const redis = new Redis(process.env.REDIS_URL, { maxRetriesPerRequest: 1 });
 * const store = createRedisShareStore({ nodeId: 'node-1', redis, requirePersistence: 'refuse' });
 * await store.checkPersistence();
 * await store.put(share);
 */
export function createRedisShareStore(options: RedisShareStoreOptions): RedisShareStore {
  const what = 'createRedisShareStore';
  assertOptionsObject(options, what);
  const { nodeId, zone } = checkNodeOptions(options, what);
  const redis = checkRedisClientOption(options.redis, what);
  const { keyPrefix, requirePersistence, onWarning } = checkRedisStoreOptions(options, what);
  const guard = createPersistenceGuard({ redis, mode: requirePersistence, onWarning, storeName: STORE_NAME });
  let closed = false;

  function keyOf(shareId: string): string {
    return `${keyPrefix}{node:${nodeId}}:share:${shareId}`;
  }

  /** Everything a call checks before its command: signal, closed store, persistence policy. */
  async function ready(operation: string, signal: AbortSignal | undefined): Promise<void> {
    if (closed) throw new KosError('ERR_STORE_IO', `${STORE_NAME} ${nodeId} is closed`);
    await guard.ensure();
    throwIfAborted(signal, operation);
  }

  return {
    nodeId,
    zone,
    keyPrefix,

    async put(share: StoredShare, callOptions?: StoreCallOptions): Promise<void> {
      const signal = callOptions?.signal;
      throwIfAborted(signal, 'put');
      assertStorableShare(share);
      const text = encodeWithIntegrity({ nodeId, ...encodeShareBody(share) });
      await ready('put', signal);
      await runRedis(`put of share ${share.shareId}`, () => redis.set(keyOf(share.shareId), text), signal);
    },

    async get(shareId: string, callOptions?: StoreCallOptions): Promise<StoredShare | undefined> {
      const signal = callOptions?.signal;
      throwIfAborted(signal, 'get');
      assertId(shareId, 'shareId');
      await ready('get', signal);
      const text = await runRedis(`get of share ${shareId}`, () => redis.get(keyOf(shareId)), signal);
      if (text === null) return undefined;
      const body = decodeWithIntegrity(text, shareId);
      // A valid record copied under another key is not the share that was asked for.
      if (body.shareId !== shareId || body.nodeId !== nodeId) {
        throw corrupt(shareId, 'record holds another share id or node');
      }
      return storedShareFromRecord(body, shareId);
    },

    async delete(shareId: string, callOptions?: StoreCallOptions): Promise<boolean> {
      const signal = callOptions?.signal;
      throwIfAborted(signal, 'delete');
      assertId(shareId, 'shareId');
      await ready('delete', signal);
      const removed = await runRedis(`delete of share ${shareId}`, () => redis.del(keyOf(shareId)), signal);
      return removed > 0;
    },

    checkPersistence: () => guard.check(),

    async close(): Promise<void> {
      closed = true;
    },
  };
}
