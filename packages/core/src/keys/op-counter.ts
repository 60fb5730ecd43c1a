import type { MetadataStore } from '../stores/metadata-store.js';

/**
 * Per-version operation counting for nonce wear-out (NIST SP 800-38D §8.3: at most 2^32
 * random-nonce encryptions per key; KOS stops far below). Counts are reserved in blocks in
 * the metadata store, so the stored count is never below the real one (a crash wastes a
 * block, it never reuses one) and a seal costs a store round trip once per block.
 */
export class OpCounter {
  readonly #remaining = new Map<string, number>();
  readonly #pending = new Map<string, Promise<boolean>>();

  constructor(
    private readonly metadata: MetadataStore,
    private readonly maxOps: number,
    private readonly block: number,
  ) {}

  /**
   * Takes one operation from the block already reserved for (kid, version), without waiting:
   * true if taken, undefined if `take` must be called (nothing reserved, or worn out).
   */
  takeReserved(kid: string, version: number): true | undefined {
    const key = `${kid}\u0000${version}`;
    const remaining = this.#remaining.get(key) ?? 0;
    if (remaining <= 0) return undefined;
    this.#remaining.set(key, remaining - 1);
    return true;
  }

  /** Takes one operation on (kid, version); resolves false when the version is worn out. */
  async take(kid: string, version: number): Promise<boolean> {
    const key = `${kid}\u0000${version}`;
    for (;;) {
      const remaining = this.#remaining.get(key) ?? 0;
      if (remaining > 0) {
        this.#remaining.set(key, remaining - 1);
        return true;
      }
      if (remaining < 0) return false;
      let pending = this.#pending.get(key);
      if (!pending) {
        pending = this.#reserve(key, kid, version).finally(() => this.#pending.delete(key));
        this.#pending.set(key, pending);
      }
      if (!(await pending)) return false;
    }
  }

  async #reserve(key: string, kid: string, version: number): Promise<boolean> {
    const block = Math.min(this.block, this.maxOps);
    const total = await this.metadata.addOps(kid, version, block);
    if (total > this.maxOps) {
      this.#remaining.set(key, -1);
      return false;
    }
    this.#remaining.set(key, block);
    return true;
  }

  forget(kid: string, version: number): void {
    this.#remaining.delete(`${kid}\u0000${version}`);
  }
}
