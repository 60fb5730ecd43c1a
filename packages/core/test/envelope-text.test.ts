import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createNodeCryptoProvider,
  decodeEnvelope,
  type Envelope,
  type EnvelopeHeader,
  encodeEnvelope,
  encodeEnvelopeJsonParts,
  encodeEnvelopeJsonText,
  encodeHeader,
  sealWithKey,
} from '../src/index.js';

/** encodeHeader as it was first written (DataView and TextEncoder), the reference for the byte-by-byte one. */
function referenceHeader(header: EnvelopeHeader): Uint8Array {
  const encoder = new TextEncoder();
  const kid = encoder.encode(header.kid);
  const did = encoder.encode(header.did);
  const out = new Uint8Array(6 + kid.length + 4 + 1 + header.nonce.length + 1 + header.kc.length + 2 + did.length);
  const view = new DataView(out.buffer);
  let at = 0;
  out.set([0x4b, 0x4f, 0x53], at);
  at += 3;
  out[at++] = header.v;
  out[at++] = header.alg === 'A256GCM' ? 1 : 2;
  out[at++] = kid.length;
  out.set(kid, at);
  at += kid.length;
  view.setUint32(at, header.ver, false);
  at += 4;
  out[at++] = header.nonce.length;
  out.set(header.nonce, at);
  at += header.nonce.length;
  out[at++] = header.kc.length;
  out.set(header.kc, at);
  at += header.kc.length;
  view.setUint16(at, did.length, false);
  at += 2;
  out.set(did, at);
  return out;
}

const anyText = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }));

describe('encodeHeader', () => {
  it('writes the same bytes as the DataView encoder for any header, checked or not', () => {
    fc.assert(
      fc.property(
        fc.record({
          alg: fc.constantFrom('A256GCM' as const, 'XC20P' as const),
          kid: anyText,
          ver: fc.oneof(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.constantFrom(2 ** 32, 2 ** 40 + 5, 1.5)),
          nonce: fc.uint8Array({ maxLength: 30 }),
          kc: fc.uint8Array({ maxLength: 40 }),
          did: fc.oneof(anyText, fc.string({ minLength: 300, maxLength: 700 })),
        }),
        (fields) => {
          const header = { v: 1 as const, ...fields };
          expect(encodeHeader(header)).toEqual(referenceHeader(header));
        },
      ),
      { seed: 5, numRuns: 2000 },
    );
  });
});

describe('encodeEnvelopeJsonText', () => {
  const crypto = createNodeCryptoProvider();
  const key = new Uint8Array(32).fill(9);

  it('is JSON.stringify of the JSON form, for any key id, version, data id and size', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/),
        fc.integer({ min: 1, max: 2 ** 32 - 1 }),
        // Any well-formed data id: quotes, backslashes, control and non-ASCII characters.
        fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }),
        fc.uint8Array({ maxLength: 2000 }),
        fc.constantFrom('A256GCM' as const, 'XC20P' as const),
        async (kid, version, dataId, plaintext, alg) => {
          const envelope = await sealWithKey({ crypto, key, kid, version, dataId, plaintext, alg });
          const text = encodeEnvelopeJsonText(envelope);
          expect(text).toBe(JSON.stringify(encodeEnvelope(envelope, 'json')));
          expect(encodeEnvelopeJsonParts(envelope).join('')).toBe(text);
          expect(decodeEnvelope(JSON.parse(text))).toEqual(envelope);
        },
      ),
      { seed: 9, numRuns: 300 },
    );
  });

  it('falls back to JSON.stringify for an envelope it did not check', async () => {
    const sealed = await sealWithKey({ crypto, key, kid: 'k', version: 1, dataId: 'd', plaintext: new Uint8Array(3) });
    const unchecked: Envelope = { header: { ...sealed.header, kid: 'k"ey' }, ciphertext: sealed.ciphertext };
    expect(encodeEnvelopeJsonText(unchecked)).toBe(JSON.stringify(encodeEnvelope(unchecked, 'json')));
  });
});
