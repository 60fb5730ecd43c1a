import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeEnvelope, encodeEnvelope, KeyManager, utf8 } from '@kos/core';
import { expect, it } from 'vitest';
import { createFileMetadataStore, createFileShareStore } from '../src/index.js';
import { spawnFixture } from './helpers/fixture-process.js';
import { freshTempDirEach } from './helpers/temp-dir.js';

const RECORDS = 1500;
const KILLS = 5;

let dir: string;
freshTempDirEach((fresh) => {
  dir = fresh;
});

function fileKeys(): KeyManager {
  return new KeyManager({
    metadata: createFileMetadataStore({ dir: join(dir, 'meta') }),
    nodes: [1, 2, 3].map((i) => createFileShareStore({ nodeId: `node-${i}`, dir: join(dir, `node-${i}`) })),
  });
}

it('a rewrap SIGKILLed at random moments and resumed each time ends with every record rewrapped exactly once, in order', {
  timeout: 120_000,
}, async () => {
  const keys = fileKeys();
  await keys.createKey('records');
  const lines: string[] = [];
  for (let i = 0; i < RECORDS; i++) {
    const envelope = await keys.seal('records', utf8(`{"i":${i}}`), { dataId: `r${i}` });
    lines.push(JSON.stringify({ id: `r${i}`, data: encodeEnvelope(envelope, i % 4 === 0 ? 'compact' : 'json'), n: i }));
  }
  const input = join(dir, 'records.jsonl');
  const output = join(dir, 'rewrapped.jsonl');
  await writeFile(input, `${lines.join('\n')}\n`);
  await keys.rotate('records');

  // Kill runs at different moments; a run that gets to the end before its kill counts as done.
  let done = '';
  for (let round = 0; round < KILLS && !done; round++) {
    const runner = spawnFixture('rewrap-runner', [dir, input, output, '50', ...(round > 0 ? ['resume'] : [])]);
    await runner.waitForLine('ready', 60_000);
    // A different moment each round: before the first checkpoint, between, or mid-batch.
    await new Promise((resolveWait) => setTimeout(resolveWait, 20 + ((round * 37) % 120)));
    runner.child.kill('SIGKILL');
    const exit = await runner.exited;
    done = /^done .*$/m.exec(exit.stdout)?.[0] ?? '';
    if (!done) expect(exit.signal).toBe('SIGKILL');
  }
  if (!done) {
    const last = spawnFixture('rewrap-runner', [dir, input, output, '50', 'resume']);
    const exit = await last.exited;
    expect(exit.code, exit.stderr).toBe(0);
    done = /^done .*$/m.exec(exit.stdout)?.[0] ?? '';
  }
  expect(done).toMatch(new RegExp(`^done ${RECORDS} \\d+$`));

  const out = (await readFile(output, 'utf8')).split('\n');
  expect(out.pop()).toBe('');
  expect(out).toHaveLength(RECORDS);
  const check = fileKeys();
  for (const [i, line] of out.entries()) {
    const record = JSON.parse(line) as { id: string; data: unknown; n: number };
    expect(record.id).toBe(`r${i}`);
    expect(record.n).toBe(i);
    expect(typeof record.data).toBe(i % 4 === 0 ? 'string' : 'object');
    const envelope = decodeEnvelope(record.data);
    expect(envelope.header.ver).toBe(2);
    if (i % 7 === 0)
      expect(new TextDecoder().decode(await check.open(envelope, { dataId: `r${i}` }))).toBe(`{"i":${i}}`);
  }
  const names = await readdir(dir);
  expect(
    names.filter((name) => name.includes('rewrapped')),
    names.join(' '),
  ).toEqual(['rewrapped.jsonl']);
});
