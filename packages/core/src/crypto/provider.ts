import type { AeadAlgorithm } from './algorithms.js';

type MaybePromise<T> = T | Promise<T>;

/** HMAC-SHA256 under one key, for many messages. `destroy` wipes the keyed state. */
export interface KeyedHmacSha256 {
  mac(data: Uint8Array): Uint8Array;
  destroy(): void;
}

/**
 * The primitives KOS needs, so the same envelope code runs on node:crypto, WebCrypto or
 * @noble. Callers check key and nonce sizes first (`aead.ts`, and `seal.ts` on its own path).
 */
export interface CryptoProvider {
  readonly name: string;
  /** Returns ciphertext followed by the 16-byte tag. */
  aeadSeal(
    alg: AeadAlgorithm,
    key: Uint8Array,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array,
  ): MaybePromise<Uint8Array>;
  /** Verifies the tag and returns the plaintext; throws ERR_DECRYPTION_FAILED otherwise. */
  aeadOpen(
    alg: AeadAlgorithm,
    key: Uint8Array,
    nonce: Uint8Array,
    sealed: Uint8Array,
    aad: Uint8Array,
  ): MaybePromise<Uint8Array>;
  hmacSha256(key: Uint8Array, data: Uint8Array): MaybePromise<Uint8Array>;
  sha256(data: Uint8Array): MaybePromise<Uint8Array>;
  /**
   * Optional: HMAC-SHA256 keyed once for many messages (the key commitments of a batch under
   * one DEK), same output as `hmacSha256`. The caller destroys it when done.
   */
  hmacSha256Keyed?(key: Uint8Array): KeyedHmacSha256;
  randomBytes(length: number): Uint8Array;
}
