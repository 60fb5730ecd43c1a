import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { type FileHandle, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { KosError } from '@kos/core';

/** Temp files are hidden (leading `.`) and end in `.tmp`, so no reader ever takes one for a record. */
const TEMP_FILE = /^\..+\.tmp$/;

export interface WriteFileAtomicOptions {
  /** File mode of the new file. Default `0o600` (owner read/write only). */
  readonly mode?: number;
  /** Aborts the write before the rename; the target is then untouched. */
  readonly signal?: AbortSignal;
}

/** Whether `name` (a base name) is one of writeFileAtomic's temp files. */
export function isTempFileName(name: string): boolean {
  return TEMP_FILE.test(name);
}

/**
 * Replaces `path` with `data` so that a reader, or the file system after a crash, sees either
 * the old file or the whole new one, never a mix: the data goes to a temp file in the same
 * directory, which is fsynced, renamed over the target (atomic on POSIX), and then the
 * directory is fsynced so the rename itself is durable.
 *
 * @throws KosError ERR_STORE_IO on any failure or abort; the temp file is removed and the
 *   message names the file, never its contents.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  const { mode = 0o600, signal } = options;
  const dir = dirname(path);
  const name = basename(path);
  const tempPath = join(dir, `.${name}.${randomBytes(8).toString('hex')}.tmp`);
  let handle: FileHandle | undefined;
  try {
    abortIfNeeded(signal, name);
    // 'wx': never follow or reuse something already at the temp name.
    handle = await open(tempPath, 'wx', mode);
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    handle = undefined;
    abortIfNeeded(signal, name);
    await rename(tempPath, path);
  } catch (error) {
    await handle?.close().catch(() => undefined);
    await rm(tempPath, { force: true }).catch(() => undefined);
    throw ioError(`could not write ${name}`, name, error);
  }
  try {
    await fsyncDirectory(dir);
  } catch (error) {
    throw ioError(`could not sync the directory of ${name}`, name, error);
  }
}

/**
 * Makes a completed rename or unlink in `dir` durable. Windows cannot open a directory for
 * fsync; there the rename's own durability is all there is.
 */
export async function fsyncDirectory(dir: string): Promise<void> {
  if (process.platform === 'win32') return;
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Removes temp files in `dir` left by a writer that crashed more than `olderThanMs` ago.
 * Younger ones may belong to a live writer in another process and are left alone.
 * Resolves how many were removed; a missing directory counts as empty.
 */
export function removeStaleTempFilesSync(dir: string, olderThanMs: number): number {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    if (hasCode(error, 'ENOENT')) return 0;
    throw ioError('could not list a store directory', basename(dir), error);
  }
  const cutoffMs = Date.now() - olderThanMs;
  let removed = 0;
  for (const name of names) {
    if (!isTempFileName(name)) continue;
    const path = join(dir, name);
    try {
      if (statSync(path).mtimeMs < cutoffMs) {
        rmSync(path, { force: true });
        removed++;
      }
    } catch (error) {
      if (!hasCode(error, 'ENOENT')) throw ioError(`could not remove stale temp file ${name}`, name, error);
    }
  }
  return removed;
}

function abortIfNeeded(signal: AbortSignal | undefined, name: string): void {
  if (signal?.aborted) throw new KosError('ERR_STORE_IO', `write of ${name} aborted`, { cause: signal.reason });
}

/** ERR_STORE_IO naming the file; a KosError (an abort) passes through unchanged. */
export function ioError(message: string, file: string, cause: unknown): KosError {
  if (cause instanceof KosError) return cause;
  return new KosError('ERR_STORE_IO', message, { details: { file }, cause });
}

export function hasCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}
