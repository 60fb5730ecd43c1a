// @kos/core/web — the browser-safe subset: Web APIs and @noble only, no Node built-ins.
export { equalBytes, fromBase64url, fromUtf8, toBase64url, utf8, wipe } from './bytes.js';
export { AEAD_ALGORITHMS, type AeadAlgorithm } from './crypto/algorithms.js';
export { createNobleCryptoProvider } from './crypto/noble-provider.js';
export type { CryptoProvider } from './crypto/provider.js';
export { createWebCryptoProvider } from './crypto/web-provider.js';
export {
  decodeEnvelope,
  type Envelope,
  type EnvelopeJson,
  encodeEnvelope,
  isCompactEnvelope,
  isEnvelopeJson,
} from './envelope/codec.js';
export { keyCheckValue } from './envelope/commitment.js';
export { openWithKey, sealWithKey } from './envelope/seal.js';
export { isKosError, KosError, type KosErrorCode } from './errors.js';
export { gatherFirst } from './shares/gather.js';
export { rebuildDek, type ShareCandidate, type ShareFailure, verifyShare } from './shares/rebuild.js';
export type { SharePlacement, ShareSetRecord } from './shares/share-set.js';
