import { concatBytes, u32be, utf8 } from '../bytes.js';
import type { CryptoProvider } from '../crypto/provider.js';

const COMMIT_LABEL = utf8('KOS/v1/commit\0');
const KCV_LABEL = utf8('KOS/v1/kcv\0');

/**
 * Key commitment carried in every envelope: HMAC-SHA256(DEK, "KOS/v1/commit" || 0x00 ||
 * nonce). AES-GCM is not key-committing (a ciphertext can be crafted to open under two
 * keys); checking this value first means an envelope opens under one key only.
 */
export async function keyCommitment(crypto: CryptoProvider, dek: Uint8Array, nonce: Uint8Array): Promise<Uint8Array> {
  return crypto.hmacSha256(dek, commitmentMessage(nonce));
}

/** The message the key commitment authenticates: "KOS/v1/commit" || 0x00 || nonce. */
export function commitmentMessage(nonce: Uint8Array): Uint8Array {
  return concatBytes(COMMIT_LABEL, nonce);
}

/**
 * Key-check value of a key version: HMAC-SHA256(DEK, "KOS/v1/kcv" || 0x00 || kid || 0x00
 * || u32be(version)). Recorded at rotation; a rebuilt DEK is used only if it matches.
 */
export async function keyCheckValue(
  crypto: CryptoProvider,
  dek: Uint8Array,
  kid: string,
  version: number,
): Promise<Uint8Array> {
  return crypto.hmacSha256(dek, concatBytes(KCV_LABEL, utf8(kid), Uint8Array.of(0), u32be(version)));
}
