import { equalBytes, utf8Length } from '../bytes.js';
import { aeadOpen, aeadSeal } from '../crypto/aead.js';
import {
  AEAD_ALGORITHMS,
  type AeadAlgorithm,
  assertAllowedAlgorithm,
  DEFAULT_ALGORITHM,
} from '../crypto/algorithms.js';
import type { CryptoProvider } from '../crypto/provider.js';
import { KosError } from '../errors.js';
import { type Envelope, markChecked } from './codec.js';
import { keyCommitment } from './commitment.js';
import {
  ENVELOPE_VERSION,
  type EnvelopeHeader,
  encodeHeader,
  LONE_SURROGATE,
  MAX_DATA_ID_BYTES,
  validateHeader,
} from './header.js';

export interface SealWithKeyInput {
  readonly crypto: CryptoProvider;
  readonly key: Uint8Array;
  readonly kid: string;
  readonly version: number;
  /** The record this ciphertext belongs to; bound as associated data. */
  readonly dataId: string;
  readonly plaintext: Uint8Array;
  readonly alg?: AeadAlgorithm;
}

export interface OpenWithKeyInput {
  readonly crypto: CryptoProvider;
  readonly key: Uint8Array;
  readonly envelope: Envelope;
  /** When given, the envelope must belong to this record (else ERR_DATA_ID_MISMATCH). */
  readonly dataId?: string | undefined;
  /** Algorithms accepted on open (default: all KOS supports). */
  readonly allowedAlgorithms?: readonly AeadAlgorithm[];
}

/** Encrypts under a given DEK with a fresh random nonce. Most callers want `KeyManager.seal`. */
export async function sealWithKey(input: SealWithKeyInput): Promise<Envelope> {
  const alg = input.alg ?? DEFAULT_ALGORITHM;
  assertAllowedAlgorithm(alg);
  if (!(input.plaintext instanceof Uint8Array)) throw new KosError('ERR_INVALID_ARGUMENT', 'plaintext must be bytes');
  const dataIdBytes =
    typeof input.dataId === 'string' && !LONE_SURROGATE.test(input.dataId) ? utf8Length(input.dataId) : 0;
  if (dataIdBytes < 1 || dataIdBytes > MAX_DATA_ID_BYTES) {
    throw new KosError('ERR_INVALID_ARGUMENT', `dataId must be a string of 1 to ${MAX_DATA_ID_BYTES} UTF-8 bytes`);
  }
  if (!(input.key instanceof Uint8Array) || input.key.length !== AEAD_ALGORITHMS[alg].keyBytes) {
    throw new KosError('ERR_INVALID_KEY', `${alg} needs a 32-byte key`);
  }
  const nonce = input.crypto.randomBytes(AEAD_ALGORITHMS[alg].nonceBytes);
  const header: EnvelopeHeader = {
    v: ENVELOPE_VERSION,
    alg,
    kid: input.kid,
    ver: input.version,
    nonce,
    kc: await keyCommitment(input.crypto, input.key, nonce),
    did: input.dataId,
  };
  validateHeader(header);
  const ciphertext = await aeadSeal(input.crypto, alg, input.key, nonce, input.plaintext, encodeHeader(header));
  return markChecked({ header, ciphertext });
}

/**
 * Decrypts under a given DEK. The key commitment is checked in constant time before the
 * AEAD runs; every failure is ERR_DECRYPTION_FAILED with one fixed message.
 */
export async function openWithKey(input: OpenWithKeyInput): Promise<Uint8Array> {
  const { header, ciphertext } = input.envelope;
  if (input.allowedAlgorithms) assertAllowedAlgorithm(header.alg, input.allowedAlgorithms);
  if (input.dataId !== undefined && input.dataId !== header.did) {
    throw new KosError('ERR_DATA_ID_MISMATCH', 'envelope belongs to another record');
  }
  const commitment = await keyCommitment(input.crypto, input.key, header.nonce);
  if (!equalBytes(commitment, header.kc)) throw new KosError('ERR_DECRYPTION_FAILED', '');
  return aeadOpen(input.crypto, header.alg, input.key, header.nonce, ciphertext, encodeHeader(header));
}
