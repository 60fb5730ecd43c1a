import { createCipheriv, createDecipheriv, createHash, createHmac, randomFillSync } from 'node:crypto';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { KosError } from '../errors.js';
import { nobleXChaChaOpen, nobleXChaChaSeal } from './noble-provider.js';
import type { CryptoProvider, KeyedHmacSha256 } from './provider.js';

const TAG_BYTES = 16;

function toBytes(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/**
 * Small random values (nonces, ids, keys) come from a pool refilled 4 KiB at a time: one
 * OpenSSL call per ~340 nonces instead of one each. Every byte is handed out once and the
 * pool is zeroed as it is consumed, so no key material lingers in it.
 */
const POOL_BYTES = 4096;
const pool = new Uint8Array(POOL_BYTES);
let poolOffset = POOL_BYTES;

function pooledRandomBytes(length: number): Uint8Array {
  if (length > 64) return randomFillSync(new Uint8Array(length));
  if (poolOffset + length > POOL_BYTES) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const out = pool.slice(poolOffset, poolOffset + length);
  pool.fill(0, poolOffset, poolOffset + length);
  poolOffset += length;
  return out;
}

/**
 * HMAC-SHA256 with the key's inner and outer pad states computed once: each message then costs
 * two SHA-256 blocks in JavaScript (@noble/hashes), no OpenSSL object per call (a createHmac
 * per 32-byte commitment costs more than the AES of a 1 KiB record). One scratch state is
 * reused; it is zeroed by each digest, and destroy zeroes the pad states.
 */
interface HmacState {
  update(data: Uint8Array): unknown;
  digestInto(out: Uint8Array): void;
  destroy(): void;
  _cloneInto(to?: HmacState): HmacState;
}

function keyedHmacSha256(key: Uint8Array): KeyedHmacSha256 {
  const keyed = hmac.create(sha256, key) as unknown as HmacState;
  let scratch: HmacState | undefined;
  return {
    mac(data) {
      const state = keyed._cloneInto(scratch);
      scratch = state;
      state.update(data);
      const out = new Uint8Array(32);
      state.digestInto(out);
      return out;
    },
    destroy() {
      keyed.destroy();
      scratch?.destroy();
    },
  };
}

/**
 * node:crypto (OpenSSL): the server hot path. AES-256-GCM is native; XChaCha20-Poly1305
 * has no OpenSSL binding and goes through @noble/ciphers.
 */
export function createNodeCryptoProvider(): CryptoProvider {
  return {
    name: 'node',
    aeadSeal(alg, key, nonce, plaintext, aad) {
      if (alg === 'XC20P') return nobleXChaChaSeal(key, nonce, plaintext, aad);
      const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad);
      const out = Buffer.allocUnsafe(plaintext.length + TAG_BYTES);
      const written = cipher.update(plaintext).copy(out, 0);
      const tail = cipher.final();
      tail.copy(out, written);
      cipher.getAuthTag().copy(out, written + tail.length);
      return toBytes(out);
    },
    aeadOpen(alg, key, nonce, sealed, aad) {
      if (alg === 'XC20P') return nobleXChaChaOpen(key, nonce, sealed, aad);
      if (sealed.length < TAG_BYTES) throw new KosError('ERR_DECRYPTION_FAILED', '');
      const body = sealed.subarray(0, sealed.length - TAG_BYTES);
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
        decipher.setAAD(aad);
        decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
        const head = decipher.update(body);
        const tail = decipher.final();
        return toBytes(tail.length === 0 ? head : Buffer.concat([head, tail]));
      } catch {
        throw new KosError('ERR_DECRYPTION_FAILED', '');
      }
    },
    hmacSha256: (key, data) => toBytes(createHmac('sha256', key).update(data).digest()),
    hmacSha256Keyed: keyedHmacSha256,
    sha256: (data) => toBytes(createHash('sha256').update(data).digest()),
    randomBytes: pooledRandomBytes,
  };
}
