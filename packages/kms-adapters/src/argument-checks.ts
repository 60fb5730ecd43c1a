import { KosError } from '@kos/core';

/** Throws ERR_INVALID_ARGUMENT unless `value` is a safe integer >= `min`. */
export function assertInteger(value: unknown, what: string, min: number): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new KosError('ERR_INVALID_ARGUMENT', `${what} must be an integer >= ${min}`);
  }
}

/** Throws ERR_INVALID_ARGUMENT unless `value` is a finite number > 0 (a TTL). */
export function assertPositiveFinite(value: unknown, what: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new KosError('ERR_INVALID_ARGUMENT', `${what} must be a finite number > 0`);
  }
}

/** Throws ERR_INVALID_ARGUMENT unless `value` is a non-empty string (names, owners, replay ids). */
export function assertNonEmptyString(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new KosError('ERR_INVALID_ARGUMENT', `${what} must be a non-empty string`);
  }
}

/** Throws ERR_INVALID_ARGUMENT unless `value` is an object (not null, not an array). */
export function assertRecord(value: unknown, what: string): asserts value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new KosError('ERR_INVALID_ARGUMENT', `${what} must be an object`);
  }
}
