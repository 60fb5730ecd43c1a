import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { equalBytes, fromBase64url, toBase64url } from '../src/index.js';
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

describe('equalBytes', () => {
  it('compares contents, and different lengths are unequal', () => {
    expect(equalBytes(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2, 3))).toBe(true);
    expect(equalBytes(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2, 4))).toBe(false);
    expect(equalBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 2, 3))).toBe(false);
  });
});
