import type { AeadAlgorithm } from './algorithms.js';

type MaybePromise<T> = T | Promise<T>;

/**
 * The primitives KOS needs, so the same envelope code runs on node:crypto, WebCrypto or
 * @noble. Callers go through `aead.ts`, which enforces key and nonce sizes first.
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
  randomBytes(length: number): Uint8Array;
}
