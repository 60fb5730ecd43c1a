import { isValidId, KosError } from '@kos/core';

/** Throws ERR_INVALID_OPTIONS unless `options` is a plain object. */
export function assertOptionsObject(options: unknown, what: string): asserts options is Record<string, unknown> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new KosError('ERR_INVALID_OPTIONS', `${what} options must be an object`);
  }
}

/** The node id and optional zone every share store takes, checked once at construction. */
export function checkNodeOptions(
  options: { readonly nodeId?: unknown; readonly zone?: unknown },
  what: string,
): { nodeId: string; zone: string | undefined } {
  if (!isValidId(options.nodeId)) {
    throw new KosError('ERR_INVALID_OPTIONS', `${what}: nodeId must be a valid id`, { details: { option: 'nodeId' } });
  }
  if (options.zone !== undefined && !isValidId(options.zone)) {
    throw new KosError('ERR_INVALID_OPTIONS', `${what}: zone must be a valid id when given`, {
      details: { option: 'zone' },
    });
  }
  return { nodeId: options.nodeId, zone: options.zone };
}

/** A directory option: a non-empty string without NUL bytes. */
export function checkDirOption(dir: unknown, what: string): string {
  if (typeof dir !== 'string' || dir.length === 0 || dir.includes('\0')) {
    throw new KosError('ERR_INVALID_OPTIONS', `${what}: dir must be a non-empty path`, { details: { option: 'dir' } });
  }
  return dir;
}
