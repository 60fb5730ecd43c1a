import { mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFileShareStore, encodeWithIntegrity } from '../src/index.js';
import { expectKosError, INVALID_IDS, makeShare } from '../src/testing/index.js';
import { makeTempDir } from './helpers/temp-dir.js';

let base: string;
let dir: string;
let removeBase: () => Promise<void>;

beforeEach(async () => {
  ({ dir: base, remove: removeBase } = await makeTempDir());
  dir = join(base, 'node-1');
});

afterEach(async () => {
  await removeBase();
});

const fileOf = (shareId: string): string => join(dir, `${shareId}.share.json`);

async function errorOf(call: () => Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await call();
  } catch (error) {
    return error as { code?: string; message: string };
  }
  throw new Error('expected the call to fail');
}

describe('createFileShareStore on disk', () => {
  it('creates its directory with mode 0700 and writes one 0600 file per share', async () => {
    const store = createFileShareStore({ nodeId: 'node-1', dir });
    await store.put(makeShare('share-1'));
    await store.put(makeShare('share-2', { x: 2 }));
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await readdir(dir)).sort()).toEqual(['share-1.share.json', 'share-2.share.json']);
    expect((await stat(fileOf('share-1'))).mode & 0o777).toBe(0o600);
    expect((await stat(fileOf('share-2'))).mode & 0o777).toBe(0o600);
  });

  it('stores the share with its metadata, value in base64url, under an integrity digest', async () => {
    const store = createFileShareStore({ nodeId: 'node-1', dir });
    const share = makeShare('share-1', { x: 3 });
    await store.put(share);
    const file = JSON.parse(await readFile(fileOf('share-1'), 'utf8')) as { v: number; body: object; sha256: string };
    expect(file.v).toBe(1);
    expect(file.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(file.body).toEqual({
      shareId: 'share-1',
      kid: share.kid,
      version: share.version,
      setId: share.setId,
      owner: share.owner,
      x: 3,
      value: Buffer.from(share.value).toString('base64url'),
    });
  });

  it('a new store on the same directory (a restart) reads what the old one wrote', async () => {
    const share = makeShare('share-1', { x: 9 });
    await createFileShareStore({ nodeId: 'node-1', dir }).put(share);
    expect(await createFileShareStore({ nodeId: 'node-1', dir }).get('share-1')).toEqual(share);
  });

  it('a byte flipped anywhere in a share file makes get fail with ERR_STORE_CORRUPT naming the share, not its bytes', async () => {
    const store = createFileShareStore({ nodeId: 'node-1', dir });
    const share = makeShare('share-1', { x: 3, seed: 42 });
    await store.put(share);
    const original = await readFile(fileOf('share-1'));
    const valueText = Buffer.from(share.value).toString('base64url');
    for (let offset = 0; offset < original.length; offset++) {
      const damaged = Buffer.from(original);
      damaged[offset] = (damaged[offset] ?? 0) ^ 0x01;
      await writeFile(fileOf('share-1'), damaged);
      const error = await errorOf(() => store.get('share-1'));
      expect({ offset, code: error.code }).toEqual({ offset, code: 'ERR_STORE_CORRUPT' });
      expect(error.message).toContain('share-1');
      expect(error.message).not.toContain(valueText);
    }
    await writeFile(fileOf('share-1'), original);
    expect(await store.get('share-1')).toEqual(share);
  });

  it('a truncated or empty share file is ERR_STORE_CORRUPT', async () => {
    const store = createFileShareStore({ nodeId: 'node-1', dir });
    await store.put(makeShare('share-1'));
    const original = await readFile(fileOf('share-1'));
    await writeFile(fileOf('share-1'), original.subarray(0, original.length - 1));
    await expectKosError(() => store.get('share-1'), 'ERR_STORE_CORRUPT');
    await writeFile(fileOf('share-1'), '');
    await expectKosError(() => store.get('share-1'), 'ERR_STORE_CORRUPT');
  });

  it('a file with a valid digest but an invalid share is still ERR_STORE_CORRUPT', async () => {
    const store = createFileShareStore({ nodeId: 'node-1', dir });
    const share = makeShare('share-1', { x: 4 });
    const body = {
      shareId: 'share-1',
      kid: share.kid,
      version: share.version,
      setId: share.setId,
      owner: share.owner,
      x: 4,
      value: Buffer.from(share.value).toString('base64url'),
    };
    const variants: Record<string, unknown>[] = [
      { ...body, x: 5 },
      { ...body, x: 0 },
      { ...body, x: 256 },
      { ...body, version: 0 },
      { ...body, version: 1.5 },
      { ...body, value: `${body.value}=` },
      { ...body, value: 'not base64!' },
      { ...body, value: 42 },
      { ...body, kid: '../k' },
      { ...body, owner: undefined },
    ];
    for (const variant of variants) {
      await writeFile(fileOf('share-1'), encodeWithIntegrity(variant));
      await expectKosError(() => store.get('share-1'), 'ERR_STORE_CORRUPT');
    }
    await writeFile(fileOf('share-1'), encodeWithIntegrity(body));
    expect(await store.get('share-1')).toEqual(share);
  });

  it('a valid share file copied under another share id is ERR_STORE_CORRUPT', async () => {
    const store = createFileShareStore({ nodeId: 'node-1', dir });
    await store.put(makeShare('share-1'));
    await writeFile(fileOf('share-2'), await readFile(fileOf('share-1')));
    await expectKosError(() => store.get('share-2'), 'ERR_STORE_CORRUPT');
  });

  it('refuses path-traversal and other invalid ids and creates nothing outside its directory', async () => {
    const store = createFileShareStore({ nodeId: 'node-1', dir });
    for (const id of INVALID_IDS) {
      await expectKosError(() => store.put(makeShare(id)), 'ERR_INVALID_ID');
      await expectKosError(() => store.get(id), 'ERR_INVALID_ID');
      await expectKosError(() => store.delete(id), 'ERR_INVALID_ID');
    }
    expect(await readdir(base)).toEqual(['node-1']);
    expect(await readdir(dir)).toEqual([]);
  });

  it('removes temp files older than 60 s on construction and keeps younger ones and share files', async () => {
    await mkdir(dir, { recursive: true });
    const old = join(dir, '.share-1.share.json.aaaa.tmp');
    const young = join(dir, '.share-2.share.json.bbbb.tmp');
    const notTemp = join(dir, 'share-3.share.json');
    for (const path of [old, young, notTemp]) await writeFile(path, 'x');
    const twoMinutesAgo = new Date(Date.now() - 120_000);
    await utimes(old, twoMinutesAgo, twoMinutesAgo);
    await utimes(notTemp, twoMinutesAgo, twoMinutesAgo);
    createFileShareStore({ nodeId: 'node-1', dir });
    expect((await readdir(dir)).sort()).toEqual(['.share-2.share.json.bbbb.tmp', 'share-3.share.json']);
  });

  it('fails with ERR_STORE_IO, not a crash or a silent success, when its directory disappears', async () => {
    const store = createFileShareStore({ nodeId: 'node-1', dir });
    await rm(dir, { recursive: true });
    await expectKosError(() => store.put(makeShare('share-1')), 'ERR_STORE_IO');
    expect(await store.get('share-1')).toBeUndefined();
  });

  it('refuses bad options with ERR_INVALID_OPTIONS and an unusable dir with ERR_STORE_IO', async () => {
    await expectKosError(async () => createFileShareStore({ nodeId: 'node-1', dir: '' }), 'ERR_INVALID_OPTIONS');
    await expectKosError(async () => createFileShareStore({ nodeId: '../n', dir }), 'ERR_INVALID_OPTIONS');
    await expectKosError(async () => createFileShareStore({ nodeId: 'n', dir, zone: '' }), 'ERR_INVALID_OPTIONS');
    await expectKosError(async () => createFileShareStore(undefined as never), 'ERR_INVALID_OPTIONS');
    const aFile = join(base, 'a-file');
    await writeFile(aFile, 'x');
    await expectKosError(async () => createFileShareStore({ nodeId: 'n', dir: join(aFile, 'sub') }), 'ERR_STORE_IO');
  });
});
