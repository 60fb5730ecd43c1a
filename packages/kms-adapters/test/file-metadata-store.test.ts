import { mkdir, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFileMetadataStore } from '../src/index.js';
import { delay, expectKosError, makeAccess, makeKeyRecord, makeShareSet } from '../src/testing/index.js';
import { makeTempDir } from './helpers/temp-dir.js';

let base: string;
let dir: string;
let removeBase: () => Promise<void>;

beforeEach(async () => {
  ({ dir: base, remove: removeBase } = await makeTempDir());
  dir = join(base, 'meta');
});

afterEach(async () => {
  await removeBase();
});

/** Holds the cross-process lock the way another process would: proper-lockfile's lock directory. */
async function holdLockAsAnotherProcess(ageMs = 0): Promise<void> {
  const lockDir = join(dir, '.lock.lock');
  await mkdir(lockDir);
  const when = new Date(Date.now() - ageMs);
  await utimes(lockDir, when, when);
}

describe('createFileMetadataStore on disk', () => {
  it('creates keys/, ops/, sets/, access/, replay/ and locks/ with mode 0700', async () => {
    createFileMetadataStore({ dir });
    for (const sub of ['keys', 'ops', 'sets', 'access', 'replay', 'locks']) {
      expect({ sub, mode: (await stat(join(dir, sub))).mode & 0o777 }).toEqual({ sub, mode: 0o700 });
    }
  });

  it('writes every record as a 0600 file', async () => {
    const store = createFileMetadataStore({ dir });
    await store.putKey(makeKeyRecord('k1'), null);
    await store.addOps('k1', 1, 1);
    await store.putShareSet(makeShareSet('set-1', 'k1', 1, 'system'));
    await store.putAccess(makeAccess('client-1', ['k1']));
    await store.markOnce('grants', 'jti-1', 60);
    await store.acquireLock('rotate', 'owner-a', 10_000);
    for (const sub of ['keys', 'ops', 'sets', 'access', 'replay', 'locks']) {
      const names = await readdir(join(dir, sub));
      expect({ sub, count: names.length }).toEqual({ sub, count: 1 });
      expect({ sub, mode: (await stat(join(dir, sub, names[0]!))).mode & 0o777 }).toEqual({ sub, mode: 0o600 });
    }
  });

  it('keeps everything across a restart (a new store on the same directory), the replay cache included', async () => {
    const first = createFileMetadataStore({ dir });
    await first.putKey(makeKeyRecord('k1', 5), null);
    await first.putKey(makeKeyRecord('k1', 6), 1);
    await first.addOps('k1', 1, 7);
    await first.putShareSet(makeShareSet('set-1', 'k1', 1, 'client-1'));
    await first.putAccess(makeAccess('client-1', ['k1']));
    await first.markOnce('grants', 'jti-1', 60);
    await first.acquireLock('rotate', 'owner-a', 10_000);

    const second = createFileMetadataStore({ dir });
    expect(await second.getKey('k1')).toEqual({ value: makeKeyRecord('k1', 6), revision: 2 });
    expect(await second.getOps('k1', 1)).toBe(7);
    expect(await second.listShareSets({ owner: 'client-1' })).toEqual([makeShareSet('set-1', 'k1', 1, 'client-1')]);
    expect(await second.listAccess()).toEqual([makeAccess('client-1', ['k1'])]);
    expect(await second.markOnce('grants', 'jti-1', 60)).toBe(false);
    expect(await second.acquireLock('rotate', 'owner-b', 10_000)).toBe(false);
  });

  it('stores replay ids and lock names under SHA-256 file names, never as paths', async () => {
    const store = createFileMetadataStore({ dir });
    await store.markOnce('grants', '../../escape', 60);
    await store.acquireLock('../../escape', 'owner-a', 10_000);
    expect(await readdir(join(dir, 'replay'))).toEqual([expect.stringMatching(/^[0-9a-f]{64}\.json$/)]);
    expect(await readdir(join(dir, 'locks'))).toEqual([expect.stringMatching(/^[0-9a-f]{64}\.json$/)]);
    expect(await readdir(base)).toEqual(['meta']);
  });

  it('sweeps expired replay entries so the cache does not grow without bound', async () => {
    const first = createFileMetadataStore({ dir });
    await first.markOnce('grants', 'short-lived', 0.1);
    await first.markOnce('grants', 'long-lived', 60);
    // A fresh instance sweeps once its first interval has passed (not at once: a restarted
    // node must not stall its first redemption on a big sweep).
    const second = createFileMetadataStore({ dir, replaySweepIntervalMs: 100 });
    await delay(150);
    await second.markOnce('grants', 'new', 60);
    expect(await readdir(join(dir, 'replay'))).toHaveLength(2);
    expect(await first.markOnce('grants', 'long-lived', 60)).toBe(false);
  });

  it('a damaged key file is ERR_STORE_CORRUPT on read and is not overwritten by putKey', async () => {
    const store = createFileMetadataStore({ dir });
    await store.putKey(makeKeyRecord('k1'), null);
    const path = join(dir, 'keys', 'k1.json');
    const damaged = (await readFile(path, 'utf8')).replace('"updatedAt":1', '"updatedAt":2');
    await writeFile(path, damaged);
    await expectKosError(() => store.getKey('k1'), 'ERR_STORE_CORRUPT');
    await expectKosError(() => store.putKey(makeKeyRecord('k1', 3), 1), 'ERR_STORE_CORRUPT');
    expect(await readFile(path, 'utf8')).toBe(damaged);
  });

  it('a key file copied under another key id is ERR_STORE_CORRUPT', async () => {
    const store = createFileMetadataStore({ dir });
    await store.putKey(makeKeyRecord('k1'), null);
    await writeFile(join(dir, 'keys', 'k2.json'), await readFile(join(dir, 'keys', 'k1.json')));
    await expectKosError(() => store.getKey('k2'), 'ERR_STORE_CORRUPT');
  });

  it('a damaged replay entry fails markOnce closed (ERR_STORE_CORRUPT), never "first time"', async () => {
    const store = createFileMetadataStore({ dir });
    await store.markOnce('grants', 'jti-1', 60);
    const [name] = await readdir(join(dir, 'replay'));
    await writeFile(join(dir, 'replay', name!), '{"v":1,');
    await expectKosError(() => store.markOnce('grants', 'jti-1', 60), 'ERR_STORE_CORRUPT');
  });

  it('ignores temp files and foreign names when listing', async () => {
    const store = createFileMetadataStore({ dir });
    await store.putKey(makeKeyRecord('k1'), null);
    await writeFile(join(dir, 'keys', '.k2.json.abcd.tmp'), 'partial');
    await writeFile(join(dir, 'keys', 'notes.txt'), 'x');
    expect(await store.listKeys()).toEqual(['k1']);
  });

  it('a mutation waits for a lock held by another process and fails with ERR_STORE_IO after lockWaitMs', async () => {
    const store = createFileMetadataStore({ dir, lockWaitMs: 300 });
    await holdLockAsAnotherProcess();
    const started = Date.now();
    await expectKosError(() => store.addOps('k1', 1, 1), 'ERR_STORE_IO');
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(await store.getOps('k1', 1)).toBe(0);
  });

  it('reads take no lock: they work while another process holds it', async () => {
    const store = createFileMetadataStore({ dir, lockWaitMs: 100 });
    await store.addOps('k1', 1, 4);
    await holdLockAsAnotherProcess();
    expect(await store.getOps('k1', 1)).toBe(4);
  });

  it('takes over a lock whose holder stopped refreshing it longer than lockStaleMs ago (a crashed process)', async () => {
    const store = createFileMetadataStore({ dir, lockWaitMs: 1_000, lockStaleMs: 10_000 });
    await holdLockAsAnotherProcess(30_000);
    expect(await store.addOps('k1', 1, 1)).toBe(1);
  });

  it('refuses bad options with ERR_INVALID_OPTIONS', async () => {
    await expectKosError(async () => createFileMetadataStore({ dir: '' }), 'ERR_INVALID_OPTIONS');
    await expectKosError(async () => createFileMetadataStore({ dir, lockWaitMs: -1 }), 'ERR_INVALID_OPTIONS');
    await expectKosError(async () => createFileMetadataStore({ dir, lockWaitMs: 1.5 }), 'ERR_INVALID_OPTIONS');
    await expectKosError(async () => createFileMetadataStore({ dir, lockStaleMs: 1_999 }), 'ERR_INVALID_OPTIONS');
    await expectKosError(async () => createFileMetadataStore(null as never), 'ERR_INVALID_OPTIONS');
  });
});
