// @kos/core — public API (Node). Browser-safe parts are also available from `@kos/core/web`.
export {
  type AuditEvent,
  type AuditRecord,
  type AuditSink,
  type AuditTrail,
  type AuditTrailOptions,
  createAuditTrail,
  createCallbackSink,
  createLoggerSink,
} from './audit/audit-trail.js';
export { auditEventOf } from './audit/key-events.js';
export {
  concatBytes,
  equalBytes,
  fromBase64url,
  fromUtf8,
  fromUtf8Lossy,
  toBase64url,
  utf8,
  utf8Length,
  wipe,
} from './bytes.js';
export { aeadOpen, aeadSeal } from './crypto/aead.js';
export {
  AEAD_ALGORITHMS,
  type AeadAlgorithm,
  assertAllowedAlgorithm,
  DEFAULT_ALGORITHM,
  isAeadAlgorithm,
} from './crypto/algorithms.js';
export { createNobleCryptoProvider } from './crypto/noble-provider.js';
export { createNodeCryptoProvider } from './crypto/node-provider.js';
export type { CryptoProvider } from './crypto/provider.js';
export { createWebCryptoProvider } from './crypto/web-provider.js';
export {
  type BodySlot,
  type BodySnapshot,
  findEnvelopes,
  MAX_BODY_DEPTH,
  replaceEnvelopes,
  snapshotBody,
} from './delivery/body-walker.js';
export {
  createKos,
  type Kos,
  type KosAdmission,
  type KosDecision,
  type KosHttpResponse,
  type KosOptions,
  type KosRouteResponse,
} from './delivery/kos.js';
export {
  createMediumReference,
  type MediumKeyReference,
  type MediumReferenceInput,
  type NodeDirectory,
  type ShareReference,
} from './delivery/medium-reference.js';
export {
  BINARY_ENVELOPE_TYPE,
  type HighItem,
  isTieredItem,
  type MediumItem,
  TIER_HEADER,
  type TieredItem,
} from './delivery/tiered-item.js';
export {
  COMPACT_PREFIX,
  DEFAULT_MAX_CIPHERTEXT_BYTES,
  type DecodeOptions,
  decodeEnvelope,
  decodeEnvelopeHeader,
  type Envelope,
  type EnvelopeForm,
  type EnvelopeJson,
  encodeEnvelope,
  encodeEnvelopeJsonParts,
  encodeEnvelopeJsonText,
  isCompactEnvelope,
  isEnvelopeJson,
} from './envelope/codec.js';
export { keyCheckValue, keyCommitment } from './envelope/commitment.js';
export {
  COMMITMENT_BYTES,
  decodeHeader,
  ENVELOPE_VERSION,
  type EnvelopeHeader,
  type EnvelopeHeaderFields,
  encodeHeader,
  MAX_DATA_ID_BYTES,
} from './envelope/header.js';
export { type OpenWithKeyInput, openWithKey, type SealWithKeyInput, sealWithKey } from './envelope/seal.js';
export {
  DECRYPTION_FAILED_MESSAGE,
  ERROR_STATUS,
  httpStatusFor,
  isKosError,
  KosError,
  type KosErrorCode,
  type KosErrorDetails,
  toErrorBody,
} from './errors.js';
export {
  accessTokenHash,
  createDpopProof,
  DPOP_ALGORITHMS,
  DPOP_MAX_AGE_SECONDS,
  DPOP_TYP,
  type DpopCheck,
  type DpopProofInput,
  dpopTargetUri,
  jwkThumbprint,
  verifyDpopProof,
} from './grants/dpop.js';
export {
  createTokenIssuer,
  type GrantRequest,
  type IssuedToken,
  type TokenIssuer,
  type TokenIssuerOptions,
} from './grants/token-issuer.js';
export {
  DEFAULT_TOKEN_ALG,
  GRANT_TYP,
  type GrantClaims,
  MAX_GRANT_TTL_SECONDS,
  MAX_SERVICE_TOKEN_TTL_SECONDS,
  SERVICE_TOKEN_TYP,
  type ServiceTokenClaims,
  TOKEN_ALGORITHMS,
  type TokenAlgorithm,
} from './grants/token-types.js';
export { createTokenVerifier, type TokenVerifier, type TokenVerifierOptions } from './grants/token-verifier.js';
export { DekCache, type DekCacheOptions } from './keys/dek-cache.js';
export {
  KeyManager,
  type KeyManagerEvent,
  type KeyManagerOptions,
  type OpenOptions,
  type RotateOptions,
  type SealOptions,
} from './keys/key-manager.js';
export type { KeyRecord, KeyVersionRecord, KeyVersionState } from './keys/key-record.js';
export {
  type RotationScheduler,
  type RotationSchedulerOptions,
  startRotationScheduler,
} from './keys/rotation-scheduler.js';
export {
  decodeShareBody,
  encodeShareBody,
  HEALTH_PATH,
  KMS_API_PREFIX,
  MAX_SHARE_BODY_BYTES,
  SERVICE_AUTH_SCHEME,
  SHARES_PATH,
  type ShareBody,
  shareUrl,
} from './kms-api/share-body.js';
export {
  combineMetrics,
  errorCodeOf,
  type KeyRegistryReader,
  type KosLogger,
  type KosMetrics,
  noopMetrics,
  type ShareFetchOutcome,
  silentLogger,
} from './observability/metrics.js';
export {
  failSpan,
  type KosSpan,
  loadTracing,
  type SpanAttributes,
  type SpanAttributeValue,
  tracingAvailable,
  withSpan,
} from './observability/tracing.js';
export { type ShareBinding, shareDigest } from './shares/digest.js';
export { type GatherOptions, type GatherResult, GatherTimeoutError, gatherFirst } from './shares/gather.js';
export { assertPlaceable, choosePlacement, type PlacementNode, placementCapacity } from './shares/placement.js';
export {
  classifyShareError,
  type RebuildInput,
  type RebuildOutput,
  rebuildDek,
  SHARE_BYTES,
  type ShareCandidate,
  type ShareFailure,
  type ShareFailureReason,
  ShareRejected,
  verifyShare,
} from './shares/rebuild.js';
export { type SharePlacement, type ShareSetRecord, SYSTEM_OWNER } from './shares/share-set.js';
export { assertThreshold, randomId, type SplitInput, type SplitOutput, splitDek } from './shares/split.js';
export { assertId, ID_PATTERN, isValidId } from './stores/ids.js';
export type { AccessRecord, MetadataStore, Revisioned, ShareSetFilter } from './stores/metadata-store.js';
export type { ShareStore, StoreCallOptions, StoredShare } from './stores/share-store.js';
export { type AccessControl, type AccessControlOptions, ANY_KEY, createAccessControl } from './trust/access-control.js';
export {
  bearerToken,
  createCustomIdentity,
  createJwtIdentity,
  type Identity,
  type IdentitySource,
  type JwtIdentityOptions,
  type RequestLike,
} from './trust/identity.js';
export { assertScore } from './trust/score.js';
export {
  createTierPolicy,
  DEFAULT_SHARE_BANDS,
  type ShareBand,
  type Tier,
  type TierDecision,
  type TierPolicy,
  type TierPolicyOptions,
} from './trust/tier-policy.js';
