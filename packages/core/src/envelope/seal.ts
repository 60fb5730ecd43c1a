import { equalBytes, utf8Length } from '../bytes.js';
import {
  AEAD_ALGORITHMS,
  type AeadAlgorithm,
  assertAllowedAlgorithm,
  DEFAULT_ALGORITHM,
} from '../crypto/algorithms.js';
import type { CryptoProvider, KeyedHmacSha256 } from '../crypto/provider.js';
import { KosError } from '../errors.js';
import { checkedEnvelope, type Envelope } from './codec.js';
import { commitmentMessage } from './commitment.js';
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

/**
 * A provider answer, awaited only if it is a promise: node:crypto answers at once, and an
 * await per step (commitment, AEAD) costs more than the step on small records.
 */
function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown }).then === 'function';
}

/** The checks `aead.ts` makes in front of every provider: allowed algorithm, exact key and nonce sizes. */
function assertAeadInput(alg: AeadAlgorithm, key: Uint8Array, nonce: Uint8Array): void {
  assertAllowedAlgorithm(alg);
  const spec = AEAD_ALGORITHMS[alg];
  if (!(key instanceof Uint8Array) || key.length !== spec.keyBytes) {
    throw new KosError('ERR_INVALID_KEY', `${alg} needs a ${spec.keyBytes}-byte key`);
  }
  if (!(nonce instanceof Uint8Array) || nonce.length !== spec.nonceBytes) {
    throw new KosError('ERR_INVALID_ARGUMENT', `${alg} needs a ${spec.nonceBytes}-byte nonce`);
  }
}

/** The key commitment of `nonce` under `key`, through `mac` when the caller holds one keyed with `key`. */
function commit(
  crypto: CryptoProvider,
  key: Uint8Array,
  mac: KeyedHmacSha256 | undefined,
  nonce: Uint8Array,
): Uint8Array | Promise<Uint8Array> {
  return mac ? mac.mac(commitmentMessage(nonce)) : crypto.hmacSha256(key, commitmentMessage(nonce));
}

/** Encrypts under a given DEK with a fresh random nonce. Most callers want `KeyManager.seal`. */
export async function sealWithKey(input: SealWithKeyInput): Promise<Envelope> {
  return sealWithKeyUsing(input, undefined);
}

/**
 * `sealWithKey` for callers that seal many times under one DEK (KeyManager): `mac` must be
 * `input.crypto.hmacSha256Keyed(input.key)`. With a synchronous provider (node:crypto) it
 * returns the envelope itself, and throws instead of rejecting: a batch then runs without a
 * promise per step.
 */
export function sealWithKeyUsing(
  input: SealWithKeyInput,
  mac: KeyedHmacSha256 | undefined,
): Envelope | Promise<Envelope> {
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
  assertAeadInput(alg, input.key, nonce);
  const commitment = commit(input.crypto, input.key, mac, nonce);
  return isPromise(commitment)
    ? commitment.then((kc) => sealCommitted(input, alg, nonce, kc))
    : sealCommitted(input, alg, nonce, commitment);
}

function sealCommitted(
  input: SealWithKeyInput,
  alg: AeadAlgorithm,
  nonce: Uint8Array,
  kc: Uint8Array,
): Envelope | Promise<Envelope> {
  const header: EnvelopeHeader = {
    v: ENVELOPE_VERSION,
    alg,
    kid: input.kid,
    ver: input.version,
    nonce,
    kc,
    did: input.dataId,
  };
  validateHeader(header);
  const sealed = input.crypto.aeadSeal(alg, input.key, nonce, input.plaintext, encodeHeader(header));
  return isPromise(sealed)
    ? sealed.then((ciphertext) => checkedEnvelope(header, ciphertext))
    : checkedEnvelope(header, sealed);
}

/**
 * Decrypts under a given DEK. The key commitment is checked in constant time before the
 * AEAD runs; every failure is ERR_DECRYPTION_FAILED with one fixed message.
 */
export async function openWithKey(input: OpenWithKeyInput): Promise<Uint8Array> {
  return openWithKeyUsing(input, undefined);
}

/**
 * `openWithKey` for callers that open many envelopes under one DEK (KeyManager): `mac` must
 * be `input.crypto.hmacSha256Keyed(input.key)`. With a synchronous provider it returns the
 * plaintext itself, and throws instead of rejecting.
 */
export function openWithKeyUsing(
  input: OpenWithKeyInput,
  mac: KeyedHmacSha256 | undefined,
  commitmentVerified = false,
): Uint8Array | Promise<Uint8Array> {
  const { header } = input.envelope;
  if (input.allowedAlgorithms) assertAllowedAlgorithm(header.alg, input.allowedAlgorithms);
  if (input.dataId !== undefined && input.dataId !== header.did) {
    throw new KosError('ERR_DATA_ID_MISMATCH', 'envelope belongs to another record');
  }
  // `commitmentVerified`: the caller (KeyManager) checked this nonce and commitment under this
  // very key before and remembers it; the fact cannot change, as a version's DEK never does.
  if (commitmentVerified) return openCommitted(input);
  const computed = commit(input.crypto, input.key, mac, header.nonce);
  if (isPromise(computed)) return computed.then((commitment) => openChecked(input, commitment));
  return openChecked(input, computed);
}

function openChecked(input: OpenWithKeyInput, commitment: Uint8Array): Uint8Array | Promise<Uint8Array> {
  if (!equalBytes(commitment, input.envelope.header.kc)) throw new KosError('ERR_DECRYPTION_FAILED', '');
  return openCommitted(input);
}

/** The AEAD, once the key commitment is known to match. */
function openCommitted(input: OpenWithKeyInput): Uint8Array | Promise<Uint8Array> {
  const { header, ciphertext } = input.envelope;
  assertAeadInput(header.alg, input.key, header.nonce);
  if (ciphertext.length < AEAD_ALGORITHMS[header.alg].tagBytes) throw new KosError('ERR_DECRYPTION_FAILED', '');
  return input.crypto.aeadOpen(header.alg, input.key, header.nonce, ciphertext, encodeHeader(header));
}
