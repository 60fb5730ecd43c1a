import { type Envelope, encodeEnvelope, encodeEnvelopeJsonParts, KosError, MAX_BODY_DEPTH } from '@kos/core';

/** The envelopes of one record as findEnvelopes lists them, and their rewrapped forms. */
export interface FoundEnvelopes {
  readonly originals: readonly unknown[];
  readonly rewrapped: readonly Envelope[];
}

/**
 * Hands out a record's rewrapped envelopes to a walk that visits the envelopes in the order
 * findEnvelopes listed them (checked: a walk in another order fails instead of mixing them up).
 */
export class EnvelopeCursor {
  #at = 0;
  readonly #found: FoundEnvelopes;

  constructor(found: FoundEnvelopes) {
    this.#found = found;
  }

  /** Whether `value` is the next envelope findEnvelopes listed (the same object, or an equal compact string). */
  isNext(value: unknown): boolean {
    return this.#at < this.#found.originals.length && value === this.#found.originals[this.#at];
  }

  next(original: unknown): { envelope: Envelope; compact: boolean } {
    const { originals, rewrapped } = this.#found;
    if (this.#at >= originals.length || original !== originals[this.#at]) {
      throw new KosError('ERR_INTERNAL', 'rewrap: envelopes were not visited in order');
    }
    return { envelope: rewrapped[this.#at++] as Envelope, compact: typeof original === 'string' };
  }

  done(): void {
    if (this.#at !== this.#found.originals.length) {
      throw new KosError('ERR_INTERNAL', 'rewrap: envelopes were not all replaced');
    }
  }
}

const QUOTE = 0x22;
const COMMA = 0x2c;
const COLON = 0x3a;

/**
 * JSON written straight into a buffer that grows as needed (no intermediate strings to join or
 * flatten). Batch buffers (ciphertext only) are reused from batch to batch: fresh ones would be
 * external memory that makes V8 run full collections over and over.
 */
export class JsonOutput {
  #buffer: Buffer;
  #size = 0;

  constructor(buffer: Buffer) {
    this.#buffer = buffer;
  }

  /** The whole buffer, to reuse once the output is written. */
  get buffer(): Buffer {
    return this.#buffer;
  }

  get bytes(): Buffer {
    return this.#buffer.subarray(0, this.#size);
  }

  #room(bytes: number): void {
    if (this.#size + bytes <= this.#buffer.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(2 * this.#buffer.length, this.#size + bytes));
    this.#buffer.copy(bigger, 0, 0, this.#size);
    this.#buffer = bigger;
  }

  byte(value: number): void {
    this.#room(1);
    this.#buffer[this.#size++] = value;
  }

  /** A string as UTF-8 (short ASCII ones copied here: cheaper than a call into the native writer). */
  text(value: string): void {
    const length = value.length;
    this.#room(3 * length);
    const buffer = this.#buffer;
    if (length <= 32) {
      let at = this.#size;
      for (let i = 0; i < length; i++) {
        const code = value.charCodeAt(i);
        if (code > 0x7f) {
          this.#size += buffer.write(value, this.#size, 'utf8');
          return;
        }
        buffer[at++] = code;
      }
      this.#size = at;
      return;
    }
    this.#size += buffer.write(value, this.#size, 'utf8');
  }

  /** A base64url string (ASCII, nothing to escape) as a JSON string. */
  base64url(value: string): void {
    this.#room(value.length + 2);
    this.#buffer[this.#size++] = QUOTE;
    this.#size += this.#buffer.write(value, this.#size, 'latin1');
    this.#buffer[this.#size++] = QUOTE;
  }

  /** A rewrapped envelope, exactly as JSON.stringify writes its JSON form (or its compact string). */
  envelope(envelope: Envelope, compact: boolean): void {
    if (compact) {
      this.base64url(encodeEnvelope(envelope, 'compact'));
      return;
    }
    const [head, ct, tail] = encodeEnvelopeJsonParts(envelope);
    this.text(head);
    this.#room(ct.length);
    this.#size += this.#buffer.write(ct, this.#size, 'latin1');
    this.text(tail);
  }

  /**
   * JSON.stringify of a record as JSON.parse returned it, with its envelopes replaced by
   * their rewrapped forms (the same walk as findEnvelopes and replaceEnvelopes: an envelope
   * is matched before looking inside, to MAX_BODY_DEPTH, values in key order). Walking in the
   * same order, the envelopes come up one after the other as findEnvelopes listed them, so a
   * value is one exactly when it is the next in that list (checked again by the cursor).
   * JSON.parse output holds only plain objects, arrays, strings, finite numbers, booleans and
   * null, so these are the bytes JSON.stringify would write for the replaced record.
   */
  record(value: unknown, cursor: EnvelopeCursor, depth = 0): void {
    if (depth <= MAX_BODY_DEPTH && cursor.isNext(value)) {
      const { envelope, compact } = cursor.next(value);
      this.envelope(envelope, compact);
    } else if (Array.isArray(value)) {
      this.byte(0x5b);
      for (let i = 0; i < value.length; i++) {
        if (i > 0) this.byte(COMMA);
        this.record(value[i], cursor, depth + 1);
      }
      this.byte(0x5d);
    } else if (typeof value === 'object' && value !== null) {
      this.byte(0x7b);
      let first = true;
      // JSON.parse objects have no enumerable inherited keys: for-in is Object.keys' order
      // (an own "__proto__" field is read as the own field it is).
      const object = value as Record<string, unknown>;
      for (const key in object) {
        if (!first) this.byte(COMMA);
        first = false;
        this.text(JSON.stringify(key));
        this.byte(COLON);
        this.record(object[key], cursor, depth + 1);
      }
      this.byte(0x7d);
    } else {
      this.text(JSON.stringify(value) as string);
    }
  }
}

/** Writes a parsed record with its envelopes swapped for their rewrapped forms; the envelopes written. */
export function writeRecord(out: JsonOutput, record: unknown, found: FoundEnvelopes): number {
  if (found.originals.length === 0) {
    out.text(JSON.stringify(record));
    return 0;
  }
  const cursor = new EnvelopeCursor(found);
  out.record(record, cursor);
  cursor.done();
  return found.originals.length;
}
