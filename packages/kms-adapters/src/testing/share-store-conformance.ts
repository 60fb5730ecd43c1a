import { isValidId, type ShareStore, type StoredShare } from '@kos/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { expectKosError } from './expect-kos-error.js';
import { INVALID_IDS, makeShare } from './fixtures.js';

export interface ShareStoreHarness {
  readonly store: ShareStore;
  /** Removes whatever the factory created (temp directories, connections). */
  cleanup(): Promise<void>;
}

/** Makes a fresh, empty store for one test. */
export type ShareStoreFactory = () => Promise<ShareStoreHarness>;

/**
 * The behaviour every ShareStore must have, as a vitest suite. Call it at the top level of a
 * test file, once per store implementation.
 *
 * @example
 * runShareStoreConformance('memory', async () => ({
 *   store: createMemoryShareStore({ nodeId: 'node-1' }),
 *   cleanup: async () => {},
 * }));
 */
export function runShareStoreConformance(name: string, factory: ShareStoreFactory): void {
  describe(`ShareStore conformance: ${name}`, () => {
    let harness: ShareStoreHarness;
    let store: ShareStore;

    beforeEach(async () => {
      harness = await factory();
      store = harness.store;
    });

    afterEach(async () => {
      await store.close?.();
      await harness.cleanup();
    });

    it('names its node with a valid id', () => {
      expect(isValidId(store.nodeId)).toBe(true);
    });

    it('get returns exactly the share that put stored, bytes included', async () => {
      const share = makeShare('share-1', { x: 3, seed: 11 });
      await store.put(share);
      const got = await store.get('share-1');
      expect(got).toEqual(share);
      expect(got?.value).toBeInstanceOf(Uint8Array);
      expect([...(got?.value ?? [])]).toEqual([...share.value]);
    });

    it('keeps metadata that differs from the defaults (kid, version, set, owner)', async () => {
      const share: StoredShare = {
        ...makeShare('share-2', { x: 200 }),
        kid: 'k9',
        version: 42,
        setId: 's9',
        owner: 'c-1',
      };
      await store.put(share);
      expect(await store.get('share-2')).toEqual(share);
    });

    it('put replaces an existing share with the same id', async () => {
      await store.put(makeShare('share-1', { x: 1, seed: 1 }));
      const newer = makeShare('share-1', { x: 2, seed: 2, length: 17 });
      await store.put(newer);
      expect(await store.get('share-1')).toEqual(newer);
    });

    it('get resolves undefined for a share the node does not hold', async () => {
      expect(await store.get('never-stored')).toBeUndefined();
    });

    it('delete resolves true when the share existed, then false, and the share is gone', async () => {
      await store.put(makeShare('share-1'));
      expect(await store.delete('share-1')).toBe(true);
      expect(await store.get('share-1')).toBeUndefined();
      expect(await store.delete('share-1')).toBe(false);
    });

    it('delete of one share leaves the others', async () => {
      const keep = makeShare('share-keep', { x: 5 });
      await store.put(keep);
      await store.put(makeShare('share-drop', { x: 6 }));
      await store.delete('share-drop');
      expect(await store.get('share-keep')).toEqual(keep);
    });

    it('changing the bytes given to put does not change the stored share', async () => {
      const share = makeShare('share-1', { x: 9 });
      const original = new Uint8Array(share.value);
      await store.put(share);
      share.value.fill(0);
      expect((await store.get('share-1'))?.value).toEqual(original);
    });

    it('changing the bytes returned by get does not change the stored share', async () => {
      const share = makeShare('share-1', { x: 9 });
      await store.put(share);
      const first = await store.get('share-1');
      first?.value.fill(0);
      expect((await store.get('share-1'))?.value).toEqual(makeShare('share-1', { x: 9 }).value);
    });

    it('stores 20 different shares written concurrently', async () => {
      const shares = Array.from({ length: 20 }, (_, i) => makeShare(`share-${i}`, { x: i + 1, seed: i }));
      await Promise.all(shares.map((share) => store.put(share)));
      const got = await Promise.all(shares.map((share) => store.get(share.shareId)));
      expect(got).toEqual(shares);
    });

    it.each(INVALID_IDS.map((id) => [JSON.stringify(id), id]))(
      'refuses the share id %s with ERR_INVALID_ID on put, get and delete',
      async (_label, id) => {
        await expectKosError(() => store.put(makeShare(id)), 'ERR_INVALID_ID');
        await expectKosError(() => store.get(id), 'ERR_INVALID_ID');
        await expectKosError(() => store.delete(id), 'ERR_INVALID_ID');
      },
    );

    it('refuses invalid kid, setId and owner with ERR_INVALID_ID', async () => {
      await expectKosError(() => store.put({ ...makeShare('share-1'), kid: '../k' }), 'ERR_INVALID_ID');
      await expectKosError(() => store.put({ ...makeShare('share-1'), setId: 'a/b' }), 'ERR_INVALID_ID');
      await expectKosError(() => store.put({ ...makeShare('share-1'), owner: '.owner' }), 'ERR_INVALID_ID');
      expect(await store.get('share-1')).toBeUndefined();
    });

    it('refuses malformed shares with ERR_INVALID_ARGUMENT and stores nothing', async () => {
      const good = makeShare('share-1', { x: 4 });
      const bad: StoredShare[] = [
        { ...good, x: 0, value: makeShare('share-1', { x: 0 }).value },
        { ...good, x: 256 },
        { ...good, x: 5 },
        { ...good, x: 4.5 },
        { ...good, version: 0 },
        { ...good, version: 1.5 },
        { ...good, value: new Uint8Array([4]) },
      ];
      for (const share of bad) await expectKosError(() => store.put(share), 'ERR_INVALID_ARGUMENT');
      expect(await store.get('share-1')).toBeUndefined();
    });

    it('rejects calls made with an aborted signal with ERR_STORE_IO, and an aborted put stores nothing', async () => {
      const signal = AbortSignal.abort();
      await store.put(makeShare('share-held'));
      await expectKosError(() => store.put(makeShare('share-1'), { signal }), 'ERR_STORE_IO');
      await expectKosError(() => store.get('share-held', { signal }), 'ERR_STORE_IO');
      await expectKosError(() => store.delete('share-held', { signal }), 'ERR_STORE_IO');
      expect(await store.get('share-1')).toBeUndefined();
      expect(await store.get('share-held')).toBeDefined();
    });

    it('accepts calls with a signal that is not aborted', async () => {
      const { signal } = new AbortController();
      const share = makeShare('share-1');
      await store.put(share, { signal });
      expect(await store.get('share-1', { signal })).toEqual(share);
      expect(await store.delete('share-1', { signal })).toBe(true);
    });

    it('never puts share bytes in an error message', async () => {
      const share = { ...makeShare('share-1', { x: 7, seed: 99 }), x: 8 };
      const hex = Buffer.from(share.value).toString('hex');
      const b64 = Buffer.from(share.value).toString('base64url');
      const error = await store.put(share).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(Error);
      const text = `${(error as Error).message} ${JSON.stringify(error)}`;
      expect(text).not.toContain(hex);
      expect(text).not.toContain(b64);
      expect(text).not.toContain(share.value.join(','));
    });
  });
}
