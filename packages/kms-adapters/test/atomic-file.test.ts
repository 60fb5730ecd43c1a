import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeWithIntegrity, encodeWithIntegrity, readJsonWithIntegrity, writeFileAtomic } from '../src/index.js';
import { expectKosError } from '../src/testing/index.js';
import { freshTempDirEach } from './helpers/temp-dir.js';

let dir: string;
freshTempDirEach((fresh) => {
  dir = fresh;
});

async function caught(call: () => Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await call();
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error('expected the call to fail');
}

describe('writeFileAtomic', () => {
  it('writes the data with mode 0600 by default and leaves no temp file', async () => {
    const path = join(dir, 'record.json');
    await writeFileAtomic(path, 'hello');
    expect(await readFile(path, 'utf8')).toBe('hello');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['record.json']);
  });

  it('applies the mode it is given', async () => {
    const path = join(dir, 'record.json');
    await writeFileAtomic(path, new Uint8Array([1, 2, 3]), { mode: 0o640 });
    expect((await stat(path)).mode & 0o777).toBe(0o640);
    expect([...(await readFile(path))]).toEqual([1, 2, 3]);
  });

  it('replaces a longer file entirely with shorter data', async () => {
    const path = join(dir, 'record.json');
    await writeFileAtomic(path, 'a much longer first version');
    await writeFileAtomic(path, 'short');
    expect(await readFile(path, 'utf8')).toBe('short');
  });

  it('replaces an existing file with a new inode (rename), so an open reader keeps the old whole file', async () => {
    const path = join(dir, 'record.json');
    await writeFileAtomic(path, 'old');
    const before = (await stat(path)).ino;
    await writeFileAtomic(path, 'new');
    expect((await stat(path)).ino).not.toBe(before);
  });

  it('on failure throws ERR_STORE_IO without the data in the message and removes its temp file', async () => {
    const path = join(dir, 'target');
    await mkdir(path); // renaming a file over a directory fails
    const error = await caught(() => writeFileAtomic(path, 'secret-share-bytes'));
    expect(error.code).toBe('ERR_STORE_IO');
    expect(error.message).toContain('target');
    expect(error.message).not.toContain('secret-share-bytes');
    expect(await readdir(dir)).toEqual(['target']);
  });

  it('throws ERR_STORE_IO when the directory does not exist', async () => {
    await expectKosError(() => writeFileAtomic(join(dir, 'missing', 'record.json'), 'x'), 'ERR_STORE_IO');
  });

  it('with an aborted signal throws ERR_STORE_IO and leaves the old file untouched', async () => {
    const path = join(dir, 'record.json');
    await writeFileAtomic(path, 'old');
    await expectKosError(() => writeFileAtomic(path, 'new', { signal: AbortSignal.abort() }), 'ERR_STORE_IO');
    expect(await readFile(path, 'utf8')).toBe('old');
    expect(await readdir(dir)).toEqual(['record.json']);
  });
});

describe('encodeWithIntegrity / decodeWithIntegrity', () => {
  const body = { shareId: 's1', x: 3, nested: { list: [1, 'two'] } };

  it('encodes { v: 1, body, sha256: hex(SHA-256(JSON.stringify(body))) }', () => {
    const parsed = JSON.parse(encodeWithIntegrity(body)) as unknown;
    const sha256 = createHash('sha256').update(JSON.stringify(body)).digest('hex');
    expect(parsed).toEqual({ v: 1, body, sha256 });
  });

  it('decodes what it encoded', () => {
    expect(decodeWithIntegrity(encodeWithIntegrity(body), 'rec-1')).toEqual(body);
  });

  it.each([
    ['a changed body', (text: string) => text.replace('"x":3', '"x":4')],
    ['a changed digest', (text: string) => text.replace(/"sha256":"[0-9a-f]/, '"sha256":"g')],
    [
      'an upper-case digest',
      (text: string) => text.replace(/"sha256":"([0-9a-f]+)"/, (_m, hex: string) => `"sha256":"${hex.toUpperCase()}"`),
    ],
    ['format version 2', (text: string) => text.replace('"v":1', '"v":2')],
    ['a missing version', (text: string) => text.replace('"v":1,', '')],
    ['an extra field', (text: string) => text.replace('"v":1', '"v":1,"extra":true')],
    ['truncated JSON', (text: string) => text.slice(0, -10)],
    ['an empty file', () => ''],
    ['a JSON array', () => '[]'],
    ['a body that is not an object', () => JSON.stringify({ v: 1, body: 'x', sha256: '0'.repeat(64) })],
  ])('refuses %s with ERR_STORE_CORRUPT naming the record', async (_label, damage) => {
    const error = await caught(async () => decodeWithIntegrity(damage(encodeWithIntegrity(body)), 'rec-1'));
    expect(error.code).toBe('ERR_STORE_CORRUPT');
    expect(error.message).toContain('rec-1');
  });

  it('never quotes file contents in the error (JSON.parse would)', async () => {
    const error = await caught(async () => decodeWithIntegrity('{"v":1,"body":{"value":"c2VjcmV0', 'rec-1'));
    expect(error.code).toBe('ERR_STORE_CORRUPT');
    expect(`${error.message} ${String(error.cause)}`).not.toContain('c2VjcmV0');
  });

  it('readJsonWithIntegrity resolves undefined for a missing file and the body for a good one', async () => {
    const path = join(dir, 'rec.json');
    expect(await readJsonWithIntegrity(path, { id: 'rec' })).toBeUndefined();
    await writeFile(path, encodeWithIntegrity(body));
    expect(await readJsonWithIntegrity(path, { id: 'rec' })).toEqual(body);
  });

  it('readJsonWithIntegrity throws ERR_STORE_IO when the path cannot be read as a file', async () => {
    await expectKosError(() => readJsonWithIntegrity(dir, { id: 'rec' }), 'ERR_STORE_IO');
  });
});
