import { KosError } from '../errors.js';
import { AEAD_ALGORITHMS, type AeadAlgorithm, assertAllowedAlgorithm } from './algorithms.js';
import type { CryptoProvider } from './provider.js';

/**
 * Size checks in front of every provider: exactly 32-byte keys and the algorithm's exact
 * nonce length. @noble's GCM would accept other key and IV sizes; KOS never does.
 */
function assertSizes(alg: AeadAlgorithm, key: Uint8Array, nonce: Uint8Array): void {
  const spec = AEAD_ALGORITHMS[alg];
  if (!(key instanceof Uint8Array) || key.length !== spec.keyBytes) {
    throw new KosError('ERR_INVALID_KEY', `${alg} needs a ${spec.keyBytes}-byte key`);
  }
  if (!(nonce instanceof Uint8Array) || nonce.length !== spec.nonceBytes) {
    throw new KosError('ERR_INVALID_ARGUMENT', `${alg} needs a ${spec.nonceBytes}-byte nonce`);
  }
}

export async function aeadSeal(
  provider: CryptoProvider,
  alg: AeadAlgorithm,
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  assertAllowedAlgorithm(alg);
  assertSizes(alg, key, nonce);
  return provider.aeadSeal(alg, key, nonce, plaintext, aad);
}

export async function aeadOpen(
  provider: CryptoProvider,
  alg: AeadAlgorithm,
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  assertAllowedAlgorithm(alg);
  assertSizes(alg, key, nonce);
  if (sealed.length < AEAD_ALGORITHMS[alg].tagBytes) throw new KosError('ERR_DECRYPTION_FAILED', '');
  return provider.aeadOpen(alg, key, nonce, sealed, aad);
}
