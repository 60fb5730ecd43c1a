import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { readdir, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  type AccessRecord,
  assertId,
  isValidId,
  type KeyRecord,
  KosError,
  type MetadataStore,
  type Revisioned,
  type ShareSetFilter,
  type ShareSetRecord,
} from '@kos/core';
import { assertInteger, assertNonEmptyString, assertPositiveFinite } from './argument-checks.js';
import {
  fsyncDirectory,
  hasCode,
  ioError,
  isTempFileName,
  removeStaleTempFilesSync,
  writeFileAtomic,
} from './atomic-file.js';
import { createDirLock } from './dir-lock.js';
import { corrupt, encodeWithIntegrity, readJsonWithIntegrity } from './integrity-json.js';
import {
  assertAccessRecord,
  assertExpectedRevision,
  assertKeyRecord,
  assertRevisionMatches,
  assertShareSetFilter,
  assertShareSetRecord,
  matchesShareSetFilter,
} from './record-checks.js';
import { assertOptionsObject, checkDirOption } from './store-options.js';

const DEFAULTS = { lockWaitMs: 15_000, lockStaleMs: 10_000 } as const;
/** proper-lockfile refuses a shorter stale time. */
const MIN_LOCK_STALE_MS = 2_000;
const STALE_TEMP_FILE_MS = 60_000;
/** Expired replay entries are swept at most this often (per store instance). */
const REPLAY_SWEEP_INTERVAL_MS = 60_000;
const SUBDIRS = ['keys', 'ops', 'sets', 'access', 'replay', 'locks'] as const;
type Subdir = (typeof SUBDIRS)[number];
const JSON_SUFFIX = '.json';

export interface FileMetadataStoreOptions {
  /** Directory of the store; `keys/`, `ops/`, `sets/`, `access/`, `replay/`, `locks/` are created inside (mode 0700). */
  readonly dir: string;
  /** How long a mutation waits for the cross-process lock before ERR_STORE_IO. Default 15000. */
  readonly lockWaitMs?: number;
  /** A lock whose holder stopped refreshing it this long ago is taken over (crashed holder). Default 10000, minimum 2000. */
  readonly lockStaleMs?: number;
  /** Expired replay entries are swept at most this often, the first time one interval after start (default 60000). */
  readonly replaySweepIntervalMs?: number;
}

/**
 * A metadata store on the local file system, safe to share between processes on one host.
 * Every record is one file written atomically (temp file, fsync, rename, fsync of the
 * directory) with a SHA-256 integrity digest, mode 0600. Every mutation runs under one
 * cross-process lock (proper-lockfile on `<dir>/.lock`), so compare-and-set on key records,
 * counters, the replay cache and named locks stay exact when processes race; reads take no
 * lock, since a rename always shows a whole file.
 *
 * Replay ids and lock names may be any string: they are stored under the SHA-256 of their
 * name, so they never become paths. TTLs are measured with `Date.now()` on this host.
 *
 * @throws KosError ERR_INVALID_OPTIONS for a bad option; ERR_STORE_IO when the directories
 *   cannot be created.
 * @example
 * const meta = createFileMetadataStore({ dir: '.kos/metadata' });
 * const revision = await meta.putKey(record, null);
 */
export function createFileMetadataStore(options: FileMetadataStoreOptions): MetadataStore {
  assertOptionsObject(options, 'createFileMetadataStore');
  const dir = resolve(checkDirOption(options.dir, 'createFileMetadataStore'));
  const lockWaitMs = options.lockWaitMs ?? DEFAULTS.lockWaitMs;
  const lockStaleMs = options.lockStaleMs ?? DEFAULTS.lockStaleMs;
  if (!Number.isSafeInteger(lockWaitMs) || lockWaitMs < 0) {
    throw new KosError('ERR_INVALID_OPTIONS', 'createFileMetadataStore: lockWaitMs must be an integer >= 0', {
      details: { option: 'lockWaitMs' },
    });
  }
  if (!Number.isSafeInteger(lockStaleMs) || lockStaleMs < MIN_LOCK_STALE_MS) {
    throw new KosError(
      'ERR_INVALID_OPTIONS',
      `createFileMetadataStore: lockStaleMs must be an integer >= ${MIN_LOCK_STALE_MS}`,
      { details: { option: 'lockStaleMs' } },
    );
  }
  for (const sub of SUBDIRS) {
    const path = join(dir, sub);
    try {
      mkdirSync(path, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw ioError(`could not create the metadata directory ${sub}`, sub, error);
    }
    removeStaleTempFilesSync(path, STALE_TEMP_FILE_MS);
  }
  const lock = createDirLock({ lockPath: join(dir, '.lock'), waitMs: lockWaitMs, staleMs: lockStaleMs });
  // The first sweep waits one interval: a restarted node must not stall its first redemption
  // (under the lock) sweeping a large replay cache.
  const sweepIntervalMs = options.replaySweepIntervalMs ?? REPLAY_SWEEP_INTERVAL_MS;
  if (!Number.isSafeInteger(sweepIntervalMs) || sweepIntervalMs < 1) {
    throw new KosError(
      'ERR_INVALID_OPTIONS',
      'createFileMetadataStore: replaySweepIntervalMs must be an integer >= 1',
      {
        details: { option: 'replaySweepIntervalMs' },
      },
    );
  }
  let nextReplaySweepMs = Date.now() + sweepIntervalMs;

  const pathOf = (sub: Subdir, name: string): string => join(dir, sub, `${name}${JSON_SUFFIX}`);

  async function read(sub: Subdir, name: string, id: string): Promise<Record<string, unknown> | undefined> {
    return readJsonWithIntegrity(pathOf(sub, name), { id });
  }

  async function write(sub: Subdir, name: string, body: Readonly<Record<string, unknown>>): Promise<void> {
    await writeFileAtomic(pathOf(sub, name), encodeWithIntegrity(body), { mode: 0o600 });
  }

  async function remove(sub: Subdir, name: string, id: string): Promise<boolean> {
    try {
      await unlink(pathOf(sub, name));
    } catch (error) {
      if (hasCode(error, 'ENOENT')) return false;
      throw ioError(`could not delete ${id}`, id, error);
    }
    try {
      await fsyncDirectory(join(dir, sub));
    } catch (error) {
      throw ioError(`could not sync the deletion of ${id}`, id, error);
    }
    return true;
  }

  /** Record names in a subfolder (temp files and anything that is not `<id>.json` skipped). */
  async function namesIn(sub: Subdir): Promise<string[]> {
    let entries: string[];
    try {
      entries = await readdir(join(dir, sub));
    } catch (error) {
      throw ioError(`could not list ${sub}`, sub, error);
    }
    return entries
      .filter((entry) => entry.endsWith(JSON_SUFFIX) && !isTempFileName(entry))
      .map((entry) => entry.slice(0, -JSON_SUFFIX.length))
      .filter((name) => isValidId(name))
      .sort();
  }

  /** A record read back must pass the same checks as on write, else it is corrupt. */
  function checkOnRead<T>(id: string, check: () => T): T {
    try {
      return check();
    } catch {
      throw corrupt(id, 'record is malformed');
    }
  }

  async function readKey(kid: string): Promise<Revisioned<KeyRecord> | undefined> {
    const id = `key ${kid}`;
    const body = await read('keys', kid, id);
    if (body === undefined) return undefined;
    return checkOnRead(id, () => {
      const record = body.record as KeyRecord;
      assertKeyRecord(record);
      assertInteger(body.revision, 'revision', 1);
      if (record.kid !== kid) throw new Error('kid mismatch');
      return { value: record, revision: body.revision };
    });
  }

  async function readOps(kid: string, version: number): Promise<number> {
    const id = `ops ${kid} v${version}`;
    const body = await read('ops', opsName(kid, version), id);
    if (body === undefined) return 0;
    return checkOnRead(id, () => {
      if (body.kid !== kid || body.version !== version) throw new Error('wrong counter');
      assertInteger(body.total, 'total', 0);
      return body.total;
    });
  }

  async function readShareSet(setId: string): Promise<ShareSetRecord | undefined> {
    const id = `share set ${setId}`;
    const body = await read('sets', setId, id);
    if (body === undefined) return undefined;
    return checkOnRead(id, () => {
      const set = body as unknown as ShareSetRecord;
      assertShareSetRecord(set);
      if (set.setId !== setId) throw new Error('setId mismatch');
      return set;
    });
  }

  async function readAccess(clientId: string): Promise<AccessRecord | undefined> {
    const id = `access ${clientId}`;
    const body = await read('access', clientId, id);
    if (body === undefined) return undefined;
    return checkOnRead(id, () => {
      const record = body as unknown as AccessRecord;
      assertAccessRecord(record);
      if (record.clientId !== clientId) throw new Error('clientId mismatch');
      return record;
    });
  }

  async function readExpiry(sub: 'replay' | 'locks', name: string): Promise<Record<string, unknown> | undefined> {
    const id = `${sub} ${name.slice(0, 16)}`;
    const body = await read(sub, name, id);
    if (body === undefined) return undefined;
    return checkOnRead(id, () => {
      if (typeof body.expiresAtMs !== 'number' || !Number.isFinite(body.expiresAtMs)) throw new Error('no expiry');
      return body;
    });
  }

  async function sweepExpiredReplay(nowMs: number): Promise<void> {
    for (const name of await namesIn('replay')) {
      try {
        const entry = await readExpiry('replay', name);
        if (entry !== undefined && (entry.expiresAtMs as number) <= nowMs) await remove('replay', name, 'replay entry');
      } catch {
        // A damaged entry stays for an operator to see; markOnce on it fails closed.
      }
    }
  }

  async function readListed<T>(sub: Subdir, readOne: (name: string) => Promise<T | undefined>): Promise<T[]> {
    const out: T[] = [];
    // A record deleted between readdir and read is simply not listed.
    for (const name of await namesIn(sub)) {
      const record = await readOne(name);
      if (record !== undefined) out.push(record);
    }
    return out;
  }

  return {
    async getKey(kid: string): Promise<Revisioned<KeyRecord> | undefined> {
      assertId(kid, 'kid');
      return readKey(kid);
    },
    async listKeys(): Promise<string[]> {
      return namesIn('keys');
    },
    async putKey(record: KeyRecord, expectedRevision: number | null): Promise<number> {
      assertKeyRecord(record);
      assertExpectedRevision(expectedRevision);
      return lock.run(async () => {
        const current = await readKey(record.kid);
        assertRevisionMatches(record.kid, current?.revision, expectedRevision);
        const revision = (current?.revision ?? 0) + 1;
        await write('keys', record.kid, { kid: record.kid, revision, record });
        return revision;
      });
    },

    async addOps(kid: string, version: number, count: number): Promise<number> {
      assertId(kid, 'kid');
      assertInteger(version, 'version', 1);
      assertInteger(count, 'count', 0);
      return lock.run(async () => {
        const current = await readOps(kid, version);
        if (count === 0) return current;
        const total = current + count;
        await write('ops', opsName(kid, version), { kid, version, total });
        return total;
      });
    },
    async getOps(kid: string, version: number): Promise<number> {
      assertId(kid, 'kid');
      assertInteger(version, 'version', 1);
      return readOps(kid, version);
    },

    async putShareSet(set: ShareSetRecord): Promise<void> {
      assertShareSetRecord(set);
      await lock.run(() => write('sets', set.setId, set as unknown as Record<string, unknown>));
    },
    async getShareSet(setId: string): Promise<ShareSetRecord | undefined> {
      assertId(setId, 'setId');
      return readShareSet(setId);
    },
    async listShareSets(filter?: ShareSetFilter): Promise<ShareSetRecord[]> {
      assertShareSetFilter(filter);
      const sets = await readListed('sets', readShareSet);
      return sets.filter((set) => matchesShareSetFilter(set, filter));
    },
    async deleteShareSet(setId: string): Promise<boolean> {
      assertId(setId, 'setId');
      return lock.run(() => remove('sets', setId, `share set ${setId}`));
    },

    async getAccess(clientId: string): Promise<AccessRecord | undefined> {
      assertId(clientId, 'clientId');
      return readAccess(clientId);
    },
    async putAccess(record: AccessRecord): Promise<void> {
      assertAccessRecord(record);
      await lock.run(() => write('access', record.clientId, record as unknown as Record<string, unknown>));
    },
    async listAccess(): Promise<AccessRecord[]> {
      return readListed('access', readAccess);
    },

    async markOnce(scope: string, id: string, ttlSeconds: number): Promise<boolean> {
      assertNonEmptyString(scope, 'scope');
      assertNonEmptyString(id, 'id');
      assertPositiveFinite(ttlSeconds, 'ttlSeconds');
      const name = hashName(scope, id);
      return lock.run(async () => {
        const nowMs = Date.now();
        if (nowMs >= nextReplaySweepMs) {
          nextReplaySweepMs = nowMs + sweepIntervalMs;
          await sweepExpiredReplay(nowMs);
        }
        const entry = await readExpiry('replay', name);
        if (entry !== undefined && (entry.expiresAtMs as number) > nowMs) return false;
        await write('replay', name, { expiresAtMs: nowMs + ttlSeconds * 1000 });
        return true;
      });
    },

    async acquireLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
      assertNonEmptyString(name, 'lock name');
      assertNonEmptyString(owner, 'owner');
      assertPositiveFinite(ttlMs, 'ttlMs');
      const fileName = hashName('lock', name);
      return lock.run(async () => {
        const nowMs = Date.now();
        const held = await readExpiry('locks', fileName);
        if (held !== undefined && (held.expiresAtMs as number) > nowMs && held.owner !== owner) return false;
        await write('locks', fileName, { name, owner, expiresAtMs: nowMs + ttlMs });
        return true;
      });
    },
    async releaseLock(name: string, owner: string): Promise<boolean> {
      assertNonEmptyString(name, 'lock name');
      assertNonEmptyString(owner, 'owner');
      const fileName = hashName('lock', name);
      return lock.run(async () => {
        const held = await readExpiry('locks', fileName);
        if (held === undefined || held.owner !== owner) return false;
        await remove('locks', fileName, 'lock');
        return (held.expiresAtMs as number) > Date.now();
      });
    },
  };
}

/** `<kid>.<version>`: unambiguous, since the version is the last segment and always digits. */
function opsName(kid: string, version: number): string {
  return `${kid}.${version}`;
}

/** SHA-256 hex of an arbitrary (scope, name) pair: a fixed-shape file name that is never a path. */
function hashName(scope: string, name: string): string {
  return createHash('sha256')
    .update(JSON.stringify([scope, name]), 'utf8')
    .digest('hex');
}
