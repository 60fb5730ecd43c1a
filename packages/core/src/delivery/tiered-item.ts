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

const NodeBuffer = (globalThis as { Buffer?: typeof Buffer }).Buffer;
const utf8Decoder = new TextDecoder();

/**
 * UTF-8 text as TextDecoder reads it (invalid sequences become U+FFFD, a leading BOM is
 * dropped), through Node's Buffer where there is one: faster for small texts.
 */
function decodeUtf8(bytes: Uint8Array): string {
  if (!NodeBuffer) return utf8Decoder.decode(bytes);
  const bom = bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  return NodeBuffer.from(bytes.buffer, bytes.byteOffset + bom, bytes.byteLength - bom).toString('utf8');
}

/** A delivered plaintext as the value the route sealed: parsed JSON, or the text when it is not JSON. */
export function plaintextValue(bytes: Uint8Array): unknown {
  const text = decodeUtf8(bytes);
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
