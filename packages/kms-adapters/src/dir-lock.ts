import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KosError } from '@kos/core';
import lockfile from 'proper-lockfile';
import { hasCode, ioError } from './atomic-file.js';

export interface DirLockOptions {
  /** The file to lock; proper-lockfile creates `<lockPath>.lock` next to it. */
  readonly lockPath: string;
  /** How long to wait for the lock before failing with ERR_STORE_IO. */
  readonly waitMs: number;
  /** A lock not refreshed for this long is taken over (its holder crashed). Minimum 2000. */
  readonly staleMs: number;
}

export interface DirLock {
  /** Runs `task` while holding the lock in this process and across processes. */
  run<T>(task: () => Promise<T>): Promise<T>;
}

const FIRST_BACKOFF_MS = 2;
const MAX_BACKOFF_MS = 50;

/**
 * Calls on the same lock path in one process queue up in memory (so they do not spin on the
 * file system); across processes they exclude each other with proper-lockfile's atomic
 * `mkdir`, retried with a small jittered backoff until `waitMs` runs out.
 */
const inProcessTails = new Map<string, Promise<void>>();

export function createDirLock(options: DirLockOptions): DirLock {
  const lockPath = resolve(options.lockPath);

  async function acquireFileLock(): Promise<{ release: () => Promise<void>; lost: () => Error | undefined }> {
    const deadlineMs = Date.now() + options.waitMs;
    let backoffMs = FIRST_BACKOFF_MS;
    for (;;) {
      let lostWith: Error | undefined;
      try {
        const release = await lockfile.lock(lockPath, {
          realpath: false,
          stale: options.staleMs,
          retries: 0,
          // The default throws from a timer and kills the process; record it and fail the call instead.
          onCompromised: (error: Error) => {
            lostWith = error;
          },
        });
        return { release, lost: () => lostWith };
      } catch (error) {
        if (!hasCode(error, 'ELOCKED')) throw ioError('could not take the metadata store lock', '.lock', error);
        if (Date.now() >= deadlineMs) {
          throw new KosError(
            'ERR_STORE_IO',
            `timed out after ${options.waitMs} ms waiting for the metadata store lock`,
          );
        }
        await sleep(backoffMs / 2 + Math.random() * (backoffMs / 2));
        backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
      }
    }
  }

  async function runLocked<T>(task: () => Promise<T>): Promise<T> {
    const held = await acquireFileLock();
    let result: T;
    try {
      result = await task();
    } finally {
      await held.release().catch(() => undefined);
    }
    const lost = held.lost();
    if (lost !== undefined) {
      throw new KosError('ERR_STORE_IO', 'the metadata store lock was lost while held; the outcome is unknown', {
        cause: lost,
      });
    }
    return result;
  }

  return {
    async run<T>(task: () => Promise<T>): Promise<T> {
      const previous = inProcessTails.get(lockPath) ?? Promise.resolve();
      let done!: () => void;
      const current = new Promise<void>((resolveDone) => {
        done = resolveDone;
      });
      const tail = previous.then(() => current);
      inProcessTails.set(lockPath, tail);
      try {
        await previous;
        return await runLocked(task);
      } finally {
        done();
        if (inProcessTails.get(lockPath) === tail) inProcessTails.delete(lockPath);
      }
    },
  };
}
