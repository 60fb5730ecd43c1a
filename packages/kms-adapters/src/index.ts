export { type WriteFileAtomicOptions, writeFileAtomic } from './atomic-file.js';
export { type AuditConfig, loadOrCreateSalt, openAuditTrail } from './audit/audit-setup.js';
export {
  createHashChainedFileSink,
  type HashChainedFileSink,
  type HashChainedFileSinkOptions,
} from './audit/hash-chained-file-sink.js';
export { auditEventOfNode } from './audit/node-events.js';
export { type AuditVerification, verifyAuditLog } from './audit/verify-audit-log.js';
export { createFileMetadataStore, type FileMetadataStoreOptions } from './file-metadata-store.js';
export { createFileShareStore, type FileShareStoreOptions } from './file-share-store.js';
export { createHttpShareStore, type HttpShareStore, type HttpShareStoreOptions } from './http-share-store.js';
export {
  decodeWithIntegrity,
  encodeWithIntegrity,
  type ReadJsonWithIntegrityOptions,
  readJsonWithIntegrity,
} from './integrity-json.js';
export {
  createKmsHandler,
  type KmsHandlerOptions,
  type KmsNodeEvent,
  type KmsRequest,
  type KmsResponse,
} from './kms-node/kms-handler.js';
export {
  createKmsNodeServer,
  type KmsNodeServer,
  type KmsNodeServerOptions,
  type KmsTlsOptions,
} from './kms-node/kms-server.js';
export { createMemoryMetadataStore } from './memory-metadata-store.js';
export { createMemoryShareStore, type MemoryShareStoreOptions } from './memory-share-store.js';
export { type RewrapOptions, type RewrapProgress, rewrapRecord, rewrapRecords } from './operations/rewrap-records.js';
// The Redis stores (also their own entry point, @kos/kms-adapters/redis).
export * from './redis.js';
export {
  assertRuntimeOptions,
  mergeVary,
  type PlainRequest,
  plainHeaders,
  readNodeBody,
  requestFromNode,
  requestFromWeb,
  setNodeHeaders,
  startupFailure,
  toWireBody,
} from './runtime/adapter-support.js';
export { type AdapterAnswer, type Admitted, admitNow, admitRequest, type MountInput } from './runtime/admit-request.js';
export {
  createDevTokenMinter,
  createKosRuntime,
  DEFAULT_MOUNT_PREFIX,
  DEV_IDENTITY_AUDIENCE,
  DEV_IDENTITY_ISSUER,
  type DevTokenRequest,
  type KosRuntime,
  type KosRuntimeOptions,
  loadKosConfigFile,
  type RuntimeNode,
} from './runtime/kos-runtime.js';
export type {
  KosRuntimeConfig,
  MetadataConfig,
  MetricsConfig,
  NodeConfig,
  PrometheusRuntimeConfig,
} from './runtime/runtime-config.js';
export { type StartingRuntime, startRuntime } from './runtime/start-runtime.js';
