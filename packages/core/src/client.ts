// @kos/core/client — the browser-safe client opener (Web APIs and @noble only).
export { generateClientKeyPair } from './client/client-key.js';
export {
  type ClientKeyPair,
  createOpener,
  type HighTierItem,
  type MediumTierItem,
  type Opener,
  type OpenerOptions,
} from './client/opener.js';
export type { MediumKeyReference, ShareReference } from './delivery/medium-reference.js';
export { type HighItem, isTieredItem, type MediumItem, TIER_HEADER, type TieredItem } from './delivery/tiered-item.js';
export { isKosError, KosError, type KosErrorCode } from './errors.js';
export { createDpopProof, jwkThumbprint } from './grants/dpop.js';
export type { ShareFailure } from './shares/rebuild.js';
