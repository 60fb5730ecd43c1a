import { base64urlByteLength, concatBytes, fromBase64url, toBase64url } from '../bytes.js';
import { AEAD_ALGORITHMS, isAeadAlgorithm } from '../crypto/algorithms.js';
import { KosError } from '../errors.js';
import {
  decodeHeader,
  ENVELOPE_VERSION,
  type EnvelopeHeader,
  type EnvelopeHeaderFields,
  encodeHeader,
  validateHeader,
  validateHeaderFields,
} from './header.js';

/** A parsed envelope: header plus ciphertext (the AEAD tag is its last 16 bytes). */
export interface Envelope {
  readonly header: EnvelopeHeader;
  readonly ciphertext: Uint8Array;
}

/** The JSON form (docs/wire-format.md §3): what a route stores and returns. */
export interface EnvelopeJson {
  readonly kos: 1;
  readonly alg: string;
  readonly kid: string;
  readonly ver: number;
  readonly nonce: string;
  readonly kc: string;
  readonly did: string;
  readonly ct: string;
}

export type EnvelopeForm = 'json' | 'compact' | 'binary';

/** Prefix of the compact string form: `kos1.` + base64url(binary form). */
export const COMPACT_PREFIX = 'kos1.';

/** Default upper bound on ciphertext size (64 MiB plus tag). */
export const DEFAULT_MAX_CIPHERTEXT_BYTES = 64 * 1024 * 1024 + 16;

export interface DecodeOptions {
  /** Refuse larger ciphertexts with ERR_ENVELOPE_TOO_LARGE. */
  readonly maxCiphertextBytes?: number;
}

const JSON_KEYS = ['alg', 'ct', 'did', 'kc', 'kid', 'kos', 'nonce', 'ver'];
const JSON_KEY_SET: ReadonlySet<string> = new Set(JSON_KEYS);

function malformed(message: string): KosError {
  return new KosError('ERR_ENVELOPE_MALFORMED', `envelope ${message}`);
}

function checkCiphertext(ciphertext: Uint8Array, header: EnvelopeHeader, maxBytes: number): void {
  checkCiphertextLength(ciphertext.length, header, maxBytes);
}

function checkCiphertextLength(length: number, header: EnvelopeHeaderFields, maxBytes: number): void {
  if (length > maxBytes) throw new KosError('ERR_ENVELOPE_TOO_LARGE', 'envelope is too large');
  if (length < AEAD_ALGORITHMS[header.alg].tagBytes) throw malformed('ciphertext is shorter than its tag');
}

/**
 * Whether `value` has the shape of a JSON-form envelope (used to find envelopes inside
 * bodies): exactly the eight fields, `kos` a number, `ct` a string. Other objects — even ones
 * with a `kos` field — are left alone.
 */
export function isEnvelopeJson(value: unknown): value is EnvelopeJson {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const record = value as Record<string, unknown>;
  if (typeof record.kos !== 'number' || typeof record.ct !== 'string') return false;
  const keys = Object.keys(record);
  return keys.length === JSON_KEYS.length && JSON_KEYS.every((key) => key in record);
}

/** Shortest compact envelope: prefix + base64url of the smallest header and a tag. */
const MIN_COMPACT_LENGTH = COMPACT_PREFIX.length + 100;
const COMPACT_PATTERN = /^kos1\.[A-Za-z0-9_-]+$/;

/** Whether `value` has the shape of a compact envelope (`kos1.` + base64url of a plausible length). */
export function isCompactEnvelope(value: unknown): value is string {
  return (
    typeof value === 'string' &&
    value.length >= MIN_COMPACT_LENGTH &&
    value.startsWith(COMPACT_PREFIX) &&
    COMPACT_PATTERN.test(value)
  );
}

export function encodeEnvelope(envelope: Envelope, form: 'json'): EnvelopeJson;
export function encodeEnvelope(envelope: Envelope, form: 'compact'): string;
export function encodeEnvelope(envelope: Envelope, form: 'binary'): Uint8Array;
export function encodeEnvelope(envelope: Envelope, form: EnvelopeForm): EnvelopeJson | string | Uint8Array;
export function encodeEnvelope(envelope: Envelope, form: EnvelopeForm): EnvelopeJson | string | Uint8Array {
  const { header, ciphertext } = envelope;
  switch (form) {
    case 'json':
      return {
        kos: ENVELOPE_VERSION,
        alg: header.alg,
        kid: header.kid,
        ver: header.ver,
        nonce: toBase64url(header.nonce),
        kc: toBase64url(header.kc),
        did: header.did,
        ct: toBase64url(ciphertext),
      };
    case 'binary':
      return concatBytes(encodeHeader(header), ciphertext);
    case 'compact':
      return COMPACT_PREFIX + toBase64url(concatBytes(encodeHeader(header), ciphertext));
    default:
      throw new KosError('ERR_INVALID_ARGUMENT', 'envelope form must be json, compact or binary');
  }
}

/**
 * `JSON.stringify(encodeEnvelope(envelope, 'json'))`, but the base64url fields (nothing to
 * escape) are not passed through JSON.stringify, which checks every character of a 1.4 KB
 * ciphertext (several µs on Node 20). For a checked envelope the algorithm and key id need no
 * escaping either (allow-list, ID pattern); any other envelope takes the JSON.stringify path.
 */
export function encodeEnvelopeJsonText(envelope: Envelope): string {
  const [head, ct, tail] = encodeEnvelopeJsonParts(envelope);
  return head + ct + tail;
}

/**
 * `encodeEnvelopeJsonText` in three parts — the text before the base64url ciphertext, the
 * ciphertext, the text after — for writers that copy strings out (joining them would copy the
 * ciphertext once more).
 */
export function encodeEnvelopeJsonParts(envelope: Envelope): readonly [string, string, string] {
  if (!CheckedEnvelope.is(envelope)) return [JSON.stringify(encodeEnvelope(envelope, 'json')), '', ''];
  const { header, ciphertext } = envelope;
  // The members in encodeEnvelope's order: kos, alg, kid, ver, nonce, kc, did, ct.
  const head = `{"kos":${ENVELOPE_VERSION},"alg":"${header.alg}","kid":"${header.kid}","ver":${header.ver},"nonce":"${toBase64url(header.nonce)}","kc":"${toBase64url(header.kc)}","did":${JSON.stringify(header.did)},"ct":"`;
  return [head, toBase64url(ciphertext), '"}'];
}

/**
 * Envelopes this module built or checked. They are frozen, so re-checking one (as open after
 * decode, or rewrap, would) can be skipped. The mark is a private field, which no other object
 * can carry (and, unlike a WeakSet entry, costs the garbage collector nothing).
 */
class CheckedEnvelope implements Envelope {
  readonly #checked = true;
  readonly header: EnvelopeHeader;
  readonly ciphertext: Uint8Array;

  constructor(header: EnvelopeHeader, ciphertext: Uint8Array) {
    this.header = Object.freeze(header);
    this.ciphertext = ciphertext;
    Object.freeze(this);
  }

  static is(value: object): boolean {
    return #checked in value;
  }
}

/** A checked envelope (frozen, with its header): callers have validated the header and ciphertext. */
export function checkedEnvelope(header: EnvelopeHeader, ciphertext: Uint8Array): Envelope {
  return new CheckedEnvelope(header, ciphertext);
}

function decodeBinary(bytes: Uint8Array, maxBytes: number): Envelope {
  const { header, headerLength } = decodeHeader(bytes);
  // A view, not a copy (1 MiB copies cost more than the AEAD): the envelope shares memory
  // with the caller's buffer, which must not change while it is in use.
  const ciphertext = bytes.subarray(headerLength);
  checkCiphertext(ciphertext, header, maxBytes);
  return checkedEnvelope(header, ciphertext);
}

/** Reads a base64url field with `read`, turning any failure into ERR_ENVELOPE_MALFORMED naming the field. */
function base64urlField<T>(value: unknown, name: string, read: (text: string, what: string) => T): T {
  if (typeof value !== 'string') throw malformed(`field ${name} must be a base64url string`);
  try {
    return read(value, name);
  } catch {
    throw malformed(`field ${name} is not valid base64url`);
  }
}

function field(value: unknown, name: string): Uint8Array {
  return base64urlField(value, name, fromBase64url);
}

/** decodeJson's checks before any base64url field is read: the field set, version, algorithm, types, size. */
function checkJsonFields(input: Record<string, unknown>, maxBytes: number): void {
  // Own enumerable keys are distinct, so eight of them all in the set of eight are exactly that set.
  const keys = Object.keys(input);
  if (keys.length !== JSON_KEYS.length || !keys.every((key) => JSON_KEY_SET.has(key))) {
    throw malformed(`must have exactly the fields ${JSON_KEYS.join(', ')}`);
  }
  if (input.kos !== ENVELOPE_VERSION) {
    throw new KosError('ERR_ENVELOPE_UNSUPPORTED_VERSION', 'envelope format version is not supported');
  }
  if (!isAeadAlgorithm(input.alg)) throw new KosError('ERR_ALG_NOT_ALLOWED', 'envelope algorithm is not allowed');
  if (typeof input.ct !== 'string') throw malformed('field ct must be a base64url string');
  // Size check before decoding: base64url expands by 4/3.
  if (input.ct.length > Math.ceil((maxBytes * 4) / 3)) {
    throw new KosError('ERR_ENVELOPE_TOO_LARGE', 'envelope is too large');
  }
  if (typeof input.kid !== 'string' || typeof input.did !== 'string' || typeof input.ver !== 'number') {
    throw malformed('fields kid, did must be strings and ver a number');
  }
}

function decodeJson(input: Record<string, unknown>, maxBytes: number): Envelope {
  checkJsonFields(input, maxBytes);
  const header: EnvelopeHeader = {
    v: ENVELOPE_VERSION,
    alg: input.alg as EnvelopeHeader['alg'],
    kid: input.kid as string,
    ver: input.ver as number,
    nonce: field(input.nonce, 'nonce'),
    kc: field(input.kc, 'kc'),
    did: input.did as string,
  };
  validateHeader(header);
  const ciphertext = field(input.ct, 'ct');
  checkCiphertext(ciphertext, header, maxBytes);
  return checkedEnvelope(header, ciphertext);
}

/** The byte length of a base64url field, with `field`'s checks and errors, without decoding it. */
function fieldLength(value: unknown, name: string): number {
  return base64urlField(value, name, base64urlByteLength);
}

/**
 * An envelope's header fields (all but the nonce and commitment bytes) after every check
 * `decodeEnvelope` makes, in its order — the nonce's, commitment's and ciphertext's base64url
 * and lengths included — without keeping any of those bytes: for callers that only need the
 * key version it names (high and medium tier hand the envelope on as it is). A JSON-form
 * envelope is checked without allocating its byte fields; other forms are decoded whole.
 */
export function decodeEnvelopeHeader(input: unknown, options: DecodeOptions = {}): EnvelopeHeaderFields {
  if (
    typeof input !== 'object' ||
    input === null ||
    Array.isArray(input) ||
    input instanceof Uint8Array ||
    isParsedEnvelope(input)
  ) {
    return decodeEnvelope(input, options).header;
  }
  const maxBytes = options.maxCiphertextBytes ?? DEFAULT_MAX_CIPHERTEXT_BYTES;
  const record = input as Record<string, unknown>;
  checkJsonFields(record, maxBytes);
  const header: EnvelopeHeaderFields = {
    v: ENVELOPE_VERSION,
    alg: record.alg as EnvelopeHeader['alg'],
    kid: record.kid as string,
    ver: record.ver as number,
    did: record.did as string,
  };
  validateHeaderFields(header, fieldLength(record.nonce, 'nonce'), fieldLength(record.kc, 'kc'));
  checkCiphertextLength(fieldLength(record.ct, 'ct'), header, maxBytes);
  return header;
}

function isParsedEnvelope(input: unknown): input is Envelope {
  return (
    typeof input === 'object' &&
    input !== null &&
    (input as Envelope).ciphertext instanceof Uint8Array &&
    typeof (input as Envelope).header === 'object' &&
    (input as Envelope).header !== null
  );
}

/**
 * Parses an envelope in any form (or re-checks an already parsed one): a JSON-form object, a JSON string of it, a compact string
 * (`kos1.…`) or binary bytes. Throws typed errors (ERR_ENVELOPE_MALFORMED,
 * ERR_ENVELOPE_UNSUPPORTED_VERSION, ERR_ALG_NOT_ALLOWED, ERR_ENVELOPE_TOO_LARGE), never
 * anything else.
 */
export function decodeEnvelope(input: unknown, options: DecodeOptions = {}): Envelope {
  const maxBytes = options.maxCiphertextBytes ?? DEFAULT_MAX_CIPHERTEXT_BYTES;
  if (input instanceof Uint8Array) {
    if (input.length > maxBytes + 1024) throw new KosError('ERR_ENVELOPE_TOO_LARGE', 'envelope is too large');
    return decodeBinary(input, maxBytes);
  }
  if (typeof input === 'string') {
    if (input.length > Math.ceil(((maxBytes + 1024) * 4) / 3) + COMPACT_PREFIX.length) {
      throw new KosError('ERR_ENVELOPE_TOO_LARGE', 'envelope is too large');
    }
    if (input.startsWith(COMPACT_PREFIX)) {
      let bytes: Uint8Array;
      try {
        bytes = fromBase64url(input.slice(COMPACT_PREFIX.length), 'compact envelope');
      } catch {
        throw malformed('compact form is not valid base64url');
      }
      return decodeBinary(bytes, maxBytes);
    }
    if (input.startsWith('{')) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(input);
      } catch {
        throw malformed('is not valid JSON');
      }
      return decodeEnvelope(parsed, options);
    }
    throw malformed('string is neither compact nor JSON form');
  }
  if (isParsedEnvelope(input)) {
    if (CheckedEnvelope.is(input) && input.ciphertext.length <= maxBytes) return input;
    validateHeader(input.header);
    checkCiphertext(input.ciphertext, input.header, maxBytes);
    return input;
  }
  if (typeof input === 'object' && input !== null && !Array.isArray(input)) {
    return decodeJson(input as Record<string, unknown>, maxBytes);
  }
  throw malformed('must be an object, a string or bytes');
}
