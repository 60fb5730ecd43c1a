import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createFileMetadataStore } from '../src/index.js';
import { makeKeyRecord } from '../src/testing/index.js';
import { type FixtureProcess, spawnFixture } from './helpers/fixture-process.js';
import { freshTempDirEach } from './helpers/temp-dir.js';

let dir: string;
freshTempDirEach((fresh) => {
  dir = join(fresh, 'meta');
});

/** Starts two racers, waits until both are ready, then releases them at the same moment. */
async function race(args: (tag: number) => string[]): Promise<string[]> {
  const racers: FixtureProcess[] = [1, 2].map((tag) => spawnFixture('metadata-racer', args(tag)));
  await Promise.all(racers.map((racer) => racer.waitForLine('ready')));
  for (const racer of racers) racer.child.stdin?.write('go\n');
  const exits = await Promise.all(racers.map((racer) => racer.exited));
  for (const exit of exits) expect(exit.code, exit.stderr).toBe(0);
  return exits.map((exit) => exit.stdout.trim().split('\n').at(-1) ?? '');
}

describe('file metadata store shared by two processes', () => {
  it('two processes each adding 1 fifty times to the same counter give exactly 100', async () => {
    await race(() => [dir, 'ops', '50']);
    expect(await createFileMetadataStore({ dir }).getOps('race-key', 1)).toBe(100);
  }, 60_000);

  it('putKey compare-and-set: from each revision exactly one process wins, never both', async () => {
    const rounds = 30;
    const store = createFileMetadataStore({ dir });
    await store.putKey(makeKeyRecord('race-key', 0), null);

    const outputs = await race((tag) => [dir, 'cas', String(rounds), String(tag)]);
    const [winsOf1, winsOf2] = outputs.map((line) => (JSON.parse(line) as { wins: number[] }).wins);

    // Round 1: both started from revision 1; exactly one of them wrote revision 2.
    expect([winsOf1!.includes(1), winsOf2!.includes(1)].filter(Boolean)).toHaveLength(1);
    // Every revision step was won by exactly one process.
    expect(winsOf1!.filter((round) => winsOf2!.includes(round))).toEqual([]);
    expect([...winsOf1!, ...winsOf2!].sort((a, b) => a - b)).toEqual(Array.from({ length: rounds }, (_, i) => i + 1));
    // The stored record is the last winner's write, at the revision the wins add up to.
    const lastWinner = winsOf1!.includes(rounds) ? 1 : 2;
    expect(await store.getKey('race-key')).toEqual({
      value: makeKeyRecord('race-key', lastWinner * 1000 + rounds),
      revision: rounds + 1,
    });
  }, 60_000);
});
