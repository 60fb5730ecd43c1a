import type { ClientKeyPair } from './opener.js';

/**
 * A fresh P-256 key pair for a client, in the shape the opener takes: ES256 for DPoP proofs and
 * the same key imported for ECDH (`deriveBits`) to unwrap high-tier DEKs. Put `publicJwk` in the
 * client's identity token as `cnf.jwk`. WebCrypto only (browsers, Node, Deno, workers).
 */
export async function generateClientKeyPair(): Promise<ClientKeyPair> {
  const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const { kty, crv, x, y, d } = await crypto.subtle.exportKey('jwk', pair.privateKey);
  const decryptionKey = await crypto.subtle.importKey(
    'jwk',
    { kty, crv, x, y, d } as JsonWebKey,
    { name: 'ECDH', namedCurve: 'P-256' },
    false,
    ['deriveBits'],
  );
  return { privateKey: pair.privateKey, publicJwk: { kty, crv, x, y } as JsonWebKey, alg: 'ES256', decryptionKey };
}
