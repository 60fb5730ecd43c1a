import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  aeadOpen,
  aeadSeal,
  type CryptoProvider,
  createNobleCryptoProvider,
  createNodeCryptoProvider,
  createWebCryptoProvider,
} from '../src/index.js';
import { expectKosError, hex, loadVectors } from './helpers.js';

interface AeadVectorFile {
  testGroups: Array<{
    keySize: number;
    ivSize: number;
    tagSize: number;
    tests: Array<{
      tcId: number;
      key: string;
      iv: string;
      aad: string;
      msg: string;
      ct: string;
      tag: string;
      result: string;
    }>;
  }>;
}

const providers: CryptoProvider[] = [
  createNodeCryptoProvider(),
  createWebCryptoProvider(),
  createNobleCryptoProvider(),
];

function cases(file: string, keySize: number, ivSize: number) {
  const vectors = loadVectors<AeadVectorFile>(file);
  const accepted = vectors.testGroups.filter((g) => g.keySize === keySize && g.ivSize === ivSize && g.tagSize === 128);
  const refused = vectors.testGroups.filter((g) => !(g.keySize === keySize && g.ivSize === ivSize));
  return { accepted: accepted.flatMap((g) => g.tests), refused: refused.flatMap((g) => g.tests) };
}

describe.each(providers.map((provider) => [provider.name, provider] as const))('AEAD through %s', (_name, provider) => {
  describe('Wycheproof AES-GCM (256-bit key, 96-bit IV)', () => {
    const { accepted, refused } = cases('aes_gcm_test.json', 256, 96);

    it('has the vectors it claims to run', () => {
      expect(accepted.length).toBe(66);
      expect(accepted.some((t) => t.result === 'invalid')).toBe(true);
    });

    it.each(accepted.map((t) => [t.tcId, t] as const))('tcId %i', async (_id, t) => {
      const key = hex(t.key);
      const iv = hex(t.iv);
      const aad = hex(t.aad);
      const sealed = hex(t.ct + t.tag);
      if (t.result === 'invalid') {
        await expectKosError(() => aeadOpen(provider, 'A256GCM', key, iv, sealed, aad), 'ERR_DECRYPTION_FAILED');
        return;
      }
      expect(Buffer.from(await aeadOpen(provider, 'A256GCM', key, iv, sealed, aad)).toString('hex')).toBe(t.msg);
      expect(Buffer.from(await aeadSeal(provider, 'A256GCM', key, iv, hex(t.msg), aad)).toString('hex')).toBe(
        t.ct + t.tag,
      );
    });

    it('refuses every other key and IV size by policy', async () => {
      expect(refused.length).toBeGreaterThan(100);
      for (const t of refused) {
        const key = hex(t.key);
        const code = key.length === 32 ? 'ERR_INVALID_ARGUMENT' : 'ERR_INVALID_KEY';
        await expectKosError(() => aeadOpen(provider, 'A256GCM', key, hex(t.iv), hex(t.ct + t.tag), hex(t.aad)), code);
      }
    });
  });

  describe('Wycheproof XChaCha20-Poly1305 (192-bit nonce)', () => {
    const { accepted, refused } = cases('xchacha20_poly1305_test.json', 256, 192);

    it.each(accepted.map((t) => [t.tcId, t] as const))('tcId %i', async (_id, t) => {
      const sealed = hex(t.ct + t.tag);
      if (t.result === 'invalid') {
        await expectKosError(
          () => aeadOpen(provider, 'XC20P', hex(t.key), hex(t.iv), sealed, hex(t.aad)),
          'ERR_DECRYPTION_FAILED',
        );
        return;
      }
      expect(
        Buffer.from(await aeadOpen(provider, 'XC20P', hex(t.key), hex(t.iv), sealed, hex(t.aad))).toString('hex'),
      ).toBe(t.msg);
    });

    it('refuses other nonce sizes by policy', async () => {
      expect(refused.length).toBeGreaterThan(5);
      for (const t of refused) {
        await expectKosError(
          () => aeadOpen(provider, 'XC20P', hex(t.key), hex(t.iv), hex(t.ct + t.tag), hex(t.aad)),
          'ERR_INVALID_ARGUMENT',
        );
      }
    });
  });

  it('refuses algorithms outside the allow-list', async () => {
    const key = new Uint8Array(32);
    await expectKosError(
      () => aeadSeal(provider, 'A128GCM' as never, key, new Uint8Array(12), new Uint8Array(1), new Uint8Array()),
      'ERR_ALG_NOT_ALLOWED',
    );
  });
});

describe('native and @noble implementations agree', () => {
  const [node, web, noble] = providers as [CryptoProvider, CryptoProvider, CryptoProvider];

  it('on random keys, nonces, messages and associated data', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 12, maxLength: 12 }),
        fc.uint8Array({ maxLength: 2048 }),
        fc.uint8Array({ maxLength: 64 }),
        async (key, nonce, message, aad) => {
          const viaNode = await aeadSeal(node, 'A256GCM', key, nonce, message, aad);
          const viaNoble = await aeadSeal(noble, 'A256GCM', key, nonce, message, aad);
          const viaWeb = await aeadSeal(web, 'A256GCM', key, nonce, message, aad);
          expect(viaNoble).toEqual(viaNode);
          expect(viaWeb).toEqual(viaNode);
          expect(await aeadOpen(noble, 'A256GCM', key, nonce, viaNode, aad)).toEqual(message);
          expect(await aeadOpen(node, 'A256GCM', key, nonce, viaNoble, aad)).toEqual(message);
        },
      ),
      { numRuns: 200, seed: 42 },
    );
  });

  it('on HMAC-SHA256 and SHA-256', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 64 }),
        fc.uint8Array({ maxLength: 256 }),
        async (key, data) => {
          expect(await noble.hmacSha256(key, data)).toEqual(await node.hmacSha256(key, data));
          expect(await noble.sha256(data)).toEqual(await node.sha256(data));
        },
      ),
      { numRuns: 100, seed: 7 },
    );
  });
});
