/**
 * Byte helpers that run the same on Node and in browsers. Base64url is strict (RFC 4648 §5,
 * no padding, no whitespace): Node's Buffer silently skips bad characters, so the input is
 * checked first and Buffer is only the fast path.
 */
import { base64urlnopad } from '@scure/base';
import { KosError } from './errors.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const lossyDecoder = new TextDecoder();
const BASE64URL = /^[A-Za-z0-9_-]*$/;

type NodeBufferLike = Uint8Array & { toString(encoding: string): string };
type NodeBufferCtor = {
  from(data: string, encoding: string): NodeBufferLike;
  from(data: ArrayBufferLike, byteOffset: number, length: number): NodeBufferLike;
  allocUnsafeSlow(size: number): NodeBufferLike & { write(text: string, encoding: string): number };
};
const NodeBuffer = (globalThis as { Buffer?: NodeBufferCtor }).Buffer;

export function utf8(text: string): Uint8Array {
  // Short ASCII strings (key ids, data ids, labels) are copied directly: TextEncoder costs
  // more per call than the copy. Anything else goes through the encoder (same bytes).
  const length = text.length;
  if (length <= 64) {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) {
      const code = text.charCodeAt(i);
      if (code > 0x7f) return encoder.encode(text);
      out[i] = code;
    }
    return out;
  }
  return encoder.encode(text);
}

/** Length of a string in UTF-8 bytes, without encoding it (lone surrogates count as 3, as the encoder writes U+FFFD). */
export function utf8Length(text: string): number {
  let length = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) length += 1;
    else if (code < 0x800) length += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        length += 4;
        i++;
      } else length += 3;
    } else length += 3;
  }
  return length;
}

/** Decodes UTF-8, refusing invalid sequences. */
export function fromUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/**
 * Decodes UTF-8 as TextDecoder does by default (invalid sequences become U+FFFD, a leading BOM
 * is dropped), through Node's Buffer where there is one: faster for small texts.
 */
export function fromUtf8Lossy(bytes: Uint8Array): string {
  if (!NodeBuffer) return lossyDecoder.decode(bytes);
  const bom = bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  return NodeBuffer.from(bytes.buffer, bytes.byteOffset + bom, bytes.byteLength - bom).toString('utf8');
}

/**
 * Arrays this short may live inside V8's heap, where reading `.buffer` moves them out (an
 * allocation that costs more than the encoding): they are encoded from a small scratch copy.
 */
const SMALL_BYTES = 64;
let smallScratch: (NodeBufferLike & { toString(encoding: string, start: number, end: number): string }) | undefined;

export function toBase64url(bytes: Uint8Array): string {
  if (NodeBuffer) {
    const length = bytes.byteLength;
    if (length <= SMALL_BYTES) {
      smallScratch ??= NodeBuffer.allocUnsafeSlow(SMALL_BYTES) as typeof smallScratch & object;
      smallScratch.set(bytes);
      const text = smallScratch.toString('base64url', 0, length);
      // The bytes may be key material: nothing of them stays behind.
      smallScratch.fill(0, 0, length);
      return text;
    }
    return NodeBuffer.from(bytes.buffer, bytes.byteOffset, length).toString('base64url');
  }
  return base64urlnopad.encode(bytes);
}

/** Strict base64url (no padding) decode; throws ERR_ENVELOPE_MALFORMED-style errors via `what`. */
export function fromBase64url(text: string, what = 'value'): Uint8Array {
  checkBase64urlShape(text, what);
  if (NodeBuffer) {
    const out = NodeBuffer.from(text, 'base64url');
    if (out.length !== decodedLength(text)) throw notBase64url(what);
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }
  if (!BASE64URL.test(text)) throw notBase64url(what);
  try {
    return base64urlnopad.decode(text);
  } catch {
    throw notBase64url(what);
  }
}

function notBase64url(what: string): KosError {
  return new KosError('ERR_INVALID_ARGUMENT', `${what} is not valid base64url`);
}

/** Bytes that a base64url text without padding stands for. */
const decodedLength = (text: string): number => Math.floor((text.length * 3) / 4);

/**
 * The checks strict decoding makes before decoding: a string of a possible length with a
 * canonical last character; under Node also no '+' or '/', which Buffer would read as the
 * standard alphabet (characters outside both alphabets are skipped by Buffer, so its output
 * comes out short: callers compare the decoded length).
 */
function checkBase64urlShape(text: unknown, what: string): asserts text is string {
  if (typeof text !== 'string' || text.length % 4 === 1 || !canonicalTail(text)) throw notBase64url(what);
  if (NodeBuffer && (text.indexOf('+') !== -1 || text.indexOf('/') !== -1)) throw notBase64url(what);
}

/** Characters `base64urlByteLength` checks through the scratch buffer; longer texts are decoded. */
const SCRATCH_CHARS = 64 * 1024;
let scratch: (NodeBufferLike & { write(text: string, encoding: string): number }) | undefined;

/**
 * The number of bytes a strict base64url text decodes to, with `fromBase64url`'s checks, but
 * without allocating the bytes: for checking a value that is passed on as text. (Under Node the
 * text is decoded into one reused scratch buffer, which only ever holds public values such as
 * ciphertexts.)
 */
export function base64urlByteLength(text: string, what = 'value'): number {
  if (!NodeBuffer || typeof text !== 'string' || text.length > SCRATCH_CHARS) return fromBase64url(text, what).length;
  checkBase64urlShape(text, what);
  scratch ??= NodeBuffer.allocUnsafeSlow((SCRATCH_CHARS * 3) / 4);
  const length = decodedLength(text);
  if (scratch.write(text, 'base64url') !== length) throw notBase64url(what);
  return length;
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** Only one encoding per byte string: the unused low bits of the last character must be zero. */
function canonicalTail(text: string): boolean {
  const rest = text.length % 4;
  if (rest === 0) return true;
  const last = ALPHABET.indexOf(text.charAt(text.length - 1));
  return last !== -1 && (last & (rest === 2 ? 0x0f : 0x03)) === 0;
}

/** Constant-time equality for equal-length inputs; different lengths return false at once. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}

export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Overwrites a buffer with zeros (best effort: the runtime may hold other copies). */
export function wipe(...buffers: readonly (Uint8Array | undefined)[]): void {
  for (const buffer of buffers) buffer?.fill(0);
}

export function u32be(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value, false);
  return out;
}

export function u16be(value: number): Uint8Array {
  const out = new Uint8Array(2);
  new DataView(out.buffer).setUint16(0, value, false);
  return out;
}

/** A field prefixed with its 2-byte big-endian length, for unambiguous hashing. */
export function lengthPrefixed(bytes: Uint8Array): Uint8Array {
  if (bytes.length > 0xffff) throw new KosError('ERR_INVALID_ARGUMENT', 'field longer than 65535 bytes');
  return concatBytes(u16be(bytes.length), bytes);
}
