export { delay, expectKosError } from './expect-kos-error.js';
export { INVALID_IDS, makeAccess, makeKeyRecord, makeShare, makeShareSet } from './fixtures.js';
export {
  type MetadataStoreFactory,
  type MetadataStoreHarness,
  runMetadataStoreConformance,
} from './metadata-store-conformance.js';
export { runShareStoreConformance, type ShareStoreFactory, type ShareStoreHarness } from './share-store-conformance.js';
