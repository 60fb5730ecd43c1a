import fc from 'fast-check';
import * as shamir from 'shamir-secret-sharing';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  choosePlacement,
  createNodeCryptoProvider,
  gatherFirst,
  keyCheckValue,
  placementCapacity,
  rebuildDek,
  type ShareCandidate,
  type SharePlacement,
  splitDek,
  toBase64url,
  verifyShare,
} from '../src/index.js';
import { expectKosError } from './helpers.js';

vi.mock('shamir-secret-sharing', { spy: true });

const crypto = createNodeCryptoProvider();
const nodes = Array.from({ length: 7 }, (_, i) => ({ nodeId: `node-${i + 1}` }));

async function makeSet(n: number, k: number) {
  const dek = crypto.randomBytes(32);
  const { record, shares } = await splitDek({
    crypto,
    dek,
    kid: 'orders',
    version: 2,
    owner: 'system',
    n,
    k,
    nodes,
    now: 0,
  });
  const kcv = toBase64url(await keyCheckValue(crypto, dek, 'orders', 2));
  const byShareId = new Map(shares.map(({ share }) => [share.shareId, { ...share, value: share.value.slice() }]));
  return { dek, record, kcv, byShareId };
}

/** A fetch over an in-memory map: a fake node network for unit tests of the rebuild function. */
function fetchFrom(byShareId: Map<string, ShareCandidate>, available: (p: SharePlacement) => boolean = () => true) {
  return async (placement: SharePlacement) => {
    if (!available(placement)) throw new Error('node down');
    return byShareId.get(placement.shareId);
  };
}

afterEach(() => {
  vi.mocked(shamir.combine).mockClear();
});

describe('splitting a DEK', () => {
  it('records n placements on distinct nodes with x as assigned and a digest each', async () => {
    const { record, byShareId } = await makeSet(5, 3);
    expect(record.placements).toHaveLength(5);
    expect(new Set(record.placements.map((p) => p.nodeId)).size).toBe(5);
    for (const placement of record.placements) {
      const share = byShareId.get(placement.shareId) as ShareCandidate;
      expect(share.value).toHaveLength(33);
      expect(share.value[32]).toBe(placement.x);
      expect(placement.x).not.toBe(0);
      expect(placement.digest).toMatch(/^[A-Za-z0-9_-]{43}$/);
    }
  });

  it('refuses thresholds the scheme cannot honour', async () => {
    for (const [n, k] of [
      [3, 1],
      [2, 3],
      [256, 3],
      [3.5, 2],
    ]) {
      await expectKosError(
        () =>
          splitDek({
            crypto,
            dek: new Uint8Array(32),
            kid: 'a',
            version: 1,
            owner: 'system',
            n: n!,
            k: k!,
            nodes,
            now: 0,
          }),
        'ERR_INVALID_OPTIONS',
      );
    }
  });
});

describe('rebuilding a DEK from verified shares', () => {
  it('any k of n shares rebuild the DEK; any k-1 are refused before combining (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 7 }).chain((n) => fc.tuple(fc.constant(n), fc.integer({ min: 2, max: n }))),
        fc.infiniteStream(fc.boolean()),
        async ([n, k], coin) => {
          const { dek, record, kcv, byShareId } = await makeSet(n, k);
          // A random subset of exactly k available nodes.
          const order = [...record.placements].sort(() => (coin.next().value ? 1 : -1));
          const up = new Set(order.slice(0, k).map((p) => p.nodeId));
          vi.mocked(shamir.combine).mockClear();
          const rebuilt = await rebuildDek({
            crypto,
            set: record,
            kcv,
            fetch: fetchFrom(byShareId, (p) => up.has(p.nodeId)),
          });
          expect(rebuilt.dek).toEqual(dek);
          expect(new Set(rebuilt.usedNodes)).toEqual(up);
          expect(shamir.combine).toHaveBeenCalledTimes(1);

          vi.mocked(shamir.combine).mockClear();
          up.delete(order[0]!.nodeId);
          await expectKosError(
            () => rebuildDek({ crypto, set: record, kcv, fetch: fetchFrom(byShareId, (p) => up.has(p.nodeId)) }),
            'ERR_SHARES_INSUFFICIENT',
          );
          expect(shamir.combine).not.toHaveBeenCalled();
        },
      ),
      { numRuns: 40, seed: 99 },
    );
  });

  it('names every bad node and builds the key from the good ones', async () => {
    const { dek, record, kcv, byShareId } = await makeSet(5, 3);
    const [a, b] = record.placements as [SharePlacement, SharePlacement];
    const shareA = byShareId.get(a.shareId)!;
    const flipped = shareA.value.slice();
    flipped[0] = (flipped[0] as number) ^ 1;
    byShareId.set(a.shareId, { ...shareA, value: flipped });
    byShareId.delete(b.shareId);
    const result = await rebuildDek({ crypto, set: record, kcv, fetch: fetchFrom(byShareId) });
    expect(result.dek).toEqual(dek);
    expect(result.failures).toEqual(
      expect.arrayContaining([
        { nodeId: a.nodeId, reason: 'digest-mismatch' },
        { nodeId: b.nodeId, reason: 'missing' },
      ]),
    );
  });

  it('checks the combined key against the key-check value and never returns a wrong key', async () => {
    const { record, byShareId } = await makeSet(3, 2);
    const wrongKcv = toBase64url(new Uint8Array(32));
    await expectKosError(
      () => rebuildDek({ crypto, set: record, kcv: wrongKcv, fetch: fetchFrom(byShareId) }),
      'ERR_KEY_CHECK_FAILED',
    );
  });

  it('stops at the first k good shares and aborts the rest', async () => {
    const { record, kcv, byShareId } = await makeSet(5, 2);
    const aborted: string[] = [];
    const started: string[] = [];
    const slow = new Set(record.placements.slice(0, 1).map((p) => p.nodeId));
    await rebuildDek({
      crypto,
      set: record,
      kcv,
      hedgeAfterMs: 20,
      fetch: (placement, signal) =>
        new Promise((resolve) => {
          started.push(placement.nodeId);
          if (!slow.has(placement.nodeId)) return resolve(byShareId.get(placement.shareId));
          signal.addEventListener('abort', () => {
            aborted.push(placement.nodeId);
            resolve(undefined);
          });
        }),
    });
    // The stalled node was hedged around (a third node asked) and then aborted.
    expect(started.length).toBe(3);
    expect(aborted).toEqual([...slow]);
  });
});

describe('verifying one share against its record', () => {
  async function fixture() {
    const made = await makeSet(3, 2);
    const placement = made.record.placements[0]!;
    const share = made.byShareId.get(placement.shareId)!;
    return { record: made.record, placement, share };
  }

  it('accepts the share recorded at split time', async () => {
    const { record, placement, share } = await fixture();
    expect(await verifyShare(crypto, record, placement, share)).toBeUndefined();
  });

  it.each([
    ['a missing share', () => undefined, 'missing'],
    [
      'x = 0',
      (s: ShareCandidate) => ({ ...s, x: 0, value: Uint8Array.from([...s.value.subarray(0, 32), 0]) }),
      'x-zero',
    ],
    [
      'another x',
      (s: ShareCandidate) => ({
        ...s,
        x: (s.x % 255) + 1,
        value: Uint8Array.from([...s.value.subarray(0, 32), (s.x % 255) + 1]),
      }),
      'x-mismatch',
    ],
    ['another set', (s: ShareCandidate) => ({ ...s, setId: 'other' }), 'metadata-mismatch'],
    ['another version', (s: ShareCandidate) => ({ ...s, version: 1 }), 'metadata-mismatch'],
    ['another key', (s: ShareCandidate) => ({ ...s, kid: 'invoices' }), 'metadata-mismatch'],
    ['a short value', (s: ShareCandidate) => ({ ...s, value: s.value.subarray(1) }), 'length'],
    [
      'one flipped bit',
      (s: ShareCandidate) => ({ ...s, value: Uint8Array.from(s.value, (b, i) => (i === 5 ? b ^ 0x10 : b)) }),
      'digest-mismatch',
    ],
  ] as const)('refuses %s', async (_what, change, reason) => {
    const { record, placement, share } = await fixture();
    expect(await verifyShare(crypto, record, placement, change(share) as ShareCandidate | undefined)).toBe(reason);
  });

  it('refuses a good share presented for another node', async () => {
    const { record, placement, share } = await fixture();
    const elsewhere = { ...placement, nodeId: 'node-9' };
    expect(await verifyShare(crypto, record, elsewhere, share)).toBe('digest-mismatch');
  });
});

describe('placement', () => {
  const zoned = [
    { nodeId: 'a1', zone: 'a' },
    { nodeId: 'a2', zone: 'a' },
    { nodeId: 'a3', zone: 'a' },
    { nodeId: 'b1', zone: 'b' },
    { nodeId: 'b2', zone: 'b' },
    { nodeId: 'c1', zone: 'c' },
  ];

  it('puts at most k-1 shares in one zone', () => {
    for (let i = 0; i < 200; i++) {
      const chosen = choosePlacement(zoned, 5, 3, crypto.randomBytes);
      expect(new Set(chosen.map((node) => node.nodeId)).size).toBe(5);
      for (const zone of ['a', 'b', 'c'])
        expect(chosen.filter((node) => node.zone === zone).length).toBeLessThanOrEqual(2);
    }
  });

  it('reports when n cannot be placed', () => {
    expect(placementCapacity(zoned, 2)).toBe(3);
    expect(() => choosePlacement(zoned, 4, 2, crypto.randomBytes)).toThrow(/only 3 can be placed/);
    expect(() => choosePlacement(nodes, 8, 3, crypto.randomBytes)).toThrow(/only 7 can be placed/);
  });
});

describe('gatherFirst', () => {
  it('times out an attempt that never answers and tries the next source', async () => {
    const result = await gatherFirst(
      ['stall', 'ok-1', 'ok-2'],
      2,
      (source, signal) =>
        source === 'stall'
          ? new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)))
          : Promise.resolve(source),
      { timeoutMs: 30 },
    );
    expect(result.successes.map((s) => s.value).sort()).toEqual(['ok-1', 'ok-2']);
    expect(result.failures.map((f) => f.source)).toEqual(['stall']);
  });

  it('resolves with what it has when sources run out', async () => {
    const result = await gatherFirst([1, 2, 3], 3, async (n) => {
      if (n === 2) throw new Error('down');
      return n;
    });
    expect(result.successes).toHaveLength(2);
    expect(result.failures).toHaveLength(1);
  });
});
