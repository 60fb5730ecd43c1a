import type { AccessRecord, KeyRecord, ShareSetRecord, StoredShare } from '@kos/core';

/**
 * Ids every store must refuse with ERR_INVALID_ID: path traversal, separators, hidden names,
 * empty, too long, whitespace and control characters.
 */
export const INVALID_IDS: readonly string[] = [
  '',
  '.',
  '..',
  '../x',
  '..\\x',
  'a/b',
  'a\\b',
  '/abs',
  '.hidden',
  '-leading-dash',
  'a b',
  'a\u0000b',
  'a\nb',
  'x'.repeat(129),
];

/** A well-formed share: `length - 1` y bytes derived from `seed`, then x. */
export function makeShare(shareId: string, options: { x?: number; seed?: number; length?: number } = {}): StoredShare {
  const { x = 1, seed = 7, length = 33 } = options;
  const value = new Uint8Array(length);
  for (let i = 0; i < length - 1; i++) value[i] = (seed * 31 + i * 17) & 0xff;
  value[length - 1] = x;
  return { shareId, kid: 'kid-1', version: 1, setId: 'set-1', owner: 'system', x, value };
}

export function makeKeyRecord(kid: string, updatedAt = 1): KeyRecord {
  return {
    kid,
    primaryVersion: 1,
    minDecryptVersion: 1,
    versions: [{ version: 1, state: 'active', alg: 'A256GCM', kcv: 'a2N2', systemSetId: `${kid}-set-1`, createdAt: 1 }],
    createdAt: 1,
    updatedAt,
  };
}

export function makeShareSet(setId: string, kid: string, version: number, owner: string): ShareSetRecord {
  return {
    setId,
    kid,
    version,
    owner,
    n: 3,
    k: 2,
    placements: [1, 2, 3].map((x) => ({ nodeId: `node-${x}`, shareId: `${setId}-s${x}`, x, digest: `digest-${x}` })),
    createdAt: 1,
  };
}

export function makeAccess(clientId: string, allow: readonly string[], deny: readonly string[] = []): AccessRecord {
  return { clientId, allow, deny };
}
