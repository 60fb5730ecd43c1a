import { assertId, fromBase64url, isValidId, KosError, type StoredShare } from '@kos/core';
import { corrupt } from './integrity-json.js';

/**
 * The shape every stored share must have, checked when a share is put (the caller's mistake)
 * and again when a file store reads it back (damage at rest): ids valid, version a positive
 * integer, x an integer 1–255 equal to the last byte of a value of at least two bytes
 * (`shamir-secret-sharing` appends x to the y bytes).
 */
function shareFieldProblem(share: {
  readonly version: unknown;
  readonly x: unknown;
  readonly value: Uint8Array;
}): string | undefined {
  if (typeof share.version !== 'number' || !Number.isSafeInteger(share.version) || share.version < 1) {
    return 'version must be a positive integer';
  }
  if (typeof share.x !== 'number' || !Number.isInteger(share.x) || share.x < 1 || share.x > 255) {
    return 'x must be an integer from 1 to 255';
  }
  if (share.value.length < 2) return 'value must hold at least one y byte and x';
  if (share.value[share.value.length - 1] !== share.x) return 'x must equal the last byte of value';
  return undefined;
}

/** Throws ERR_INVALID_ID or ERR_INVALID_ARGUMENT when `share` may not be stored. Never names share bytes. */
export function assertStorableShare(share: StoredShare): void {
  if (typeof share !== 'object' || share === null) {
    throw new KosError('ERR_INVALID_ARGUMENT', 'share must be an object');
  }
  assertId(share.shareId, 'shareId');
  assertId(share.kid, 'kid');
  assertId(share.setId, 'setId');
  assertId(share.owner, 'owner');
  if (!(share.value instanceof Uint8Array)) {
    throw new KosError('ERR_INVALID_ARGUMENT', 'value must be a Uint8Array');
  }
  const problem = shareFieldProblem(share);
  if (problem !== undefined) {
    throw new KosError('ERR_INVALID_ARGUMENT', `share ${share.shareId}: ${problem}`, {
      details: { shareId: share.shareId },
    });
  }
}

/**
 * Rebuilds a share read from storage (a record `encodeShareBody` wrote, already past the
 * integrity check) or throws ERR_STORE_CORRUPT naming the share and the reason: this catches a
 * well-formed but wrong record. Never names share bytes.
 */
export function storedShareFromRecord(fields: Readonly<Record<string, unknown>>, id: string): StoredShare {
  let value: Uint8Array;
  try {
    value = fromBase64url(fields.value as string, 'value');
  } catch {
    throw corrupt(id, 'value is not base64url');
  }
  const { shareId, kid, version, setId, owner, x } = fields;
  if (!isValidId(shareId) || !isValidId(kid) || !isValidId(setId) || !isValidId(owner)) {
    throw corrupt(id, 'an id is not valid');
  }
  const problem = shareFieldProblem({ version, x, value });
  if (problem !== undefined) throw corrupt(id, problem);
  return { shareId, kid, version: version as number, setId, owner, x: x as number, value };
}

/** A copy whose bytes the caller does not share with the store. */
export function copyShare(share: StoredShare): StoredShare {
  return {
    shareId: share.shareId,
    kid: share.kid,
    version: share.version,
    setId: share.setId,
    owner: share.owner,
    x: share.x,
    value: new Uint8Array(share.value),
  };
}
