import { gcm } from '@noble/ciphers/aes.js';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { KosError } from '../errors.js';
import type { AeadAlgorithm } from './algorithms.js';
import type { CryptoProvider } from './provider.js';

function cipher(alg: AeadAlgorithm, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array) {
  return alg === 'A256GCM' ? gcm(key, nonce, aad) : xchacha20poly1305(key, nonce, aad);
}

/** XChaCha20-Poly1305 through @noble/ciphers (no native implementation exists on Node or the Web). */
export function nobleXChaChaSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array) {
  return xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

export function nobleXChaChaOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array) {
  try {
    return xchacha20poly1305(key, nonce, aad).decrypt(sealed);
  } catch {
    throw new KosError('ERR_DECRYPTION_FAILED', '');
  }
}

export function getRandomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  // getRandomValues fills at most 65536 bytes per call.
  for (let offset = 0; offset < length; offset += 65536) {
    globalThis.crypto.getRandomValues(out.subarray(offset, Math.min(length, offset + 65536)));
  }
  return out;
}

/**
 * Pure-JavaScript provider (@noble): for runtimes without a native AEAD, and as an
 * independent implementation to cross-check the native ones in tests. About 50x slower
 * than node:crypto for AES-GCM on large inputs (see docs/benchmarks.md).
 */
export function createNobleCryptoProvider(): CryptoProvider {
  return {
    name: 'noble',
    aeadSeal: (alg, key, nonce, plaintext, aad) => cipher(alg, key, nonce, aad).encrypt(plaintext),
    aeadOpen(alg, key, nonce, sealed, aad) {
      try {
        return cipher(alg, key, nonce, aad).decrypt(sealed);
      } catch {
        throw new KosError('ERR_DECRYPTION_FAILED', '');
      }
    },
    hmacSha256: (key, data) => hmac(sha256, key, data),
    sha256: (data) => sha256(data),
    randomBytes: getRandomBytes,
  };
}
