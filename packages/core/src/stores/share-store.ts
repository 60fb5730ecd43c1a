/**
 * One KMS node's storage of Shamir shares. Implementations: memory and file (and, later,
 * Redis and HTTP) in `@kos/kms-adapters`. A store keeps what it is given and checks its own
 * integrity at rest; whether a share is the *right* share is checked by KOS against the
 * digest recorded at split time, never trusted from the node.
 */

/** A share as stored on a node, with the metadata that binds it to its set. */
export interface StoredShare {
  /** Unique id of this share on its node. */
  readonly shareId: string;
  readonly kid: string;
  readonly version: number;
  readonly setId: string;
  /** `system` for KOS's own set, otherwise the client id that owns the set. */
  readonly owner: string;
  /** The x coordinate (1–255); also the last byte of `value`. */
  readonly x: number;
  /** Share bytes as produced by `shamir-secret-sharing`: y values followed by x. */
  readonly value: Uint8Array;
}

export interface StoreCallOptions {
  /** Aborts the call; implementations reject with ERR_STORE_IO when aborted. */
  readonly signal?: AbortSignal;
}

export interface ShareStore {
  /** The node this store is (unique among the nodes KOS is configured with). */
  readonly nodeId: string;
  /** Optional failure zone (rack, AZ); KOS keeps at most k-1 shares of a set per zone. */
  readonly zone?: string | undefined;
  /** Stores (or replaces) a share durably before resolving. */
  put(share: StoredShare, options?: StoreCallOptions): Promise<void>;
  /** The share, or `undefined` when the node does not hold it. */
  get(shareId: string, options?: StoreCallOptions): Promise<StoredShare | undefined>;
  /** Deletes a share; resolves `true` when it existed. */
  delete(shareId: string, options?: StoreCallOptions): Promise<boolean>;
  /** Releases resources (connections, handles). */
  close?(): Promise<void>;
}
