const BASE64URL = /^[A-Za-z0-9_-]*$/;

export function encodeBase64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

/**
 * Strict base64url (RFC 4648 §5, no padding): undefined unless `text` is the one canonical
 * encoding of some bytes. Buffer alone would silently skip bad characters.
 */
export function decodeBase64urlStrict(text: unknown): Uint8Array | undefined {
  if (typeof text !== 'string' || !BASE64URL.test(text)) return undefined;
  const decoded = Buffer.from(text, 'base64url');
  if (decoded.toString('base64url') !== text) return undefined;
  return new Uint8Array(decoded);
}
