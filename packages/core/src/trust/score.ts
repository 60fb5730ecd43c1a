import { KosError } from '../errors.js';

/** Trust scores are numbers from 0 to 100; anything else fails closed with ERR_SCORE_INVALID. */
export function assertScore(score: unknown): asserts score is number {
  if (typeof score !== 'number' || !Number.isFinite(score) || score < 0 || score > 100) {
    throw new KosError('ERR_SCORE_INVALID', 'trust score must be a finite number from 0 to 100');
  }
}
