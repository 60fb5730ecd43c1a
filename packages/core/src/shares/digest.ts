import { concatBytes, lengthPrefixed, toBase64url, u32be, utf8 } from '../bytes.js';
import type { CryptoProvider } from '../crypto/provider.js';

const SHARE_LABEL = utf8('KOS/v1/share\0');

export interface ShareBinding {
  readonly kid: string;
  readonly version: number;
  readonly setId: string;
  readonly nodeId: string;
  readonly x: number;
}

/**
 * The digest recorded for each share at split time (docs/wire-format.md §5):
 * SHA-256("KOS/v1/share" || 0x00 || lp(kid) || u32be(version) || lp(setId) || lp(nodeId) ||
 * u8(x) || lp(share)), lp = 2-byte big-endian length prefix. A share moved to another node,
 * set, version or key, or changed in any bit, no longer matches.
 */
export async function shareDigest(crypto: CryptoProvider, binding: ShareBinding, share: Uint8Array): Promise<string> {
  const bytes = concatBytes(
    SHARE_LABEL,
    lengthPrefixed(utf8(binding.kid)),
    u32be(binding.version),
    lengthPrefixed(utf8(binding.setId)),
    lengthPrefixed(utf8(binding.nodeId)),
    Uint8Array.of(binding.x),
    lengthPrefixed(share),
  );
  return toBase64url(await crypto.sha256(bytes));
}
