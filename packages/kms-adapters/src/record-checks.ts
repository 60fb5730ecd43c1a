import {
  type AccessRecord,
  assertId,
  type KeyRecord,
  KosError,
  type ShareSetFilter,
  type ShareSetRecord,
} from '@kos/core';
import { assertInteger, assertRecord } from './argument-checks.js';

/**
 * Checks a metadata store applies on every write: the ids that become keys and file names are
 * valid KOS ids and the numbers a store relies on are integers. Deeper meaning (state machines,
 * digests) is core's job.
 */

export function assertKeyRecord(record: KeyRecord): void {
  assertRecord(record, 'key record');
  assertId(record.kid, 'kid');
  if (!Array.isArray(record.versions))
    throw new KosError('ERR_INVALID_ARGUMENT', 'key record versions must be an array');
}

/** `null` (must not exist yet) or the revision the caller read. */
export function assertExpectedRevision(expectedRevision: number | null): void {
  if (expectedRevision !== null) assertInteger(expectedRevision, 'expectedRevision', 1);
}

export function assertShareSetRecord(set: ShareSetRecord): void {
  assertRecord(set, 'share set');
  assertId(set.setId, 'setId');
  assertId(set.kid, 'kid');
  assertId(set.owner, 'owner');
  assertInteger(set.version, 'version', 1);
  if (!Array.isArray(set.placements)) throw new KosError('ERR_INVALID_ARGUMENT', 'placements must be an array');
}

export function assertAccessRecord(record: AccessRecord): void {
  assertRecord(record, 'access record');
  assertId(record.clientId, 'clientId');
  for (const field of ['allow', 'deny'] as const) {
    const list: unknown = record[field];
    if (!Array.isArray(list) || !list.every((entry) => typeof entry === 'string')) {
      throw new KosError('ERR_INVALID_ARGUMENT', `access record ${field} must be an array of strings`);
    }
  }
}

export function assertShareSetFilter(filter: ShareSetFilter | undefined): void {
  if (filter === undefined) return;
  assertRecord(filter, 'share set filter');
  if (filter.kid !== undefined) assertId(filter.kid, 'filter.kid');
  if (filter.owner !== undefined) assertId(filter.owner, 'filter.owner');
  if (filter.version !== undefined) assertInteger(filter.version, 'filter.version', 1);
}

export function matchesShareSetFilter(set: ShareSetRecord, filter: ShareSetFilter | undefined): boolean {
  if (filter === undefined) return true;
  return (
    (filter.kid === undefined || set.kid === filter.kid) &&
    (filter.version === undefined || set.version === filter.version) &&
    (filter.owner === undefined || set.owner === filter.owner)
  );
}

/** Throws ERR_STORE_CONFLICT when the current revision is not the expected one. */
export function assertRevisionMatches(kid: string, current: number | undefined, expected: number | null): void {
  const matches = expected === null ? current === undefined : current === expected;
  if (!matches) {
    throw new KosError(
      'ERR_STORE_CONFLICT',
      expected === null
        ? `key ${kid} already exists`
        : `key ${kid} changed: expected revision ${expected}, found ${current ?? 'none'}`,
      { details: { kid } },
    );
  }
}
