import { KosError } from '../errors.js';

/**
 * The AEAD allow-list. AES-256-GCM (NIST SP 800-38D) with a random 96-bit nonce is the
 * default; XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) with a random 192-bit nonce is
 * offered. Nothing else is ever accepted, whatever an envelope says.
 */
export const AEAD_ALGORITHMS = {
  A256GCM: { id: 1, keyBytes: 32, nonceBytes: 12, tagBytes: 16 },
  XC20P: { id: 2, keyBytes: 32, nonceBytes: 24, tagBytes: 16 },
} as const;

export type AeadAlgorithm = keyof typeof AEAD_ALGORITHMS;

export const DEFAULT_ALGORITHM: AeadAlgorithm = 'A256GCM';

export function isAeadAlgorithm(value: unknown): value is AeadAlgorithm {
  return typeof value === 'string' && Object.hasOwn(AEAD_ALGORITHMS, value);
}

/** The algorithm whose one-byte wire id is `id`, or ERR_ALG_NOT_ALLOWED. */
export function algorithmFromId(id: number): AeadAlgorithm {
  for (const [name, spec] of Object.entries(AEAD_ALGORITHMS)) {
    if (spec.id === id) return name as AeadAlgorithm;
  }
  throw new KosError('ERR_ALG_NOT_ALLOWED', `algorithm id ${id} is not allowed`);
}

/** Throws ERR_ALG_NOT_ALLOWED unless `alg` is known and in `allowed`. */
export function assertAllowedAlgorithm(
  alg: unknown,
  allowed: readonly AeadAlgorithm[] = ['A256GCM', 'XC20P'],
): asserts alg is AeadAlgorithm {
  if (!isAeadAlgorithm(alg) || !allowed.includes(alg)) {
    throw new KosError('ERR_ALG_NOT_ALLOWED', `algorithm ${JSON.stringify(String(alg)).slice(0, 40)} is not allowed`);
  }
}
