import { KosError } from '@kos/core';

/** Rejects an aborted call with ERR_STORE_IO, as the store interfaces require. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) {
    throw new KosError('ERR_STORE_IO', `${what} aborted`, { cause: signal.reason });
  }
}
