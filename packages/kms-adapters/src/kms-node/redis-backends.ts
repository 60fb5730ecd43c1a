import type { MetadataStore, ShareStore } from '@kos/core';
import { openRedisConnection, type RedisConnectionConfig } from '../redis/redis-connection.js';
import { createRedisMetadataStore } from '../redis/redis-metadata-store.js';
import { createRedisShareStore } from '../redis/redis-share-store.js';

/**
 * A node's share store and replay cache on one Redis connection (the `kos-kms --store redis`
 * setup): a single server, a Sentinel-managed master or a Redis Cluster. Persistence must be
 * on: a node that forgets its replay cache on restart would accept a used grant again.
 *
 * @param onStateChange told when the connection to Redis breaks and when it is back.
 * @throws KosError ERR_STORE_IO when Redis cannot be reached at start.
 */
export async function openRedisBackends(
  nodeId: string,
  connection: RedisConnectionConfig,
  onStateChange?: (event: { readonly up: boolean; readonly message: string }) => void,
): Promise<{ store: ShareStore; replay: MetadataStore; close(): Promise<void> }> {
  const redis = await openRedisConnection(connection, {
    what: `node ${nodeId}`,
    ...(onStateChange ? { onStateChange } : {}),
  });
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
