import { describe, expect, it } from 'vitest';
import { createTierPolicy } from '../src/index.js';
import { expectKosError } from './helpers.js';

describe('tier policy (defaults: > 80 high, 50–80 medium, < 50 low)', () => {
  const policy = createTierPolicy();

  it.each([
    [0, 'low'],
    [49, 'low'],
    [49.99, 'low'],
    [50, 'medium'],
    [64.5, 'medium'],
    [80, 'medium'],
    [80.01, 'high'],
    [81, 'high'],
    [100, 'high'],
  ] as const)('score %d is %s', (score, tier) => {
    expect(policy.decide(score).tier).toBe(tier);
  });

  it('explains the decision: score, band, and (n, k) for medium', () => {
    expect(policy.decide(55)).toEqual({ tier: 'medium', score: 55, band: 'medium:50-<65', n: 5, k: 4 });
    expect(policy.decide(65)).toEqual({ tier: 'medium', score: 65, band: 'medium:65-80', n: 5, k: 3 });
    expect(policy.decide(90)).toEqual({ tier: 'high', score: 90, band: 'high:>80' });
    expect(policy.decide(10)).toEqual({ tier: 'low', score: 10, band: 'low:<50' });
  });

  it.each([
    ['missing', undefined],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['negative', -1],
    ['above 100', 101],
    ['a numeric string', '90'],
    ['null', null],
  ])('fails closed on a %s score', async (_what, score) => {
    await expectKosError(() => policy.decide(score), 'ERR_SCORE_INVALID');
  });

  it('denies scores below the optional floor', async () => {
    const strict = createTierPolicy({ denyBelow: 20 });
    await expectKosError(() => strict.decide(19), 'ERR_SCORE_BELOW_FLOOR');
    expect(strict.decide(20).tier).toBe('low');
  });

  it('takes boundaries and share bands from configuration', () => {
    const custom = createTierPolicy({
      highAbove: 90,
      mediumFrom: 40,
      shareBands: [
        { minScore: 40, n: 7, k: 5 },
        { minScore: 70, n: 4, k: 2 },
      ],
    });
    expect(custom.decide(85)).toMatchObject({ tier: 'medium', n: 4, k: 2 });
    expect(custom.decide(40)).toMatchObject({ tier: 'medium', n: 7, k: 5 });
    expect(custom.decide(39).tier).toBe('low');
    expect(custom.maxShares).toBe(7);
  });

  it.each([
    ['mediumFrom above highAbove', { mediumFrom: 90, highAbove: 80 }],
    ['a boundary outside 0–100', { highAbove: 120 }],
    ['a floor above the medium band', { denyBelow: 60 }],
    ['k above n', { shareBands: [{ minScore: 50, n: 2, k: 3 }] }],
    ['k of 1', { shareBands: [{ minScore: 50, n: 3, k: 1 }] }],
    ['bands that do not start at mediumFrom', { shareBands: [{ minScore: 60, n: 3, k: 2 }] }],
    [
      'a band outside the medium range',
      {
        shareBands: [
          { minScore: 50, n: 3, k: 2 },
          { minScore: 90, n: 3, k: 2 },
        ],
      },
    ],
    ['no bands', { shareBands: [] }],
  ])('refuses %s at construction', async (_what, options) => {
    await expectKosError(() => createTierPolicy(options), 'ERR_INVALID_OPTIONS');
  });

  it('does not keep or mutate the caller options', () => {
    const bands = [{ minScore: 50, n: 3, k: 2 }];
    const custom = createTierPolicy({ shareBands: bands });
    bands[0]!.n = 99;
    expect(custom.decide(60).n).toBe(3);
    expect(Object.isFrozen(custom.options.shareBands)).toBe(true);
  });
});
