import { assertId, type ShareStore, type StoreCallOptions, type StoredShare } from '@kos/core';
import { throwIfAborted } from './abort.js';
import { assertStorableShare, copyShare } from './share-validation.js';
import { assertOptionsObject, checkNodeOptions } from './store-options.js';

export interface MemoryShareStoreOptions {
  /** This node's id (a valid KOS id, unique among configured nodes). */
  readonly nodeId: string;
  /** Optional failure zone (a valid KOS id). */
  readonly zone?: string;
}

/**
 * A share store that lives in a Map: for tests and single-process demos, never durable.
 * Shares are copied on the way in and out, so callers can never change stored bytes.
 *
 * @throws KosError ERR_INVALID_OPTIONS when `nodeId` or `zone` is not a valid id.
 * @example
 * const store = createMemoryShareStore({ nodeId: 'node-1' });
 * await store.put(share);
 * const again = await store.get(share.shareId);
 */
export function createMemoryShareStore(options: MemoryShareStoreOptions): ShareStore {
  assertOptionsObject(options, 'createMemoryShareStore');
  const { nodeId, zone } = checkNodeOptions(options, 'createMemoryShareStore');
  const shares = new Map<string, StoredShare>();

  return {
    nodeId,
    zone,
    async put(share: StoredShare, callOptions?: StoreCallOptions): Promise<void> {
      throwIfAborted(callOptions?.signal, 'put');
      assertStorableShare(share);
      shares.set(share.shareId, copyShare(share));
    },
    async get(shareId: string, callOptions?: StoreCallOptions): Promise<StoredShare | undefined> {
      throwIfAborted(callOptions?.signal, 'get');
      assertId(shareId, 'shareId');
      const share = shares.get(shareId);
      return share === undefined ? undefined : copyShare(share);
    },
    async delete(shareId: string, callOptions?: StoreCallOptions): Promise<boolean> {
      throwIfAborted(callOptions?.signal, 'delete');
      assertId(shareId, 'shareId');
      return shares.delete(shareId);
    },
  };
}
