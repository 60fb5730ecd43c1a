import { fromUtf8Lossy } from '../bytes.js';
import type { MediumKeyReference } from './medium-reference.js';

/**
 * What replaces an envelope in a response body, by tier (docs/delivery.md). Low tier has no
 * item: the envelope is replaced by its plaintext value.
 */
export interface HighItem {
  readonly kosTier: 'high';
  readonly envelope: unknown;
  /** The DEK, base64url — only when the client's token names no public key. */
  readonly dek?: string;
  /** The DEK encrypted to the client's public key (compact JWE), when its token names one. */
  readonly dekJwe?: string;
}

export interface MediumItem {
  readonly kosTier: 'medium';
  readonly envelope: unknown;
  readonly key: MediumKeyReference;
}

export type TieredItem = HighItem | MediumItem;

/** Response header naming the tier the response was shaped for. */
export const TIER_HEADER = 'kos-tier';
/** Content type of a binary envelope body (a low-tier binary plaintext goes out as application/octet-stream). */
export const BINARY_ENVELOPE_TYPE = 'application/vnd.kos.envelope';

export function isTieredItem(value: unknown): value is TieredItem {
  if (typeof value !== 'object' || value === null) return false;
  const tier = (value as { kosTier?: unknown }).kosTier;
  return (tier === 'high' || tier === 'medium') && 'envelope' in value;
}

/** A delivered plaintext as the value the route sealed: parsed JSON, or the text when it is not JSON. */
export function plaintextValue(bytes: Uint8Array): unknown {
  const text = fromUtf8Lossy(bytes);
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
