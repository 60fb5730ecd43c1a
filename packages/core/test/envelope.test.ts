import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type AeadAlgorithm,
  createNodeCryptoProvider,
  decodeEnvelope,
  decodeEnvelopeHeader,
  type Envelope,
  type EnvelopeForm,
  type EnvelopeHeaderFields,
  encodeEnvelope,
  encodeHeader,
  isKosError,
  openWithKey,
  sealWithKey,
  toBase64url,
  utf8,
} from '../src/index.js';
import { expectKosError, kosErrorCode } from './helpers.js';

const crypto = createNodeCryptoProvider();
const key = new Uint8Array(32).fill(7);
const otherKey = new Uint8Array(32).fill(9);
const plaintext = utf8(JSON.stringify({ card: '4111 1111 1111 1111', owner: 'Ada' }));

function seal(alg: AeadAlgorithm = 'A256GCM', message = plaintext, dataId = 'record-1'): Promise<Envelope> {
  return sealWithKey({ crypto, key, kid: 'orders', version: 3, dataId, plaintext: message, alg });
}

function open(envelope: Envelope, withKey = key, dataId?: string): Promise<Uint8Array> {
  return openWithKey({ crypto, key: withKey, envelope, dataId });
}

describe('envelope v1', () => {
  describe.each(['A256GCM', 'XC20P'] as const)('%s', (alg) => {
    it.each(['json', 'compact', 'binary'] as const)('round-trips through the %s form', async (form: EnvelopeForm) => {
      const envelope = await seal(alg);
      const encoded = encodeEnvelope(envelope, form);
      const decoded = decodeEnvelope(form === 'json' ? JSON.parse(JSON.stringify(encoded)) : encoded);
      expect(decoded.header).toEqual(envelope.header);
      expect(await open(decoded)).toEqual(plaintext);
    });

    it('names format version, algorithm, key id, key version and nonce', async () => {
      const json = encodeEnvelope(await seal(alg), 'json');
      expect(json).toMatchObject({ kos: 1, alg, kid: 'orders', ver: 3, did: 'record-1' });
      expect(Buffer.from(json.nonce, 'base64url')).toHaveLength(alg === 'A256GCM' ? 12 : 24);
      expect(Buffer.from(json.kc, 'base64url')).toHaveLength(32);
    });
  });

  it('uses a fresh random nonce for every seal (also across refills of the random pool)', async () => {
    const nonces = new Set<string>();
    for (let i = 0; i < 1000; i++) nonces.add(toBase64url((await seal()).header.nonce));
    expect(nonces.size).toBe(1000);
  });

  it('seals an empty plaintext and a 1 MiB one', async () => {
    expect(await open(await seal('A256GCM', new Uint8Array()))).toEqual(new Uint8Array());
    const big = crypto.randomBytes(1024 * 1024);
    expect(Buffer.from(await open(await seal('A256GCM', big))).equals(big)).toBe(true);
  });

  describe('tampering', () => {
    it('fails on every single-bit flip of the binary form', async () => {
      const bytes = encodeEnvelope(await seal('A256GCM', utf8('short secret payload')), 'binary');
      let refused = 0;
      for (let bit = 0; bit < bytes.length * 8; bit++) {
        const copy = bytes.slice();
        copy[bit >> 3] = (copy[bit >> 3] as number) ^ (1 << (bit & 7));
        try {
          await open(decodeEnvelope(copy));
          throw new Error(`bit ${bit} flipped and the envelope still opened`);
        } catch (error) {
          if (!isKosError(error)) throw error;
          refused++;
        }
      }
      expect(refused).toBe(bytes.length * 8);
    });

    it('fails on every truncation of the binary and compact forms', async () => {
      const envelope = await seal('A256GCM', utf8('another secret'));
      const bytes = encodeEnvelope(envelope, 'binary');
      const refusedWith = async (input: Uint8Array | string) => {
        try {
          await open(decodeEnvelope(input));
          return 'opened';
        } catch (error) {
          return isKosError(error) ? error.code : 'foreign error';
        }
      };
      for (let length = 0; length < bytes.length; length++) {
        expect(await refusedWith(bytes.subarray(0, length))).toMatch(/^ERR_/);
      }
      const compact = encodeEnvelope(envelope, 'compact');
      for (let length = 0; length < compact.length; length++) {
        expect(await refusedWith(compact.slice(0, length))).toMatch(/^ERR_/);
      }
    });

    it.each([
      ['another data id', { did: 'record-2' }],
      ['another key id', { kid: 'invoices' }],
      ['another key version', { ver: 4 }],
      ['another algorithm', { alg: 'XC20P' }],
    ] as const)('fails when the ciphertext is moved to %s', async (_what, change) => {
      const json = { ...encodeEnvelope(await seal(), 'json'), ...change };
      if ('alg' in change) {
        // XChaCha needs a 24-byte nonce: the envelope is refused as malformed before any crypto runs.
        await expectKosError(() => open(decodeEnvelope(json)), 'ERR_ENVELOPE_MALFORMED');
        return;
      }
      await expectKosError(() => open(decodeEnvelope(json)), 'ERR_DECRYPTION_FAILED');
    });

    it('refuses an envelope that belongs to another record when the caller names the record', async () => {
      const json = encodeEnvelope(await seal(), 'json');
      await expectKosError(() => open(decodeEnvelope(json), key, 'record-2'), 'ERR_DATA_ID_MISMATCH');
    });

    it('checks the key commitment before decrypting: a wrong key fails with the fixed message', async () => {
      const envelope = await seal();
      const error = await open(envelope, otherKey).catch((e: unknown) => e);
      expect(isKosError(error, 'ERR_DECRYPTION_FAILED')).toBe(true);
      expect((error as Error).message).toBe('decryption failed');
      expect((error as Error).cause).toBeUndefined();
    });

    it('refuses a valid ciphertext whose commitment was replaced', async () => {
      const envelope = await seal();
      const forged = { ...envelope, header: { ...envelope.header, kc: new Uint8Array(32) } };
      await expectKosError(() => open(forged), 'ERR_DECRYPTION_FAILED');
    });
  });

  describe('bad input gives typed errors', () => {
    const valid = async () => encodeEnvelope(await seal(), 'json');

    it.each([
      ['unknown format version', { kos: 2 }, 'ERR_ENVELOPE_UNSUPPORTED_VERSION'],
      ['unknown algorithm', { alg: 'A128CBC' }, 'ERR_ALG_NOT_ALLOWED'],
      ['algorithm none', { alg: 'none' }, 'ERR_ALG_NOT_ALLOWED'],
      ['non-string ciphertext', { ct: 42 }, 'ERR_ENVELOPE_MALFORMED'],
      ['bad base64url', { ct: 'ab$c' }, 'ERR_ENVELOPE_MALFORMED'],
      ['padded base64', { nonce: 'AAAAAAAAAAAAAAAA==' }, 'ERR_ENVELOPE_MALFORMED'],
      ['short nonce', { nonce: 'AAAA' }, 'ERR_ENVELOPE_MALFORMED'],
      ['string version', { ver: '3' }, 'ERR_ENVELOPE_MALFORMED'],
      ['version 0', { ver: 0 }, 'ERR_ENVELOPE_MALFORMED'],
      ['fractional version', { ver: 1.5 }, 'ERR_ENVELOPE_MALFORMED'],
      ['path in key id', { kid: '../etc' }, 'ERR_ENVELOPE_MALFORMED'],
      ['empty data id', { did: '' }, 'ERR_ENVELOPE_MALFORMED'],
      ['oversize data id', { did: 'x'.repeat(513) }, 'ERR_ENVELOPE_MALFORMED'],
      ['short commitment', { kc: 'AAAA' }, 'ERR_ENVELOPE_MALFORMED'],
      ['extra field', { extra: true }, 'ERR_ENVELOPE_MALFORMED'],
      ['ciphertext shorter than a tag', { ct: 'AAAA' }, 'ERR_ENVELOPE_MALFORMED'],
    ] as const)('%s', async (_what, change, code) => {
      const input = { ...(await valid()), ...change };
      await expectKosError(() => decodeEnvelope(input), code);
    });

    it('refuses oversize envelopes before decoding them', async () => {
      const envelope = await seal('A256GCM', new Uint8Array(4096));
      await expectKosError(
        () => decodeEnvelope(encodeEnvelope(envelope, 'json'), { maxCiphertextBytes: 1024 }),
        'ERR_ENVELOPE_TOO_LARGE',
      );
      await expectKosError(
        () => decodeEnvelope(encodeEnvelope(envelope, 'binary'), { maxCiphertextBytes: 1024 }),
        'ERR_ENVELOPE_TOO_LARGE',
      );
    });

    it.each([
      ['null', null],
      ['a number', 42],
      ['an array', []],
      ['a plain string', 'hello'],
      ['broken JSON', '{"kos":'],
      ['compact with bad base64url', 'kos1.***'],
      ['bytes without magic', new Uint8Array([1, 2, 3, 4, 5, 6, 7])],
      ['bytes with unknown version', new Uint8Array([0x4b, 0x4f, 0x53, 9, 1, 1, 65])],
      ['bytes with unknown algorithm id', new Uint8Array([0x4b, 0x4f, 0x53, 1, 77, 1, 65])],
    ])('%s', async (_what, input) => {
      const code = await kosErrorCode(() => decodeEnvelope(input));
      expect(['ERR_ENVELOPE_MALFORMED', 'ERR_ENVELOPE_UNSUPPORTED_VERSION', 'ERR_ALG_NOT_ALLOWED']).toContain(code);
    });

    it('header-only decoding gives the same verdict, error code and header fields as decoding whole', async () => {
      const json = await valid();
      const binary = encodeEnvelope(await seal(), 'binary');
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const outcome = (read: () => unknown) => {
        try {
          return { header: read() };
        } catch (error) {
          if (!isKosError(error)) throw error;
          return { code: error.code };
        }
      };
      fc.assert(
        fc.property(
          fc.oneof(
            // One field of a valid JSON-form envelope replaced (base64url fields by near-valid text).
            fc
              .tuple(
                fc.constantFrom('kos', 'alg', 'kid', 'ver', 'nonce', 'kc', 'did', 'ct', 'extra'),
                fc.oneof(
                  fc.anything(),
                  fc.string({ unit: fc.constantFrom(...alphabet, '+', '/', '=', ' ', '*', 'é'), maxLength: 80 }),
                ),
              )
              .map(([name, value]) => ({ ...json, [name]: value })),
            // The ciphertext with one character changed, cut or lengthened.
            fc
              .tuple(fc.nat(json.ct.length - 1), fc.constantFrom(...alphabet, '+', '/', '=', '.', '\n', ''))
              .map(([at, c]) => ({ ...json, ct: json.ct.slice(0, at) + c + json.ct.slice(at + 1) })),
            fc.constant(json),
            fc.constant(binary),
            fc.constant(`kos1.${toBase64url(binary)}`),
            fc.anything(),
          ),
          (input) => {
            const fields = ({ v, alg, kid, ver, did }: EnvelopeHeaderFields) => ({ v, alg, kid, ver, did });
            const whole = outcome(() => fields(decodeEnvelope(input).header));
            const header = outcome(() => fields(decodeEnvelopeHeader(input)));
            expect(header).toEqual(whole);
          },
        ),
        { numRuns: 3000, seed: 77 },
      );
      // The size limit applies to the ciphertext it does not keep.
      const big = encodeEnvelope(await seal('A256GCM', new Uint8Array(4096)), 'json');
      await expectKosError(() => decodeEnvelopeHeader(big, { maxCiphertextBytes: 1024 }), 'ERR_ENVELOPE_TOO_LARGE');
    });

    it('never throws anything but a KosError on arbitrary input (fuzz)', async () => {
      const good = await seal();
      const binary = encodeEnvelope(good, 'binary');
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            fc.anything(),
            fc.uint8Array({ maxLength: 300 }),
            fc.string().map((s) => `kos1.${s}`),
            fc.record({ kos: fc.anything(), alg: fc.anything(), ct: fc.string() }),
            // A valid envelope with random bytes overwritten.
            fc.tuple(fc.nat(binary.length - 1), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([at, patch]) => {
              const copy = binary.slice();
              copy.set(patch.subarray(0, copy.length - at), at);
              return copy;
            }),
          ),
          async (input) => {
            try {
              const envelope = decodeEnvelope(input);
              await open(envelope);
            } catch (error) {
              if (!isKosError(error)) throw error;
            }
          },
        ),
        { numRuns: 2000, seed: 1234 },
      );
    });
  });

  it('binds the canonical header as associated data (AAD = header bytes)', async () => {
    const envelope = await seal();
    const binary = encodeEnvelope(envelope, 'binary');
    const header = encodeHeader(envelope.header);
    expect(binary.subarray(0, header.length)).toEqual(header);
    const plain = await crypto.aeadOpen('A256GCM', key, envelope.header.nonce, envelope.ciphertext, header);
    expect(plain).toEqual(plaintext);
  });
});
