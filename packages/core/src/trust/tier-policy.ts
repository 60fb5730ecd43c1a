import { KosError } from '../errors.js';
import { assertThreshold } from '../shares/split.js';
import { assertScore } from './score.js';

export type Tier = 'high' | 'medium' | 'low';

/** Share parameters for medium-tier clients whose score is at least `minScore`. */
export interface ShareBand {
  readonly minScore: number;
  readonly n: number;
  readonly k: number;
}

export interface TierPolicyOptions {
  /** Scores strictly above this are high tier (default 80). */
  readonly highAbove?: number;
  /** Scores from this up to `highAbove` inclusive are medium tier (default 50). */
  readonly mediumFrom?: number;
  /** Scores strictly below this are denied outright (default: none). */
  readonly denyBelow?: number;
  /**
   * (n, k) for medium-tier clients by score; the band with the greatest `minScore` not above
   * the client's score applies. The first band must start at `mediumFrom`.
   * Default: 50–64 → n 5, k 4; 65–80 → n 5, k 3 (lower trust needs more nodes to agree).
   */
  readonly shareBands?: readonly ShareBand[];
}

/** An explainable decision: which tier, why (score, band) and, for medium, which (n, k). */
export interface TierDecision {
  readonly tier: Tier;
  readonly score: number;
  readonly band: string;
  readonly n?: number;
  readonly k?: number;
}

export interface TierPolicy {
  readonly options: Readonly<Required<Omit<TierPolicyOptions, 'denyBelow'>>> & { readonly denyBelow?: number };
  /** Decides the tier; throws ERR_SCORE_INVALID or ERR_SCORE_BELOW_FLOOR. */
  decide(score: unknown): TierDecision;
  /** The largest n any medium client can get (to check the node count at start-up). */
  readonly maxShares: number;
}

export const DEFAULT_SHARE_BANDS: readonly ShareBand[] = Object.freeze([
  Object.freeze({ minScore: 50, n: 5, k: 4 }),
  Object.freeze({ minScore: 65, n: 5, k: 3 }),
]);

function invalid(message: string): KosError {
  return new KosError('ERR_INVALID_OPTIONS', `tier policy: ${message}`);
}

function checkBoundary(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 100) {
    throw invalid(`${name} must be a number from 0 to 100`);
  }
  return value;
}

/**
 * Trust bands (DESIGN: > 80 high, 50–80 medium, < 50 low; 50 and 80 are medium). Options are
 * validated here, once; the caller's object is not kept or mutated.
 */
export function createTierPolicy(options: TierPolicyOptions = {}): TierPolicy {
  const highAbove = checkBoundary(options.highAbove ?? 80, 'highAbove');
  const mediumFrom = checkBoundary(options.mediumFrom ?? 50, 'mediumFrom');
  if (mediumFrom > highAbove) throw invalid('mediumFrom must not exceed highAbove');
  const denyBelow = options.denyBelow === undefined ? undefined : checkBoundary(options.denyBelow, 'denyBelow');
  if (denyBelow !== undefined && denyBelow > mediumFrom) throw invalid('denyBelow must not exceed mediumFrom');
  const bands = [...(options.shareBands ?? DEFAULT_SHARE_BANDS)].map((band) => ({ ...band }));
  if (bands.length === 0) throw invalid('shareBands must not be empty');
  bands.sort((a, b) => a.minScore - b.minScore);
  for (const band of bands) {
    checkBoundary(band.minScore, 'shareBands[].minScore');
    if (band.minScore < mediumFrom || band.minScore > highAbove) {
      throw invalid('every shareBands[].minScore must lie in the medium band');
    }
    assertThreshold(band.n, band.k, 'tier policy: shareBands[]');
  }
  if (bands[0]?.minScore !== mediumFrom) throw invalid('the first share band must start at mediumFrom');
  if (new Set(bands.map((band) => band.minScore)).size !== bands.length) {
    throw invalid('shareBands[].minScore values must be distinct');
  }
  const frozenBands = Object.freeze(bands.map((band) => Object.freeze(band)));
  const resolved = Object.freeze({
    highAbove,
    mediumFrom,
    shareBands: frozenBands,
    ...(denyBelow === undefined ? {} : { denyBelow }),
  });

  // Built once: a decision per request need not build its band's name again.
  const highBand = `high:>${highAbove}`;
  const lowBand = `low:<${mediumFrom}`;
  return {
    options: resolved,
    maxShares: Math.max(...bands.map((band) => band.n)),
    decide(score: unknown): TierDecision {
      assertScore(score);
      if (denyBelow !== undefined && score < denyBelow) {
        throw new KosError('ERR_SCORE_BELOW_FLOOR', 'trust score is below the minimum this service accepts');
      }
      if (score > highAbove) return { tier: 'high', score, band: highBand };
      if (score < mediumFrom) return { tier: 'low', score, band: lowBand };
      let index = 0;
      for (let i = 0; i < frozenBands.length; i++) {
        if ((frozenBands[i] as ShareBand).minScore <= score) index = i;
      }
      const band = frozenBands[index] as ShareBand;
      const upper = frozenBands[index + 1]?.minScore;
      const label = upper === undefined ? `medium:${band.minScore}-${highAbove}` : `medium:${band.minScore}-<${upper}`;
      return { tier: 'medium', score, band: label, n: band.n, k: band.k };
    },
  };
}
