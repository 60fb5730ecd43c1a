import { createCipheriv, createDecipheriv, createHash, createHmac, randomFillSync } from 'node:crypto';
import { equalBytes } from '../bytes.js';
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

/** SHA-256 round constants and initial hash value (FIPS 180-4 §4.2.2, §5.3.3). */
const K256 = Int32Array.from([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
  0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
  0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
  0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
  0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
  0xc67178f2,
]);
const IV256 = Int32Array.from([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);
/** The message schedule of the block being compressed; zeroed after each MAC. */
const schedule = new Int32Array(64);

/**
 * One SHA-256 compression (FIPS 180-4 §6.2.2) of the 64-byte `block` onto `state`, into
 * `out`. Straight-line 32-bit arithmetic: no branch or index depends on the data.
 */
function compress(state: Int32Array, block: Uint8Array, out: Int32Array): void {
  const w = schedule;
  for (let i = 0; i < 16; i++) {
    const j = 4 * i;
    w[i] =
      ((block[j] as number) << 24) |
      ((block[j + 1] as number) << 16) |
      ((block[j + 2] as number) << 8) |
      (block[j + 3] as number);
  }
  for (let i = 16; i < 64; i++) {
    const a = w[i - 15] as number;
    const b = w[i - 2] as number;
    const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
    const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
    w[i] = ((w[i - 16] as number) + s0 + (w[i - 7] as number) + s1) | 0;
  }
  let a = state[0] as number;
  let b = state[1] as number;
  let c = state[2] as number;
  let d = state[3] as number;
  let e = state[4] as number;
  let f = state[5] as number;
  let g = state[6] as number;
  let h = state[7] as number;
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + s1 + ((e & f) ^ (~e & g)) + (K256[i] as number) + (w[i] as number)) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  out[0] = ((state[0] as number) + a) | 0;
  out[1] = ((state[1] as number) + b) | 0;
  out[2] = ((state[2] as number) + c) | 0;
  out[3] = ((state[3] as number) + d) | 0;
  out[4] = ((state[4] as number) + e) | 0;
  out[5] = ((state[5] as number) + f) | 0;
  out[6] = ((state[6] as number) + g) | 0;
  out[7] = ((state[7] as number) + h) | 0;
}

/** Writes the eight state words big-endian into `out` at `at`. */
function wordsInto(words: Int32Array, out: Uint8Array, at: number): void {
  for (let i = 0; i < 8; i++) {
    const word = words[i] as number;
    out[at + 4 * i] = word >>> 24;
    out[at + 4 * i + 1] = word >>> 16;
    out[at + 4 * i + 2] = word >>> 8;
    out[at + 4 * i + 3] = word;
  }
}

/** Messages up to this length fit one block after the inner pad (with 0x80 and the 8-byte length). */
const ONE_BLOCK = 55;

interface KeyedState {
  /** HMAC of a message of at most ONE_BLOCK bytes, computed here. */
  oneBlock(data: Uint8Array): Uint8Array;
  /** HMAC of any message, by OpenSSL. */
  openssl(data: Uint8Array): Uint8Array;
  destroy(): void;
}

/** The pad states of `key` (RFC 2104: a key over 64 bytes is hashed first). */
function keyedState(key: Uint8Array): KeyedState {
  const block = new Uint8Array(64);
  const inner = new Int32Array(8);
  const outer = new Int32Array(8);
  const words = new Int32Array(8);
  const padKey = key.length > 64 ? toBytes(createHash('sha256').update(key).digest()) : key;
  for (let i = 0; i < 64; i++) block[i] = (padKey[i] ?? 0) ^ 0x36;
  compress(IV256, block, inner);
  for (let i = 0; i < 64; i++) block[i] = (block[i] as number) ^ 0x36 ^ 0x5c;
  compress(IV256, block, outer);
  block.fill(0);
  schedule.fill(0);
  if (padKey !== key) padKey.fill(0);
  return {
    oneBlock(data) {
      // Inner: H(K ^ ipad || data), the pad block already absorbed.
      block.set(data);
      block[data.length] = 0x80;
      block.fill(0, data.length + 1, 62);
      const innerBits = (64 + data.length) * 8;
      block[62] = innerBits >>> 8;
      block[63] = innerBits;
      compress(inner, block, words);
      // Outer: H(K ^ opad || inner digest), 96 bytes in all.
      wordsInto(words, block, 0);
      block[32] = 0x80;
      block.fill(0, 33, 62);
      block[62] = (96 * 8) >>> 8;
      block[63] = (96 * 8) & 0xff;
      compress(outer, block, words);
      const out = new Uint8Array(32);
      wordsInto(words, out, 0);
      block.fill(0);
      words.fill(0);
      schedule.fill(0);
      return out;
    },
    openssl: (data) => toBytes(createHmac('sha256', key).update(data).digest()),
    destroy() {
      inner.fill(0);
      outer.fill(0);
      words.fill(0);
      block.fill(0);
    },
  };
}

/**
 * The one-block path is checked once per process against OpenSSL, on a random key and a
 * random message of every length it takes; if it ever differed, OpenSSL would do every HMAC.
 */
let oneBlockVerified: boolean | undefined;
function oneBlockWorks(): boolean {
  if (oneBlockVerified === undefined) {
    const key = randomFillSync(new Uint8Array(32));
    const state = keyedState(key);
    let passed = true;
    for (let length = 0; length <= ONE_BLOCK && passed; length++) {
      const message = randomFillSync(new Uint8Array(length));
      passed = equalBytes(state.oneBlock(message), state.openssl(message));
    }
    state.destroy();
    key.fill(0);
    oneBlockVerified = passed;
  }
  return oneBlockVerified;
}

/**
 * HMAC-SHA256 (RFC 2104) keyed once: the inner and outer pad blocks are compressed when the key
 * is set, so a message of up to 55 bytes (a key commitment's is 26 or 38) costs two SHA-256
 * compressions and no object but the result. A createHmac per commitment costs more than the
 * AES of a 1 KiB record, and @noble/hashes' HMAC about twice this. Longer messages (and all, if
 * the self-test failed) go through createHmac. destroy zeroes the pad states; the scratch
 * block and schedule are zeroed after each message.
 */
function keyedHmacSha256(key: Uint8Array): KeyedHmacSha256 {
  const state = keyedState(key);
  let destroyed = false;
  return {
    mac(data) {
      if (destroyed) throw new KosError('ERR_INTERNAL', 'keyed HMAC used after destroy');
      return data.length <= ONE_BLOCK && oneBlockWorks() ? state.oneBlock(data) : state.openssl(data);
    },
    destroy() {
      destroyed = true;
      state.destroy();
    },
  };
}

/** For tests: the one-block path itself, whatever the self-test said. */
export function keyedHmacSha256OneBlockForTests(key: Uint8Array, data: Uint8Array): Uint8Array {
  const state = keyedState(key);
  try {
    return state.oneBlock(data);
  } finally {
    state.destroy();
  }
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
