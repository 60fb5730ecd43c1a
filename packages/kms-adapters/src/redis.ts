export type { RedisClient } from './redis/redis-client.js';
export {
  createRedisMetadataStore,
  type RedisMetadataStore,
  type RedisMetadataStoreOptions,
} from './redis/redis-metadata-store.js';
export {
  PERSISTENCE_OFF_MESSAGE,
  type RedisPersistenceState,
  type RedisPersistenceStatus,
  type RedisServerPersistence,
  type RequirePersistence,
  readRedisPersistence,
} from './redis/redis-persistence.js';
export { createRedisShareStore, type RedisShareStore, type RedisShareStoreOptions } from './redis/redis-share-store.js';
