import { KosError } from '../errors.js';

/**
 * Identifiers that become file names, Redis keys and URL segments: letters, digits, `.`,
 * `_`, `-`, starting with a letter or digit, at most 128 characters. No `/`, no `..`
 * segment, no leading dot: safe as a path component on every platform.
 */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function isValidId(value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value);
}

/** Throws ERR_INVALID_ID naming `what` when `value` is not a valid identifier. */
export function assertId(value: unknown, what: string): asserts value is string {
  if (!isValidId(value)) {
    throw new KosError('ERR_INVALID_ID', `${what} must match ${ID_PATTERN.source}`);
  }
}
