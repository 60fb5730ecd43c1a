// Prints the test vectors of docs/wire-format.md (deterministic: fixed key, nonce and share).
// Run: node --conditions=kos-source --import tsx scripts/wire-vectors.ts
import {
  type AeadAlgorithm,
  type CryptoProvider,
  createNodeCryptoProvider,
  encodeEnvelope,
  encodeHeader,
  keyCheckValue,
  sealWithKey,
  shareDigest,
  toBase64url,
  utf8,
} from '@kos/core';

const node = createNodeCryptoProvider();
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
const key = Uint8Array.from({ length: 32 }, (_, i) => i);

function fixedNonce(nonce: Uint8Array): CryptoProvider {
  return { ...node, randomBytes: () => nonce.slice() };
}

async function envelopeVector(alg: AeadAlgorithm, nonceLength: number) {
  const nonce = Uint8Array.from({ length: nonceLength }, (_, i) => 0xa0 + i);
  const plaintext = '{"card":"4111 1111 1111 1111"}';
  const envelope = await sealWithKey({
    crypto: fixedNonce(nonce),
    key,
    kid: 'orders',
    version: 7,
    dataId: 'order-42',
    plaintext: utf8(plaintext),
    alg,
  });
  return {
    alg,
    keyHex: hex(key),
    nonceHex: hex(nonce),
    kid: 'orders',
    version: 7,
    dataId: 'order-42',
    plaintext,
    commitmentHex: hex(envelope.header.kc),
    aadHex: hex(encodeHeader(envelope.header)),
    ciphertextHex: hex(envelope.ciphertext),
    json: encodeEnvelope(envelope, 'json'),
    compact: encodeEnvelope(envelope, 'compact'),
    binaryHex: hex(encodeEnvelope(envelope, 'binary')),
  };
}

const share = Uint8Array.from({ length: 33 }, (_, i) => (i === 32 ? 0x2a : 0x10 + i));
const vectors = {
  envelopes: [await envelopeVector('A256GCM', 12), await envelopeVector('XC20P', 24)],
  keyCheckValue: {
    keyHex: hex(key),
    kid: 'orders',
    version: 7,
    kcvBase64url: toBase64url(await keyCheckValue(node, key, 'orders', 7)),
  },
  shareDigest: {
    kid: 'orders',
    version: 7,
    setId: 'sExampleSet',
    nodeId: 'node-3',
    x: 0x2a,
    shareHex: hex(share),
    digestBase64url: await shareDigest(
      node,
      { kid: 'orders', version: 7, setId: 'sExampleSet', nodeId: 'node-3', x: 0x2a },
      share,
    ),
  },
};
console.log(JSON.stringify(vectors, null, 2));
