export { type BrowserAssets, browserAssets } from './browser-assets.js';
export { printInstructions } from './instructions.js';
export {
  checkRedisRecordStoreConfig,
  createMemoryRecordStore,
  DEFAULT_RECORDS_KEY_PREFIX,
  openRedisRecordStore,
  RECORDS_REDIS_PREFIX_ENV,
  RECORDS_REDIS_URL_ENV,
  type RecordStore,
  type RedisRecordStoreConfig,
  type RedisRecordStoreOptions,
  recordStoreConfigFromEnv,
  recordStoreFailure,
  recordStoreFromEnv,
  type StoredRecord,
  startWithRecords,
} from './record-store.js';
export { stopOnSignals } from './shutdown.js';
