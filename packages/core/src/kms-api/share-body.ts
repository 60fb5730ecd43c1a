import { fromBase64url, toBase64url } from '../bytes.js';
import { KosError } from '../errors.js';
import { isValidId } from '../stores/ids.js';
import type { StoredShare } from '../stores/share-store.js';

/**
 * The KMS node HTTP API's share representation (docs/kms-api.md §4), shared by the node
 * server, the HTTP share store and the browser opener.
 */

/** Routes under a node's base URL. */
export const KMS_API_PREFIX = '/v1';
export const SHARES_PATH = `${KMS_API_PREFIX}/shares/`;
export const HEALTH_PATH = `${KMS_API_PREFIX}/health`;
/** Authorization scheme for service tokens (grants use `Bearer` or `DPoP`). */
export const SERVICE_AUTH_SCHEME = 'KOS-Service';
/** Largest body a node accepts or a client reads for one share. */
export const MAX_SHARE_BODY_BYTES = 16 * 1024;

/** JSON form of a share on the wire. */
export interface ShareBody {
  readonly shareId: string;
  readonly kid: string;
  readonly version: number;
  readonly setId: string;
  readonly owner: string;
  readonly x: number;
  /** base64url share bytes (33 for a 32-byte DEK). */
  readonly value: string;
}

export function encodeShareBody(share: StoredShare): ShareBody {
  return {
    shareId: share.shareId,
    kid: share.kid,
    version: share.version,
    setId: share.setId,
    owner: share.owner,
    x: share.x,
    value: toBase64url(share.value),
  };
}

/**
 * Parses and checks a share body; throws `code` (ERR_KMS_BAD_BODY on clients,
 * ERR_INVALID_ARGUMENT on the node) naming the bad field, never echoing the value.
 */
export function decodeShareBody(input: unknown, code: 'ERR_KMS_BAD_BODY' | 'ERR_INVALID_ARGUMENT'): StoredShare {
  const bad = (field: string) => new KosError(code, `share body: ${field} is missing or invalid`);
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw bad('body');
  const body = input as Record<string, unknown>;
  for (const field of ['shareId', 'kid', 'setId', 'owner'] as const) {
    if (!isValidId(body[field])) throw bad(field);
  }
  const { version, x } = body;
  if (!Number.isInteger(version) || (version as number) < 1 || (version as number) > 0xffff_ffff) throw bad('version');
  if (!Number.isInteger(x) || (x as number) < 1 || (x as number) > 255) throw bad('x');
  if (typeof body.value !== 'string' || body.value.length > 1024) throw bad('value');
  let value: Uint8Array;
  try {
    value = fromBase64url(body.value, 'value');
  } catch {
    throw bad('value');
  }
  if (value.length < 2 || value[value.length - 1] !== x) throw bad('value');
  return {
    shareId: body.shareId as string,
    kid: body.kid as string,
    version: version as number,
    setId: body.setId as string,
    owner: body.owner as string,
    x: x as number,
    value,
  };
}

/** `https://node/base` + `/v1/shares/<id>`. */
export function shareUrl(baseUrl: string, shareId: string): string {
  return `${baseUrl.replace(/\/+$/, '')}${SHARES_PATH}${encodeURIComponent(shareId)}`;
}
