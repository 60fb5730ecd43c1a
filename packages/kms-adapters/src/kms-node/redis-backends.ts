import type { MetadataStore, ShareStore } from '@kos/core';
import { Redis } from 'ioredis';
import { createRedisMetadataStore } from '../redis/redis-metadata-store.js';
import { createRedisShareStore } from '../redis/redis-share-store.js';

/**
 * A node's share store and replay cache on one Redis connection (the `kos-kms --store redis`
 * setup). Persistence must be on: a node that forgets its replay cache on restart would
 * accept a used grant again.
 */
export async function openRedisBackends(
  nodeId: string,
  url: string,
): Promise<{ store: ShareStore; replay: MetadataStore; close(): Promise<void> }> {
  const redis = new Redis(url, { maxRetriesPerRequest: 2, enableOfflineQueue: false, lazyConnect: true });
  await redis.connect();
  const keyPrefix = `kos:kms:${nodeId}:`;
  const store = createRedisShareStore({ nodeId, redis, keyPrefix, requirePersistence: 'refuse' });
  const replay = createRedisMetadataStore({ redis, keyPrefix: `${keyPrefix}replay:`, requirePersistence: 'refuse' });
  return {
    store,
    replay,
    close: async () => {
      await redis.quit().catch(() => undefined);
    },
  };
}
