import { KosError } from '@kos/core';
import type { RequirePersistence } from './redis-persistence.js';

/** Default prefix of every key a Redis store writes. */
export const DEFAULT_KEY_PREFIX = 'kos:';
/** Letters, digits, `.`, `_`, `:`, `-`; no braces, so the stores' `{hash tags}` stay the first in each key. */
const KEY_PREFIX_PATTERN = /^[A-Za-z0-9._:-]{0,64}$/;
const PERSISTENCE_MODES: readonly RequirePersistence[] = ['refuse', 'warn', 'off'];

/** The options both Redis stores take besides the client, checked once at construction. */
export interface CheckedRedisStoreOptions {
  readonly keyPrefix: string;
  readonly requirePersistence: RequirePersistence;
  readonly onWarning: ((message: string) => void) | undefined;
}

export function checkRedisStoreOptions(
  options: { readonly keyPrefix?: unknown; readonly requirePersistence?: unknown; readonly onWarning?: unknown },
  what: string,
): CheckedRedisStoreOptions {
  const keyPrefix = options.keyPrefix ?? DEFAULT_KEY_PREFIX;
  if (typeof keyPrefix !== 'string' || !KEY_PREFIX_PATTERN.test(keyPrefix)) {
    throw new KosError(
      'ERR_INVALID_OPTIONS',
      `${what}: keyPrefix must match ${KEY_PREFIX_PATTERN.source} (no braces or spaces)`,
      { details: { option: 'keyPrefix' } },
    );
  }
  const requirePersistence = options.requirePersistence ?? 'warn';
  if (!PERSISTENCE_MODES.includes(requirePersistence as RequirePersistence)) {
    throw new KosError('ERR_INVALID_OPTIONS', `${what}: requirePersistence must be 'refuse', 'warn' or 'off'`, {
      details: { option: 'requirePersistence' },
    });
  }
  const { onWarning } = options;
  if (onWarning !== undefined && typeof onWarning !== 'function') {
    throw new KosError('ERR_INVALID_OPTIONS', `${what}: onWarning must be a function when given`, {
      details: { option: 'onWarning' },
    });
  }
  return {
    keyPrefix,
    requirePersistence: requirePersistence as RequirePersistence,
    onWarning: onWarning as ((message: string) => void) | undefined,
  };
}
