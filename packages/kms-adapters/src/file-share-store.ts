import { mkdirSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  assertId,
  encodeShareBody,
  KosError,
  type ShareStore,
  type StoreCallOptions,
  type StoredShare,
} from '@kos/core';
import { throwIfAborted } from './abort.js';
import { fsyncDirectory, hasCode, ioError, removeStaleTempFilesSync, writeFileAtomic } from './atomic-file.js';
import { corrupt, encodeWithIntegrity, readJsonWithIntegrity } from './integrity-json.js';
import { assertStorableShare, storedShareFromRecord } from './share-validation.js';
import { assertOptionsObject, checkDirOption, checkNodeOptions } from './store-options.js';

/** Temp files older than this were left by a crashed writer; younger ones may be live. */
const STALE_TEMP_FILE_MS = 60_000;
const SHARE_FILE_SUFFIX = '.share.json';

export interface FileShareStoreOptions {
  /** This node's id (a valid KOS id, unique among configured nodes). */
  readonly nodeId: string;
  /** Directory holding one file per share; created with mode 0700 when missing. */
  readonly dir: string;
  /** Optional failure zone (a valid KOS id). */
  readonly zone?: string;
}

/**
 * A share store on the local file system: one file `<dir>/<shareId>.share.json` per share,
 * holding the share's metadata and its bytes (base64url) under a SHA-256 integrity digest.
 * Writes are atomic and durable (temp file, fsync, rename, fsync of the directory), files are
 * mode 0600, and every id is checked before it becomes a path. Every read is checked again:
 * a damaged file, or one that is not a valid share, is ERR_STORE_CORRUPT, never returned.
 *
 * Construction creates `dir` and removes temp files a crashed writer left more than 60 s ago.
 *
 * @throws KosError ERR_INVALID_OPTIONS for a bad nodeId, zone or dir; ERR_STORE_IO when
 *   the directory cannot be created or read.
 * @example
 * const store = createFileShareStore({ nodeId: 'node-1', dir: '.kos/nodes/node-1' });
 * await store.put(share);
 */
export function createFileShareStore(options: FileShareStoreOptions): ShareStore {
  assertOptionsObject(options, 'createFileShareStore');
  const { nodeId, zone } = checkNodeOptions(options, 'createFileShareStore');
  const dir = resolve(checkDirOption(options.dir, 'createFileShareStore'));
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw ioError('could not create the share directory', nodeId, error);
  }
  removeStaleTempFilesSync(dir, STALE_TEMP_FILE_MS);

  function pathOf(shareId: string): string {
    assertId(shareId, 'shareId');
    return join(dir, `${shareId}${SHARE_FILE_SUFFIX}`);
  }

  return {
    nodeId,
    zone,
    async put(share: StoredShare, callOptions?: StoreCallOptions): Promise<void> {
      const signal = callOptions?.signal;
      throwIfAborted(signal, 'put');
      assertStorableShare(share);
      const text = encodeWithIntegrity({ ...encodeShareBody(share) });
      await writeFileAtomic(pathOf(share.shareId), text, { mode: 0o600, ...(signal ? { signal } : {}) });
    },

    async get(shareId: string, callOptions?: StoreCallOptions): Promise<StoredShare | undefined> {
      const signal = callOptions?.signal;
      throwIfAborted(signal, 'get');
      const path = pathOf(shareId);
      const body = await readJsonWithIntegrity(path, { id: shareId, ...(signal ? { signal } : {}) });
      if (body === undefined) return undefined;
      // A valid file copied or renamed under another id is not the share that was asked for.
      if (body.shareId !== shareId) throw corrupt(shareId, 'file holds another share id');
      return storedShareFromRecord(body, shareId);
    },

    async delete(shareId: string, callOptions?: StoreCallOptions): Promise<boolean> {
      throwIfAborted(callOptions?.signal, 'delete');
      const path = pathOf(shareId);
      try {
        await unlink(path);
      } catch (error) {
        if (hasCode(error, 'ENOENT')) return false;
        throw ioError(`could not delete ${shareId}`, shareId, error);
      }
      try {
        await fsyncDirectory(dir);
      } catch (error) {
        throw new KosError('ERR_STORE_IO', `could not sync the deletion of ${shareId}`, {
          details: { file: shareId },
          cause: error,
        });
      }
      return true;
    },
  };
}
