export { type WriteFileAtomicOptions, writeFileAtomic } from './atomic-file.js';
export { createFileMetadataStore, type FileMetadataStoreOptions } from './file-metadata-store.js';
export { createFileShareStore, type FileShareStoreOptions } from './file-share-store.js';
export {
  decodeWithIntegrity,
  encodeWithIntegrity,
  type ReadJsonWithIntegrityOptions,
  readJsonWithIntegrity,
} from './integrity-json.js';
export { createMemoryMetadataStore } from './memory-metadata-store.js';
export { createMemoryShareStore, type MemoryShareStoreOptions } from './memory-share-store.js';
