import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { base64urlByteLength } from '../src/bytes.js';
import { equalBytes, fromBase64url, fromUtf8Lossy, toBase64url, utf8, utf8Length } from '../src/index.js';
import { expectKosError } from './helpers.js';

describe('strict base64url', () => {
  it('round-trips any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const text = toBase64url(bytes);
        expect(text).toMatch(/^[A-Za-z0-9_-]*$/);
        expect(fromBase64url(text)).toEqual(bytes);
      }),
      { seed: 3 },
    );
  });

  it.each([
    ['a character outside the alphabet', 'AAA*'],
    ['a space', 'AA A'],
    ['a newline', 'AA\nA'],
    ['a non-ASCII character', 'AAAé'],
    ['the standard alphabet +', 'AA+A'],
    ['the standard alphabet /', 'AA/A'],
    ['padding', 'AAA='],
    ['double padding', 'AA=='],
    ['an impossible length', 'AAAAA'],
    ['stray bits in the last character (non-canonical)', 'AB'],
  ])('refuses %s', async (_what, text) => {
    await expectKosError(() => fromBase64url(text), 'ERR_INVALID_ARGUMENT');
  });
});

describe('base64urlByteLength (checking a base64url value without keeping its bytes)', () => {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const outcome = (read: () => number) => {
    try {
      return { length: read() };
    } catch (error) {
      return { code: (error as { code?: string }).code };
    }
  };

  it('accepts exactly what fromBase64url accepts, and counts the bytes it decodes to', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }).map(toBase64url),
          fc.string({ unit: fc.constantFrom(...alphabet, '+', '/', '=', ' ', '*', 'é', '\n'), maxLength: 60 }),
          fc
            .tuple(fc.uint8Array({ minLength: 1, maxLength: 200 }), fc.nat(), fc.constantFrom('+', '/', '=', '.', ''))
            .map(([bytes, at, c]) => {
              const text = toBase64url(bytes);
              const i = at % text.length;
              return text.slice(0, i) + c + text.slice(i + 1);
            }),
        ),
        (text) => {
          expect(outcome(() => base64urlByteLength(text))).toEqual(outcome(() => fromBase64url(text).length));
        },
      ),
      { seed: 21, numRuns: 2000 },
    );
  });

  it('checks texts longer than its scratch buffer by decoding them', async () => {
    const text = toBase64url(new Uint8Array(100_000).fill(7));
    expect(base64urlByteLength(text)).toBe(100_000);
    await expectKosError(
      () => base64urlByteLength(`${text.slice(0, 70_000)}*${text.slice(70_001)}`),
      'ERR_INVALID_ARGUMENT',
    );
  });
});

describe('utf8Length', () => {
  it('equals the length of the UTF-8 encoding for any string, lone surrogates included', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (text) => {
        expect(utf8Length(text)).toBe(utf8(text).length);
      }),
      { seed: 11, numRuns: 500 },
    );
    expect(utf8Length('\ud800x')).toBe(utf8('\ud800x').length);
  });
});

describe('utf8', () => {
  it('gives exactly the TextEncoder bytes for any string (short ASCII has its own path)', () => {
    const encoder = new TextEncoder();
    const fixed = [
      '',
      'a',
      'orders',
      'x'.repeat(64),
      'x'.repeat(65),
      `${'x'.repeat(63)}é`,
      'é',
      'aé',
      '\ud800',
      'a\udc00b',
    ];
    for (const text of fixed) expect(utf8(text), JSON.stringify(text)).toEqual(encoder.encode(text));
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 80 }), fc.string({ maxLength: 80 })), (text) => {
        expect(utf8(text)).toEqual(encoder.encode(text));
      }),
      { seed: 12, numRuns: 1000 },
    );
  });
});

describe('equalBytes', () => {
  it('compares contents, and different lengths are unequal', () => {
    expect(equalBytes(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2, 3))).toBe(true);
    expect(equalBytes(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2, 4))).toBe(false);
    expect(equalBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 2, 3))).toBe(false);
  });
});

describe('lossy UTF-8 decoding', () => {
  it('reads any bytes exactly as TextDecoder does by default (U+FFFD for invalid, leading BOM dropped)', () => {
    const reference = new TextDecoder();
    const withBom = fc.uint8Array({ maxLength: 64 }).map((rest) => Uint8Array.of(0xef, 0xbb, 0xbf, ...rest));
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }), withBom), (bytes) => {
        expect(fromUtf8Lossy(bytes)).toBe(reference.decode(bytes));
      }),
      { seed: 11, numRuns: 2000 },
    );
  });
});
