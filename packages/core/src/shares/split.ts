import { split } from 'shamir-secret-sharing';
import { toBase64url, wipe } from '../bytes.js';
import type { CryptoProvider } from '../crypto/provider.js';
import { KosError } from '../errors.js';
import type { StoredShare } from '../stores/share-store.js';
import { shareDigest } from './digest.js';
import { choosePlacement, type PlacementNode } from './placement.js';
import type { SharePlacement, ShareSetRecord } from './share-set.js';

export interface SplitInput {
  readonly crypto: CryptoProvider;
  readonly dek: Uint8Array;
  readonly kid: string;
  readonly version: number;
  /** `system` or the owning client id. */
  readonly owner: string;
  readonly n: number;
  readonly k: number;
  readonly nodes: readonly PlacementNode[];
  readonly now: number;
}

export interface SplitOutput {
  readonly record: ShareSetRecord;
  /** One share per placement, in placement order, each for the node named in the placement. */
  readonly shares: ReadonlyArray<{ readonly nodeId: string; readonly share: StoredShare }>;
}

/** A fresh random id that is valid everywhere ids are (files, Redis keys, URLs). */
export function randomId(crypto: CryptoProvider, prefix: string): string {
  return `${prefix}${toBase64url(crypto.randomBytes(16))}`;
}

export function assertThreshold(n: number, k: number, what: string): void {
  if (!Number.isInteger(n) || !Number.isInteger(k) || k < 2 || n < k || n > 255) {
    throw new KosError('ERR_INVALID_OPTIONS', `${what}: need integers 2 <= k <= n <= 255 (got n=${n}, k=${k})`);
  }
}

/**
 * Splits a DEK into a new share set of (n, k) on distinct nodes and records, for each share,
 * its node, its x and its digest (DESIGN invariant 9). Nothing is stored yet.
 */
export async function splitDek(input: SplitInput): Promise<SplitOutput> {
  assertThreshold(input.n, input.k, 'share set');
  const nodes = choosePlacement(input.nodes, input.n, input.k, input.crypto.randomBytes);
  const setId = randomId(input.crypto, 's');
  // shamir-secret-sharing refuses Node Buffers: hand it a plain Uint8Array copy.
  const secret = new Uint8Array(input.dek);
  const parts = await split(secret, input.n, input.k);
  wipe(secret);
  const placements: SharePlacement[] = [];
  const shares: Array<{ nodeId: string; share: StoredShare }> = [];
  for (const [index, value] of parts.entries()) {
    const node = nodes[index] as PlacementNode;
    const x = value[value.length - 1] as number;
    const shareId = `${setId}.${x}`;
    const digest = await shareDigest(
      input.crypto,
      { kid: input.kid, version: input.version, setId, nodeId: node.nodeId, x },
      value,
    );
    placements.push({ nodeId: node.nodeId, shareId, x, digest });
    shares.push({
      nodeId: node.nodeId,
      share: { shareId, kid: input.kid, version: input.version, setId, owner: input.owner, x, value },
    });
  }
  const record: ShareSetRecord = {
    setId,
    kid: input.kid,
    version: input.version,
    owner: input.owner,
    n: input.n,
    k: input.k,
    placements,
    createdAt: input.now,
  };
  return { record, shares };
}
