import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createNodeCryptoProvider } from '../src/index.js';

describe('the node provider’s keyed HMAC-SHA256', () => {
  const provider = createNodeCryptoProvider();
  const keyed = provider.hmacSha256Keyed;

  it('gives exactly the HMAC-SHA256 of OpenSSL, for any key and message, message after message', () => {
    expect(keyed).toBeDefined();
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 100 }),
        fc.array(fc.uint8Array({ maxLength: 150 }), { minLength: 1, maxLength: 5 }),
        (key, messages) => {
          const mac = keyed?.(key);
          try {
            for (const message of messages) {
              const expected = createHmac('sha256', key).update(message).digest();
              expect(Buffer.from(mac?.mac(message) ?? [])).toEqual(expected);
              expect(Buffer.from(provider.hmacSha256(key, message) as Uint8Array)).toEqual(expected);
            }
          } finally {
            mac?.destroy();
          }
        },
      ),
      { seed: 7, numRuns: 300 },
    );
  });

  it('matches the RFC 4231 test case 2', () => {
    const mac = keyed?.(new TextEncoder().encode('Jefe'));
    expect(Buffer.from(mac?.mac(new TextEncoder().encode('what do ya want for nothing?')) ?? []).toString('hex')).toBe(
      '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    );
    mac?.destroy();
  });

  it('cannot be used once destroyed', () => {
    const mac = keyed?.(new Uint8Array(32).fill(7));
    mac?.mac(new Uint8Array(26));
    mac?.destroy();
    expect(() => mac?.mac(new Uint8Array(26))).toThrow();
  });
});
