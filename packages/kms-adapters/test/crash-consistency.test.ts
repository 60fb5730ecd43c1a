import { readdir } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { expect, it } from 'vitest';
import { createFileShareStore } from '../src/index.js';
import { CRASH_SHARE_IDS, generationShare } from './fixtures/generations.js';
import { spawnFixture } from './helpers/fixture-process.js';
import { freshTempDirEach } from './helpers/temp-dir.js';

const KILLS = 20;

let dir: string;
freshTempDirEach((fresh) => {
  dir = fresh;
});

const SHARE_FILE_NAMES = new Set(CRASH_SHARE_IDS.map((id) => `${id}.share.json`));
const TEMP_FILE = /^\..+\.tmp$/;

it('a writer SIGKILLed at random moments leaves every share as one complete generation, never torn', async () => {
  const seenGenerations = new Set<number>();
  for (let round = 0; round < KILLS; round++) {
    const writer = spawnFixture('share-writer', [dir]);
    await writer.waitForLine('ready');
    // Spread the kills over the writer's loop: 0–40 ms in, a different moment each round.
    await new Promise((resolveDelay) => setTimeout(resolveDelay, ((round * 17) % 41) + Math.random() * 3));
    writer.child.kill('SIGKILL');
    const exit = await writer.exited;
    expect(exit.signal).toBe('SIGKILL');

    // Nothing but whole share files under the real names; temp files may remain (hidden, swept later).
    for (const name of await readdir(dir)) {
      expect(SHARE_FILE_NAMES.has(name) || TEMP_FILE.test(name), `unexpected file ${name}`).toBe(true);
    }

    const store = createFileShareStore({ nodeId: 'crash-node', dir });
    for (const [index, shareId] of CRASH_SHARE_IDS.entries()) {
      const share = await store.get(shareId);
      const generation = [0, 1].find((g) => isDeepStrictEqual(share, generationShare(index, g as 0 | 1)));
      expect(generation, `round ${round}: ${shareId} is not a complete generation`).toBeDefined();
      seenGenerations.add(generation!);
    }
  }
  // The writer really was overwriting: both generations were caught on disk.
  expect([...seenGenerations].sort()).toEqual([0, 1]);
}, 180_000);
