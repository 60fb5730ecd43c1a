import { fromUtf8, utf8, utf8Length } from '../bytes.js';
import { AEAD_ALGORITHMS, type AeadAlgorithm, algorithmFromId } from '../crypto/algorithms.js';
import { KosError } from '../errors.js';
import { ID_PATTERN } from '../stores/ids.js';

/** Envelope format version written by this library. */
export const ENVELOPE_VERSION = 1;
/** "KOS" */
export const ENVELOPE_MAGIC = Uint8Array.of(0x4b, 0x4f, 0x53);
export const COMMITMENT_BYTES = 32;
export const MAX_DATA_ID_BYTES = 512;
export const MAX_KEY_VERSION = 0xffff_ffff;

/**
 * The envelope header. Its canonical binary encoding (see docs/wire-format.md §2) is the
 * AEAD associated data, so every field, the data id included, is authenticated.
 */
export interface EnvelopeHeader {
  readonly v: 1;
  readonly alg: AeadAlgorithm;
  readonly kid: string;
  readonly ver: number;
  readonly nonce: Uint8Array;
  /** Key commitment: HMAC-SHA256(DEK, "KOS/v1/commit" || 0x00 || nonce). */
  readonly kc: Uint8Array;
  /** The id of the record this ciphertext belongs to. */
  readonly did: string;
}

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
export const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function malformed(message: string): KosError {
  return new KosError('ERR_ENVELOPE_MALFORMED', `envelope ${message}`);
}

/** A header without its nonce and commitment bytes: what names the key and the record. */
export type EnvelopeHeaderFields = Omit<EnvelopeHeader, 'nonce' | 'kc'>;

/** Checks every header field; throws ERR_ENVELOPE_MALFORMED / ERR_ALG_NOT_ALLOWED. */
export function validateHeader(header: EnvelopeHeader): void {
  validateHeaderFields(
    header,
    header.nonce instanceof Uint8Array ? header.nonce.length : -1,
    header.kc instanceof Uint8Array ? header.kc.length : -1,
  );
}

/**
 * `validateHeader`'s checks, in its order, for a header whose nonce and commitment are known by
 * their byte lengths only (-1: not bytes at all).
 */
export function validateHeaderFields(header: EnvelopeHeaderFields, nonceBytes: number, kcBytes: number): void {
  if (header.v !== ENVELOPE_VERSION) {
    throw new KosError('ERR_ENVELOPE_UNSUPPORTED_VERSION', 'envelope format version is not supported');
  }
  const spec =
    typeof header.alg === 'string' && Object.hasOwn(AEAD_ALGORITHMS, header.alg)
      ? AEAD_ALGORITHMS[header.alg]
      : undefined;
  if (!spec) throw new KosError('ERR_ALG_NOT_ALLOWED', 'envelope algorithm is not allowed');
  if (typeof header.kid !== 'string' || !ID_PATTERN.test(header.kid)) throw malformed('key id is invalid');
  if (!Number.isInteger(header.ver) || header.ver < 1 || header.ver > MAX_KEY_VERSION) {
    throw malformed('key version is invalid');
  }
  if (nonceBytes !== spec.nonceBytes) throw malformed('nonce has the wrong length');
  if (kcBytes !== COMMITMENT_BYTES) throw malformed('key commitment has the wrong length');
  // A lone surrogate would be written as U+FFFD and bind another id than the one compared.
  if (typeof header.did !== 'string' || LONE_SURROGATE.test(header.did)) throw malformed('data id is invalid');
  const didLength = utf8Length(header.did);
  if (didLength < 1 || didLength > MAX_DATA_ID_BYTES) throw malformed('data id is invalid');
}

/** Writes `text` (whose UTF-8 length is `length`) as UTF-8 at `at`; returns the offset after it. */
function writeUtf8(text: string, length: number, out: Uint8Array, at: number): number {
  if (length === text.length) {
    // As many bytes as UTF-16 units: all ASCII.
    for (let i = 0; i < length; i++) out[at + i] = text.charCodeAt(i);
  } else {
    out.set(utf8(text), at);
  }
  return at + length;
}

/**
 * Header bytes are carved out of shared 8 KiB slabs: a typed array over 64 bytes is allocated
 * outside the V8 heap, which costs ten times more than the header itself. Headers are public
 * data (they travel with every envelope), so sharing a slab exposes nothing; each range is
 * handed out once.
 */
const SLAB_BYTES = 8192;
let slab = new Uint8Array(0);
let slabUsed = 0;

function headerBytes(length: number): Uint8Array {
  if (length > SLAB_BYTES / 8) return new Uint8Array(length);
  if (slabUsed + length > slab.length) {
    slab = new Uint8Array(SLAB_BYTES);
    slabUsed = 0;
  }
  const out = slab.subarray(slabUsed, slabUsed + length);
  slabUsed += length;
  return out;
}

/** The canonical header bytes: the AEAD associated data and the prefix of the binary form. */
export function encodeHeader(header: EnvelopeHeader): Uint8Array {
  // Byte by byte into one array (it runs twice per rewrap; a DataView and temporary arrays cost
  // more than the bytes). Integers are big-endian and wrap exactly as DataView's setters do.
  const { kid, did, nonce, kc, ver } = header;
  const kidLength = utf8Length(kid);
  const didLength = utf8Length(did);
  const out = headerBytes(3 + 1 + 1 + 1 + kidLength + 4 + 1 + nonce.length + 1 + kc.length + 2 + didLength);
  out[0] = 0x4b; // "KOS"
  out[1] = 0x4f;
  out[2] = 0x53;
  out[3] = header.v;
  out[4] = AEAD_ALGORITHMS[header.alg].id;
  out[5] = kidLength;
  let at = writeUtf8(kid, kidLength, out, 6);
  out[at++] = ver >>> 24;
  out[at++] = ver >>> 16;
  out[at++] = ver >>> 8;
  out[at++] = ver;
  out[at++] = nonce.length;
  for (let i = 0; i < nonce.length; i++) out[at++] = nonce[i] as number;
  out[at++] = kc.length;
  for (let i = 0; i < kc.length; i++) out[at++] = kc[i] as number;
  out[at++] = didLength >>> 8;
  out[at++] = didLength;
  writeUtf8(did, didLength, out, at);
  return out;
}

/** Splits a binary envelope into its header and the ciphertext (which includes the tag). */
export function decodeHeader(bytes: Uint8Array): { header: EnvelopeHeader; headerLength: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const need = (count: number) => {
    if (at + count > bytes.length) throw malformed('is truncated');
  };
  need(6);
  if (bytes[0] !== 0x4b || bytes[1] !== 0x4f || bytes[2] !== 0x53) throw malformed('has no KOS magic');
  at = 3;
  if (bytes[at++] !== ENVELOPE_VERSION) {
    throw new KosError('ERR_ENVELOPE_UNSUPPORTED_VERSION', 'envelope format version is not supported');
  }
  const alg = algorithmFromId(bytes[at++] as number);
  const kidLength = bytes[at++] as number;
  need(kidLength);
  let kid: string;
  let did: string;
  try {
    kid = fromUtf8(bytes.subarray(at, at + kidLength));
  } catch {
    throw malformed('key id is not UTF-8');
  }
  at += kidLength;
  need(4);
  const ver = view.getUint32(at, false);
  at += 4;
  need(1);
  const nonceLength = bytes[at++] as number;
  need(nonceLength);
  const nonce = bytes.slice(at, at + nonceLength);
  at += nonceLength;
  need(1);
  const kcLength = bytes[at++] as number;
  need(kcLength);
  const kc = bytes.slice(at, at + kcLength);
  at += kcLength;
  need(2);
  const didLength = view.getUint16(at, false);
  at += 2;
  need(didLength);
  try {
    did = fromUtf8(bytes.subarray(at, at + didLength));
  } catch {
    throw malformed('data id is not UTF-8');
  }
  at += didLength;
  const header: EnvelopeHeader = { v: ENVELOPE_VERSION, alg, kid, ver, nonce, kc, did };
  validateHeader(header);
  return { header, headerLength: at };
}
