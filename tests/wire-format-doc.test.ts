import { readFileSync } from 'node:fs';
import {
  createNobleCryptoProvider,
  createNodeCryptoProvider,
  decodeEnvelope,
  encodeHeader,
  keyCheckValue,
  openWithKey,
  shareDigest,
  toBase64url,
} from '@kos/core';
import { describe, expect, it } from 'vitest';

interface EnvelopeVector {
  alg: string;
  keyHex: string;
  nonceHex: string;
  kid: string;
  version: number;
  dataId: string;
  plaintext: string;
  commitmentHex: string;
  aadHex: string;
  ciphertextHex: string;
  json: unknown;
  compact: string;
  binaryHex: string;
}

const doc = readFileSync(new URL('../docs/wire-format.md', import.meta.url), 'utf8');
const block = /```json kos-vectors\n([\s\S]*?)\n```/.exec(doc)?.[1];
const vectors = JSON.parse(block ?? 'null') as {
  envelopes: EnvelopeVector[];
  keyCheckValue: { keyHex: string; kid: string; version: number; kcvBase64url: string };
  shareDigest: {
    kid: string;
    version: number;
    setId: string;
    nodeId: string;
    x: number;
    shareHex: string;
    digestBase64url: string;
  };
};
const hex = (text: string) => new Uint8Array(Buffer.from(text, 'hex'));

describe('the test vectors in docs/wire-format.md', () => {
  it('are present', () => {
    expect(vectors.envelopes.map((v) => v.alg)).toEqual(['A256GCM', 'XC20P']);
  });

  describe.each(vectors.envelopes.map((v) => [v.alg, v] as const))('%s envelope', (_alg, v) => {
    it.each([
      ['json', () => v.json],
      ['compact', () => v.compact],
      ['binary', () => hex(v.binaryHex)],
    ] as const)('the %s form decodes to the documented header and opens to the plaintext', async (_form, input) => {
      const envelope = decodeEnvelope(input());
      expect(Buffer.from(encodeHeader(envelope.header)).toString('hex')).toBe(v.aadHex);
      expect(Buffer.from(envelope.header.kc).toString('hex')).toBe(v.commitmentHex);
      expect(Buffer.from(envelope.ciphertext).toString('hex')).toBe(v.ciphertextHex);
      for (const crypto of [createNodeCryptoProvider(), createNobleCryptoProvider()]) {
        const plaintext = await openWithKey({ crypto, key: hex(v.keyHex), envelope, dataId: v.dataId });
        expect(new TextDecoder().decode(plaintext)).toBe(v.plaintext);
      }
    });
  });

  it('give the documented key-check value and share digest', async () => {
    const crypto = createNodeCryptoProvider();
    const k = vectors.keyCheckValue;
    expect(toBase64url(await keyCheckValue(crypto, hex(k.keyHex), k.kid, k.version))).toBe(k.kcvBase64url);
    const s = vectors.shareDigest;
    expect(await shareDigest(crypto, s, hex(s.shareHex))).toBe(s.digestBase64url);
  });
});
