import { gcm } from '@noble/ciphers/aes.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { KosError } from '../errors.js';
import { getRandomBytes, nobleXChaChaOpen, nobleXChaChaSeal } from './noble-provider.js';
import type { CryptoProvider } from './provider.js';

type BufferSourceBytes = Uint8Array<ArrayBuffer>;

/** A copy backed by a plain ArrayBuffer, which WebCrypto requires. */
function own(bytes: Uint8Array): BufferSourceBytes {
  return new Uint8Array(bytes) as BufferSourceBytes;
}

/**
 * Browser-safe provider: WebCrypto AES-GCM where `crypto.subtle` exists (secure contexts),
 * @noble/ciphers otherwise and for XChaCha20-Poly1305. Uses no Node API.
 */
export function createWebCryptoProvider(subtle: SubtleCrypto | undefined = globalThis.crypto?.subtle): CryptoProvider {
  async function gcmKey(key: Uint8Array, usage: KeyUsage): Promise<CryptoKey> {
    if (!subtle) throw new KosError('ERR_INTERNAL', 'WebCrypto is not available');
    return subtle.importKey('raw', own(key), { name: 'AES-GCM' }, false, [usage]);
  }
  return {
    name: subtle ? 'webcrypto' : 'noble',
    async aeadSeal(alg, key, nonce, plaintext, aad) {
      if (alg === 'XC20P') return nobleXChaChaSeal(key, nonce, plaintext, aad);
      if (!subtle) return gcm(key, nonce, aad).encrypt(plaintext);
      const params = { name: 'AES-GCM', iv: own(nonce), additionalData: own(aad), tagLength: 128 };
      return new Uint8Array(await subtle.encrypt(params, await gcmKey(key, 'encrypt'), own(plaintext)));
    },
    async aeadOpen(alg, key, nonce, sealed, aad) {
      if (alg === 'XC20P') return nobleXChaChaOpen(key, nonce, sealed, aad);
      try {
        if (!subtle) return gcm(key, nonce, aad).decrypt(sealed);
        const params = { name: 'AES-GCM', iv: own(nonce), additionalData: own(aad), tagLength: 128 };
        return new Uint8Array(await subtle.decrypt(params, await gcmKey(key, 'decrypt'), own(sealed)));
      } catch {
        throw new KosError('ERR_DECRYPTION_FAILED', '');
      }
    },
    hmacSha256: (key, data) => hmac(sha256, key, data),
    sha256: (data) => sha256(data),
    randomBytes: getRandomBytes,
  };
}
