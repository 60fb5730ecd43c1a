import { combine } from 'shamir-secret-sharing';
import { equalBytes, fromBase64url, wipe } from '../bytes.js';
import type { CryptoProvider } from '../crypto/provider.js';
import { keyCheckValue } from '../envelope/commitment.js';
import { KosError } from '../errors.js';
import { shareDigest } from './digest.js';
import { type GatherOptions, GatherTimeoutError, gatherFirst } from './gather.js';
import type { SharePlacement, ShareSetRecord } from './share-set.js';

/** What a node returned for a placement (its own claims, all checked). */
export interface ShareCandidate {
  readonly kid: string;
  readonly version: number;
  readonly setId: string;
  readonly x: number;
  readonly value: Uint8Array;
}

export type ShareFailureReason =
  | 'unavailable'
  | 'timeout'
  | 'missing'
  | 'x-zero'
  | 'x-mismatch'
  | 'metadata-mismatch'
  | 'length'
  | 'digest-mismatch';

export interface ShareFailure {
  readonly nodeId: string;
  readonly reason: ShareFailureReason;
  /** The error code the node answered with, when it answered with one. */
  readonly code?: string;
}

/** Raised by a fetch to mark a share as bad for a named reason. */
export class ShareRejected extends Error {
  override readonly name = 'ShareRejected';
  constructor(readonly reason: ShareFailureReason) {
    super(`share rejected: ${reason}`);
  }
}

/** Secret length + the x byte that shamir-secret-sharing appends. */
export const SHARE_BYTES = 33;

/**
 * Checks one fetched share against the set record (DESIGN invariant 9): metadata, x != 0, x
 * as assigned, length, and the digest bound to key id, version, set id, node and x.
 * Returns the failure reason, or undefined when the share is good.
 */
export async function verifyShare(
  crypto: CryptoProvider,
  set: Pick<ShareSetRecord, 'kid' | 'version' | 'setId'>,
  placement: SharePlacement,
  candidate: ShareCandidate | undefined,
): Promise<ShareFailureReason | undefined> {
  if (!candidate) return 'missing';
  if (candidate.kid !== set.kid || candidate.version !== set.version || candidate.setId !== set.setId) {
    return 'metadata-mismatch';
  }
  if (!(candidate.value instanceof Uint8Array) || candidate.value.length !== SHARE_BYTES) return 'length';
  const x = candidate.value[SHARE_BYTES - 1];
  if (x === 0 || candidate.x === 0) return 'x-zero';
  if (x !== placement.x || candidate.x !== placement.x) return 'x-mismatch';
  const digest = await shareDigest(
    crypto,
    { kid: set.kid, version: set.version, setId: set.setId, nodeId: placement.nodeId, x: placement.x },
    candidate.value,
  );
  let expected: Uint8Array;
  try {
    expected = fromBase64url(placement.digest, 'digest');
  } catch {
    return 'digest-mismatch';
  }
  return equalBytes(fromBase64url(digest, 'digest'), expected) ? undefined : 'digest-mismatch';
}

export interface RebuildInput extends GatherOptions {
  readonly crypto: CryptoProvider;
  readonly set: ShareSetRecord;
  /** The version's key-check value (base64url). */
  readonly kcv: string;
  /** Fetches the share of one placement from its node. */
  readonly fetch: (placement: SharePlacement, signal: AbortSignal) => Promise<ShareCandidate | undefined>;
  /** Classifies a fetch error (default: `timeout` for timeouts, `unavailable` otherwise). */
  readonly classify?: (error: unknown) => { reason: ShareFailureReason; code?: string };
}

export interface RebuildOutput {
  readonly dek: Uint8Array;
  /** Nodes whose shares were combined. */
  readonly usedNodes: readonly string[];
  /** Nodes that failed, and why (nothing secret). */
  readonly failures: readonly ShareFailure[];
}

/** Why a share fetch failed, from the error it raised. */
export function classifyShareError(error: unknown): { reason: ShareFailureReason; code?: string } {
  if (error instanceof ShareRejected) return { reason: error.reason };
  if (error instanceof GatherTimeoutError) return { reason: 'timeout' };
  if (error instanceof KosError) return { reason: 'unavailable', code: error.code };
  return { reason: 'unavailable' };
}

/**
 * Rebuilds a DEK from k verified shares of one set: fetches in parallel, skips and names
 * every bad node, refuses to combine fewer than k good shares (ERR_SHARES_INSUFFICIENT),
 * and checks the result against the key-check value (ERR_KEY_CHECK_FAILED). A wrong key
 * is never returned.
 */
export async function rebuildDek(input: RebuildInput): Promise<RebuildOutput> {
  const { crypto, set } = input;
  const classify = input.classify ?? classifyShareError;
  const result = await gatherFirst(
    set.placements,
    set.k,
    async (placement, signal) => {
      const candidate = await input.fetch(placement, signal);
      const reason = await verifyShare(crypto, set, placement, candidate);
      if (reason) throw new ShareRejected(reason);
      return (candidate as ShareCandidate).value;
    },
    input,
  );
  const failures: ShareFailure[] = result.failures.map(({ source, error }) => ({
    nodeId: source.nodeId,
    ...classify(error),
  }));
  if (result.successes.length < set.k) {
    for (const success of result.successes) wipe(success.value);
    throw new KosError(
      'ERR_SHARES_INSUFFICIENT',
      `only ${result.successes.length} of the ${set.k} shares needed could be verified`,
      {
        details: {
          kid: set.kid,
          version: set.version,
          needed: set.k,
          verified: result.successes.length,
          failures: failures.map((failure) => ({ ...failure })),
        },
      },
    );
  }
  const parts = result.successes.slice(0, set.k).map((success) => new Uint8Array(success.value));
  const dek = await combine(parts);
  wipe(...parts, ...result.successes.map((success) => success.value));
  const kcv = await keyCheckValue(crypto, dek, set.kid, set.version);
  if (!equalBytes(kcv, fromBase64url(input.kcv, 'kcv'))) {
    wipe(dek);
    throw new KosError('ERR_KEY_CHECK_FAILED', 'rebuilt key does not match its key-check value', {
      details: { kid: set.kid, version: set.version },
    });
  }
  return { dek, usedNodes: result.successes.slice(0, set.k).map((s) => s.source.nodeId), failures };
}
