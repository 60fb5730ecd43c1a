import type { KeyRecord, MetadataStore } from '@kos/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { delay, expectKosError } from './expect-kos-error.js';
import { makeAccess, makeKeyRecord, makeShareSet } from './fixtures.js';

export interface MetadataStoreHarness {
  readonly store: MetadataStore;
  /** Removes whatever the factory created (temp directories, connections). */
  cleanup(): Promise<void>;
}

/** Makes a fresh, empty store for one test. */
export type MetadataStoreFactory = () => Promise<MetadataStoreHarness>;

/** Tries to change a record handed out by a store; frozen records throw, which is fine too. */
function tryToMutate(mutate: () => void): void {
  try {
    mutate();
  } catch {
    // A frozen record refuses the change: exactly what isolation asks for.
  }
}

/** Awaits all calls (any rejection fails the test) and counts those that resolved `true`. */
async function countTrue(calls: readonly Promise<boolean>[]): Promise<number> {
  const results = await Promise.all(calls);
  return results.filter((result) => result).length;
}

/**
 * The behaviour every MetadataStore must have, as a vitest suite: key records with
 * compare-and-set, exact counters, share sets, access records, the replay cache and locks,
 * including what must hold when calls race. Call it at the top level of a test file, once
 * per store implementation.
 *
 * @example
 * runMetadataStoreConformance('memory', async () => ({ store: createMemoryMetadataStore(), cleanup: async () => {} }));
 */
export function runMetadataStoreConformance(name: string, factory: MetadataStoreFactory): void {
  describe(`MetadataStore conformance: ${name}`, () => {
    let harness: MetadataStoreHarness;
    let store: MetadataStore;

    beforeEach(async () => {
      harness = await factory();
      store = harness.store;
    });

    afterEach(async () => {
      await store.close?.();
      await harness.cleanup();
    });

    describe('key records', () => {
      it('an unknown key is undefined and a new store lists no keys', async () => {
        expect(await store.getKey('missing')).toBeUndefined();
        expect(await store.listKeys()).toEqual([]);
      });

      it('putKey with null creates the record at revision 1 and getKey returns it', async () => {
        const record = makeKeyRecord('k1');
        expect(await store.putKey(record, null)).toBe(1);
        expect(await store.getKey('k1')).toEqual({ value: record, revision: 1 });
        expect(await store.listKeys()).toEqual(['k1']);
      });

      it('putKey from the current revision writes and bumps the revision', async () => {
        await store.putKey(makeKeyRecord('k1', 1), null);
        const updated = makeKeyRecord('k1', 2);
        expect(await store.putKey(updated, 1)).toBe(2);
        expect(await store.getKey('k1')).toEqual({ value: updated, revision: 2 });
      });

      it('putKey from a stale revision fails with ERR_STORE_CONFLICT and changes nothing', async () => {
        await store.putKey(makeKeyRecord('k1', 1), null);
        await store.putKey(makeKeyRecord('k1', 2), 1);
        await expectKosError(() => store.putKey(makeKeyRecord('k1', 3), 1), 'ERR_STORE_CONFLICT');
        expect(await store.getKey('k1')).toEqual({ value: makeKeyRecord('k1', 2), revision: 2 });
      });

      it('putKey with null fails with ERR_STORE_CONFLICT when the key exists', async () => {
        await store.putKey(makeKeyRecord('k1', 1), null);
        await expectKosError(() => store.putKey(makeKeyRecord('k1', 9), null), 'ERR_STORE_CONFLICT');
        expect(await store.getKey('k1')).toEqual({ value: makeKeyRecord('k1', 1), revision: 1 });
      });

      it('putKey with a revision fails with ERR_STORE_CONFLICT when the key does not exist', async () => {
        await expectKosError(() => store.putKey(makeKeyRecord('k1'), 1), 'ERR_STORE_CONFLICT');
        expect(await store.getKey('k1')).toBeUndefined();
      });

      it('of 10 concurrent putKey calls from the same revision exactly one wins', async () => {
        await store.putKey(makeKeyRecord('k1', 0), null);
        const outcomes = await Promise.allSettled(
          Array.from({ length: 10 }, (_, i) => store.putKey(makeKeyRecord('k1', 100 + i), 1)),
        );
        const winners = outcomes.flatMap((outcome, i) => (outcome.status === 'fulfilled' ? [i] : []));
        expect(winners).toHaveLength(1);
        for (const outcome of outcomes) {
          if (outcome.status === 'rejected')
            expect((outcome.reason as { code?: string }).code).toBe('ERR_STORE_CONFLICT');
        }
        expect(await store.getKey('k1')).toEqual({ value: makeKeyRecord('k1', 100 + (winners[0] ?? -1)), revision: 2 });
      });

      it('two creations with null race: exactly one wins', async () => {
        const outcomes = await Promise.allSettled([
          store.putKey(makeKeyRecord('k1', 1), null),
          store.putKey(makeKeyRecord('k1', 2), null),
        ]);
        expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
      });

      it('lists every key', async () => {
        await store.putKey(makeKeyRecord('b-key'), null);
        await store.putKey(makeKeyRecord('a-key'), null);
        expect((await store.listKeys()).sort()).toEqual(['a-key', 'b-key']);
      });

      it('changing a record after putKey, or the one getKey returned, does not change the stored record', async () => {
        const record = makeKeyRecord('k1', 1);
        const input = structuredClone(record) as unknown as { updatedAt: number; versions: { state: string }[] };
        await store.putKey(input as unknown as KeyRecord, null);
        input.updatedAt = 999;
        input.versions[0]!.state = 'destroyed';
        const got = await store.getKey('k1');
        tryToMutate(() => {
          (got!.value as { updatedAt: number }).updatedAt = 777;
        });
        tryToMutate(() => {
          (got!.value.versions as unknown as { state: string }[])[0]!.state = 'retired';
        });
        expect(await store.getKey('k1')).toEqual({ value: record, revision: 1 });
      });

      it('refuses invalid key ids with ERR_INVALID_ID', async () => {
        await expectKosError(() => store.getKey('../k'), 'ERR_INVALID_ID');
        await expectKosError(() => store.putKey(makeKeyRecord('a/b'), null), 'ERR_INVALID_ID');
        await expectKosError(() => store.putKey(makeKeyRecord('.k'), null), 'ERR_INVALID_ID');
        expect(await store.listKeys()).toEqual([]);
      });
    });

    describe('operation counters', () => {
      it('an unknown counter is 0', async () => {
        expect(await store.getOps('k1', 1)).toBe(0);
      });

      it('addOps adds and resolves the new total, per key and per version', async () => {
        expect(await store.addOps('k1', 1, 5)).toBe(5);
        expect(await store.addOps('k1', 1, 3)).toBe(8);
        expect(await store.addOps('k1', 2, 1)).toBe(1);
        expect(await store.addOps('k2', 1, 10)).toBe(10);
        expect(await store.getOps('k1', 1)).toBe(8);
        expect(await store.getOps('k1', 2)).toBe(1);
        expect(await store.getOps('k2', 1)).toBe(10);
      });

      it('20 concurrent addOps give the exact total and each call sees a distinct running total', async () => {
        const counts = Array.from({ length: 20 }, (_, i) => i + 1);
        const totals = await Promise.all(counts.map((count) => store.addOps('k1', 1, count)));
        expect(await store.getOps('k1', 1)).toBe(210);
        expect(new Set(totals).size).toBe(20);
        expect(Math.max(...totals)).toBe(210);
      });

      it('refuses a negative or fractional count and an invalid version', async () => {
        await expectKosError(() => store.addOps('k1', 1, -1), 'ERR_INVALID_ARGUMENT');
        await expectKosError(() => store.addOps('k1', 1, 1.5), 'ERR_INVALID_ARGUMENT');
        await expectKosError(() => store.addOps('k1', 0, 1), 'ERR_INVALID_ARGUMENT');
        await expectKosError(() => store.addOps('../k', 1, 1), 'ERR_INVALID_ID');
        expect(await store.getOps('k1', 1)).toBe(0);
      });
    });

    describe('share sets', () => {
      const sets = [
        makeShareSet('set-a1-sys', 'ka', 1, 'system'),
        makeShareSet('set-a1-c1', 'ka', 1, 'client-1'),
        makeShareSet('set-a2-sys', 'ka', 2, 'system'),
        makeShareSet('set-b1-c1', 'kb', 1, 'client-1'),
      ];
      const ids = (list: readonly { setId: string }[]): string[] => list.map((set) => set.setId).sort();

      beforeEach(async () => {
        for (const set of sets) await store.putShareSet(set);
      });

      it('getShareSet returns the stored record; an unknown set is undefined', async () => {
        expect(await store.getShareSet('set-a1-c1')).toEqual(sets[1]);
        expect(await store.getShareSet('set-none')).toBeUndefined();
      });

      it('listShareSets without a filter, or with an empty one, lists every set', async () => {
        expect(ids(await store.listShareSets())).toEqual(ids(sets));
        expect(ids(await store.listShareSets({})).length).toBe(4);
      });

      it('filters by kid, version, owner and their combination', async () => {
        expect(ids(await store.listShareSets({ kid: 'ka' }))).toEqual(['set-a1-c1', 'set-a1-sys', 'set-a2-sys']);
        expect(ids(await store.listShareSets({ version: 1 }))).toEqual(['set-a1-c1', 'set-a1-sys', 'set-b1-c1']);
        expect(ids(await store.listShareSets({ owner: 'client-1' }))).toEqual(['set-a1-c1', 'set-b1-c1']);
        expect(ids(await store.listShareSets({ kid: 'ka', version: 1, owner: 'system' }))).toEqual(['set-a1-sys']);
        expect(await store.listShareSets({ kid: 'kc' })).toEqual([]);
      });

      it('putShareSet replaces a set with the same id', async () => {
        const replaced = { ...makeShareSet('set-a1-c1', 'ka', 1, 'client-1'), n: 5, k: 3 };
        await store.putShareSet(replaced);
        expect(await store.getShareSet('set-a1-c1')).toEqual(replaced);
        expect(await store.listShareSets()).toHaveLength(4);
      });

      it('deleteShareSet resolves true, then false, and the set is no longer listed', async () => {
        expect(await store.deleteShareSet('set-a1-c1')).toBe(true);
        expect(await store.deleteShareSet('set-a1-c1')).toBe(false);
        expect(await store.getShareSet('set-a1-c1')).toBeUndefined();
        expect(ids(await store.listShareSets({ owner: 'client-1' }))).toEqual(['set-b1-c1']);
      });

      it('changing a set after putShareSet does not change the stored set', async () => {
        const input = structuredClone(makeShareSet('set-x', 'kx', 1, 'system')) as unknown as {
          k: number;
          placements: { x: number }[];
        };
        await store.putShareSet(input as never);
        input.k = 99;
        input.placements[0]!.x = 99;
        expect(await store.getShareSet('set-x')).toEqual(makeShareSet('set-x', 'kx', 1, 'system'));
      });

      it('refuses invalid set ids and filter ids with ERR_INVALID_ID', async () => {
        await expectKosError(() => store.getShareSet('..'), 'ERR_INVALID_ID');
        await expectKosError(() => store.deleteShareSet('a/b'), 'ERR_INVALID_ID');
        await expectKosError(() => store.putShareSet(makeShareSet('../s', 'ka', 1, 'system')), 'ERR_INVALID_ID');
        await expectKosError(() => store.listShareSets({ kid: '../ka' }), 'ERR_INVALID_ID');
      });
    });

    describe('access records', () => {
      it('an unknown client has no record and a new store lists none', async () => {
        expect(await store.getAccess('client-1')).toBeUndefined();
        expect(await store.listAccess()).toEqual([]);
      });

      it('putAccess stores, replaces and lists records per client', async () => {
        await store.putAccess(makeAccess('client-1', ['k1']));
        await store.putAccess(makeAccess('client-2', ['*'], ['k9']));
        await store.putAccess(makeAccess('client-1', ['k1', 'k2']));
        expect(await store.getAccess('client-1')).toEqual(makeAccess('client-1', ['k1', 'k2']));
        const listed = await store.listAccess();
        expect([...listed].sort((a, b) => a.clientId.localeCompare(b.clientId))).toEqual([
          makeAccess('client-1', ['k1', 'k2']),
          makeAccess('client-2', ['*'], ['k9']),
        ]);
      });

      it('refuses invalid client ids with ERR_INVALID_ID', async () => {
        await expectKosError(() => store.getAccess('../c'), 'ERR_INVALID_ID');
        await expectKosError(() => store.putAccess(makeAccess('.c', [])), 'ERR_INVALID_ID');
        expect(await store.listAccess()).toEqual([]);
      });
    });

    describe('replay cache (markOnce)', () => {
      it('is true the first time an id is seen and false after, per scope', async () => {
        expect(await store.markOnce('grants', 'jti-1', 60)).toBe(true);
        expect(await store.markOnce('grants', 'jti-1', 60)).toBe(false);
        expect(await store.markOnce('grants', 'jti-2', 60)).toBe(true);
        expect(await store.markOnce('dpop', 'jti-1', 60)).toBe(true);
      });

      it('accepts arbitrary id strings and keeps them apart', async () => {
        const odd = ['../../etc/passwd', 'a/b', '.hidden', 'ünï cödé', 'x'.repeat(500)];
        for (const id of odd) expect(await store.markOnce('grants', id, 60)).toBe(true);
        for (const id of odd) expect(await store.markOnce('grants', id, 60)).toBe(false);
      });

      it('is true again once the TTL has passed', async () => {
        expect(await store.markOnce('grants', 'jti-1', 0.2)).toBe(true);
        expect(await store.markOnce('grants', 'jti-1', 0.2)).toBe(false);
        await delay(300);
        expect(await store.markOnce('grants', 'jti-1', 60)).toBe(true);
        expect(await store.markOnce('grants', 'jti-1', 60)).toBe(false);
      });

      it('of 20 concurrent calls with the same id exactly one is true', async () => {
        const calls = Array.from({ length: 20 }, () => store.markOnce('grants', 'jti-race', 60));
        expect(await countTrue(calls)).toBe(1);
      });

      it('refuses a TTL that is not a positive number', async () => {
        await expectKosError(() => store.markOnce('grants', 'jti-1', 0), 'ERR_INVALID_ARGUMENT');
        await expectKosError(() => store.markOnce('grants', 'jti-1', Number.NaN), 'ERR_INVALID_ARGUMENT');
        expect(await store.markOnce('grants', 'jti-1', 60)).toBe(true);
      });
    });

    describe('locks', () => {
      it('is exclusive: a second owner cannot take a held lock; the holder may renew it', async () => {
        expect(await store.acquireLock('rotate-k1', 'owner-a', 10_000)).toBe(true);
        expect(await store.acquireLock('rotate-k1', 'owner-b', 10_000)).toBe(false);
        expect(await store.acquireLock('rotate-k1', 'owner-a', 10_000)).toBe(true);
        expect(await store.acquireLock('rotate-k2', 'owner-b', 10_000)).toBe(true);
      });

      it('only the owner can release; after release another owner can take it', async () => {
        await store.acquireLock('rotate-k1', 'owner-a', 10_000);
        expect(await store.releaseLock('rotate-k1', 'owner-b')).toBe(false);
        expect(await store.acquireLock('rotate-k1', 'owner-b', 10_000)).toBe(false);
        expect(await store.releaseLock('rotate-k1', 'owner-a')).toBe(true);
        expect(await store.releaseLock('rotate-k1', 'owner-a')).toBe(false);
        expect(await store.acquireLock('rotate-k1', 'owner-b', 10_000)).toBe(true);
      });

      it('an expired lock can be taken by another owner, and the old owner can no longer release it', async () => {
        expect(await store.acquireLock('rotate-k1', 'owner-a', 100)).toBe(true);
        await delay(200);
        expect(await store.acquireLock('rotate-k1', 'owner-b', 10_000)).toBe(true);
        expect(await store.releaseLock('rotate-k1', 'owner-a')).toBe(false);
        expect(await store.acquireLock('rotate-k1', 'owner-a', 10_000)).toBe(false);
      });

      it('of 20 owners racing for a free lock exactly one gets it', async () => {
        const calls = Array.from({ length: 20 }, (_, i) => store.acquireLock('rotate-k1', `owner-${i}`, 10_000));
        expect(await countTrue(calls)).toBe(1);
      });

      it('accepts lock names that are not ids (they never become paths)', async () => {
        expect(await store.acquireLock('rotate:k1/../x', 'owner-a', 10_000)).toBe(true);
        expect(await store.acquireLock('rotate:k1/../x', 'owner-b', 10_000)).toBe(false);
        expect(await store.releaseLock('rotate:k1/../x', 'owner-a')).toBe(true);
      });
    });
  });
}
