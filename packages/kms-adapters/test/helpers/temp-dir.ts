import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach } from 'vitest';

/** A fresh empty directory under the OS temp dir, and a function that removes it. */
export async function makeTempDir(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'kos-kms-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * Gives every test of the calling file a fresh temp dir: `use` receives it before the test, and
 * the dir is removed after the test.
 */
export function freshTempDirEach(use: (dir: string) => void): void {
  beforeEach(async () => {
    const { dir, remove } = await makeTempDir();
    use(dir);
    return remove;
  });
}
