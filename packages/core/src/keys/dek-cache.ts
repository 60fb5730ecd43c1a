import { LRUCache } from 'lru-cache';
import { wipe } from '../bytes.js';

export interface DekCacheOptions {
  /** Most DEKs held at once (default 1000). */
  readonly maxEntries?: number;
  /** How long a rebuilt DEK is kept (default 300 000 ms). */
  readonly ttlMs?: number;
}

/**
 * A bounded, expiring cache of rebuilt DEKs. It hands out copies (so eviction, which zeroes
 * the cached bytes, can never change a key in use) and zeroes every entry it drops.
 */
export class DekCache {
  readonly #cache: LRUCache<string, Uint8Array>;

  constructor(options: DekCacheOptions = {}) {
    const max = options.maxEntries ?? 1000;
    const ttl = options.ttlMs ?? 300_000;
    if (!Number.isInteger(max) || max < 1) throw new RangeError('dek cache maxEntries must be an integer >= 1');
    if (!Number.isFinite(ttl) || ttl <= 0) throw new RangeError('dek cache ttlMs must be > 0');
    this.#cache = new LRUCache({ max, ttl, dispose: (value) => wipe(value) });
  }

  static key(kid: string, version: number): string {
    return `${kid}\u0000${version}`;
  }

  /** A copy of the cached DEK, or undefined. The caller wipes the copy when done. */
  get(kid: string, version: number): Uint8Array | undefined {
    const value = this.#cache.get(DekCache.key(kid, version));
    return value ? new Uint8Array(value) : undefined;
  }

  /** Stores a copy of `dek`; the caller keeps (and wipes) its own. */
  set(kid: string, version: number, dek: Uint8Array): void {
    this.#cache.set(DekCache.key(kid, version), new Uint8Array(dek));
  }

  delete(kid: string, version: number): void {
    this.#cache.delete(DekCache.key(kid, version));
  }

  clear(): void {
    this.#cache.clear();
  }

  get size(): number {
    return this.#cache.size;
  }
}
