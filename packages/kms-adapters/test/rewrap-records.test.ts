import { appendFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  decodeEnvelope,
  type Envelope,
  encodeEnvelope,
  isCompactEnvelope,
  isEnvelopeJson,
  isKosError,
  KeyManager,
  utf8,
} from '@kos/core';
import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  createMemoryMetadataStore,
  createMemoryShareStore,
  type RewrapProgress,
  rewrapRecord,
  rewrapRecords,
} from '../src/index.js';
import { freshTempDirEach } from './helpers/temp-dir.js';

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

let dir: string;
freshTempDirEach((fresh) => {
  dir = fresh;
});

function newKeys(options: Partial<ConstructorParameters<typeof KeyManager>[0]> = {}): KeyManager {
  return new KeyManager({
    metadata: createMemoryMetadataStore(),
    nodes: Array.from({ length: 3 }, (_, i) => createMemoryShareStore({ nodeId: `node-${i + 1}` })),
    ...options,
  });
}

/** Every envelope (JSON form or compact) in a value, in walk order, with its path. */
function envelopesIn(value: unknown, path = '$', depth = 0, out: Array<{ path: string; value: unknown }> = []) {
  if (depth <= 64 && (isCompactEnvelope(value) || isEnvelopeJson(value))) out.push({ path, value });
  else if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) envelopesIn(item, `${path}[${i}]`, depth + 1, out);
  } else if (typeof value === 'object' && value !== null) {
    for (const [key, item] of Object.entries(value)) envelopesIn(item, `${path}.${key}`, depth + 1, out);
  }
  return out;
}

/** The value with every envelope replaced by a marker, to compare everything else. */
function withoutEnvelopes(value: unknown, depth = 0): unknown {
  if (depth <= 64 && (isCompactEnvelope(value) || isEnvelopeJson(value))) return '<envelope>';
  if (Array.isArray(value)) return value.map((item) => withoutEnvelopes(item, depth + 1));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      Object.defineProperty(out, key, { value: withoutEnvelopes(item, depth + 1), enumerable: true });
    }
    return out;
  }
  return value;
}

/**
 * Checks one output line against its input line: the same record with each envelope in the
 * same form, now at `version`, opening to the same plaintext for the same data id; and the
 * line is exactly what JSON.stringify writes for it.
 */
async function expectRewrapped(keys: KeyManager, inputLine: string, outputLine: string, version: number) {
  if (inputLine.trim().length === 0) {
    expect(outputLine).toBe(inputLine);
    return;
  }
  const before = JSON.parse(inputLine) as unknown;
  const after = JSON.parse(outputLine) as unknown;
  expect(outputLine).toBe(JSON.stringify(after));
  // Everything else as JSON.stringify writes it (-0 becomes 0, 1E3 becomes 1000, …).
  expect(withoutEnvelopes(after)).toEqual(withoutEnvelopes(JSON.parse(JSON.stringify(before))));
  const old = envelopesIn(before);
  const now = envelopesIn(after);
  expect(now.map((e) => e.path)).toEqual(old.map((e) => e.path));
  for (const [i, { value }] of now.entries()) {
    const original = old[i]?.value as unknown;
    expect(typeof value).toBe(typeof original);
    const envelope = decodeEnvelope(value);
    const previous = decodeEnvelope(original);
    expect(envelope.header.ver).toBe(version);
    expect(envelope.header.did).toBe(previous.header.did);
    expect(text(await keys.open(envelope, { dataId: previous.header.did }))).toBe(
      text(await keys.open(previous, { dataId: previous.header.did })),
    );
  }
}

async function sealed(keys: KeyManager, kid: string, plaintext: string, dataId: string): Promise<Envelope> {
  return keys.seal(kid, utf8(plaintext), { dataId });
}

/** A JSON-lines input of `count` records, every third one with a compact envelope nested in an array. */
async function writeRecords(keys: KeyManager, path: string, count: number, eol = '\n'): Promise<string[]> {
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const envelope = await sealed(keys, 'records', JSON.stringify({ i, body: 'x'.repeat(40) }), `r${i}`);
    lines.push(
      i % 3 === 2
        ? JSON.stringify({ id: `r${i}`, list: [1, { data: encodeEnvelope(envelope, 'compact') }] })
        : JSON.stringify({ id: `r${i}`, data: encodeEnvelope(envelope, 'json') }),
    );
  }
  await writeFile(path, lines.join(eol) + eol);
  return lines;
}

async function outputLines(path: string): Promise<string[]> {
  const content = await readFile(path, 'utf8');
  expect(content.endsWith('\n')).toBe(true);
  return content.slice(0, -1).split('\n');
}

async function expectAllRewrapped(keys: KeyManager, input: string[], output: string, version = 2) {
  const lines = await outputLines(output);
  expect(lines).toHaveLength(input.length);
  for (const [i, line] of lines.entries()) await expectRewrapped(keys, input[i] as string, line, version);
}

/** Runs a rewrap that stops (as an interrupted run would) once `after` checkpoints are written. */
async function interruptedRun(keys: KeyManager, input: string, output: string, after: number, batchSize: number) {
  const controller = new AbortController();
  let calls = 0;
  const error = await rewrapRecords({
    keys,
    input,
    output,
    batchSize,
    signal: controller.signal,
    onProgress: () => {
      calls++;
      if (calls === after) controller.abort();
    },
  }).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(isKosError(error, 'ERR_INTERNAL')).toBe(true);
  expect(String((error as Error).message)).toMatch(/--resume/);
}

/** The checkpoint in the newer valid slot of a progress file, and that slot's index. */
async function newestSlot(path: string) {
  const bytes = await readFile(path);
  expect(bytes.length).toBe(1024);
  const slots = [0, 1].map(
    (i) =>
      JSON.parse(bytes.subarray(i * 512, (i + 1) * 512).toString('utf8')) as {
        seq: number;
        inputBytes: number;
        outputBytes: number;
        records: number;
      },
  );
  const index = (slots[1]?.seq ?? -1) > (slots[0]?.seq ?? -1) ? 1 : 0;
  return { index, slot: slots[index] as (typeof slots)[number], other: slots[1 - index] as (typeof slots)[number] };
}

describe('rewrapRecords on a JSON-lines file', () => {
  it('rewraps every envelope at any depth in its own form, and keeps blank lines, CRLF input and a last line without LF', async () => {
    const keys = newKeys();
    await keys.createKey('records');
    await keys.createKey('other');
    const a = await sealed(keys, 'records', '{"card":"4111"}', 'a');
    const b = await sealed(keys, 'other', 'plain text é ✓', 'b-ü');
    const c = await sealed(keys, 'records', '', 'c');
    let deep: unknown = encodeEnvelope(c, 'compact');
    // The innermost array sits at depth 64, so the string is at 65.
    for (let i = 0; i < 64; i++) deep = [deep];
    const lines = [
      JSON.stringify({ id: 'a', data: encodeEnvelope(a, 'json') }),
      '   ',
      // An own "__proto__" field, non-ASCII text, numbers JSON.stringify rewrites.
      `{"id":"b","__proto__":{"x":1},"n":[1E3,-0,0.1,1e21],"t":"é\\u2028\\"","nested":{"list":[null,true,${JSON.stringify(encodeEnvelope(b, 'compact'))},{"data":${JSON.stringify(encodeEnvelope(c, 'json'))}}]}}`,
      '',
      JSON.stringify({ id: 'plain', note: 'no envelope here' }),
      // A compact envelope deeper than MAX_BODY_DEPTH is not an envelope KOS looks at (left as is).
      JSON.stringify({ id: 'deep', data: encodeEnvelope(c, 'json'), deep }),
      JSON.stringify({ id: 'last', data: encodeEnvelope(a, 'compact') }),
    ];
    const input = join(dir, 'in.jsonl');
    // CRLF line breaks, and no break after the last line.
    await writeFile(input, lines.join('\r\n'));
    await keys.rotate('records');
    await keys.rotate('other');
    const output = join(dir, 'out.jsonl');
    const progress: RewrapProgress[] = [];
    const result = await rewrapRecords({ keys, input, output, batchSize: 3, onProgress: (p) => progress.push(p) });
    expect(result).toMatchObject({ records: lines.length, envelopes: 5 });
    expect(result.bytes).toBe(result.totalBytes);
    expect(progress.map((p) => p.records)).toEqual([3, 6, 7]);
    expect(progress.at(-1)?.bytes).toBe(result.totalBytes);
    await expectAllRewrapped(keys, lines, output);
    // The deep one is left as it was.
    let inner = (JSON.parse((await outputLines(output))[5] as string) as { deep: unknown }).deep;
    for (let i = 0; i < 64; i++) inner = (inner as unknown[])[0];
    expect(inner).toBe(encodeEnvelope(c, 'compact'));
    await expect(readdir(dir)).resolves.toEqual(['in.jsonl', 'out.jsonl']);
  });

  it('writes what JSON.stringify writes for the rewrapped record, for any JSON around the envelopes', async () => {
    const keys = newKeys();
    await keys.createKey('records');
    const envelope = await sealed(keys, 'records', 'secret', 'd-1');
    await keys.rotate('records');
    const json = encodeEnvelope(envelope, 'json');
    const compact = encodeEnvelope(envelope, 'compact');
    const withEnvelopes = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        fc.jsonValue({ maxDepth: 2 }),
        // Any UTF-16 text (lone surrogates included), short and long, in values and keys.
        fc.jsonValue({ maxDepth: 2, stringUnit: 'binary' }),
        fc.string({ unit: 'binary', minLength: 30, maxLength: 80 }),
        fc.constant(json),
        fc.constant(compact),
        fc.array(tie('value'), { maxLength: 4 }),
        fc.dictionary(fc.string({ maxLength: 6, unit: 'binary' }), tie('value'), { maxKeys: 4 }),
      ),
    })).value;
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(withEnvelopes, { minLength: 1, maxLength: 6 }), async (records) => {
        run++;
        const lines = records.map((record) => JSON.stringify(record) ?? 'null');
        const input = join(dir, `in-${run}.jsonl`);
        const output = join(dir, `out-${run}.jsonl`);
        await writeFile(input, `${lines.join('\n')}\n`);
        await rewrapRecords({ keys, input, output, batchSize: 4 });
        const out = await outputLines(output);
        expect(out).toHaveLength(lines.length);
        for (const [i, line] of out.entries()) await expectRewrapped(keys, lines[i] as string, line, 2);
      }),
      { seed: 42, numRuns: 60 },
    );
  });

  it('reads lines and batches larger than its read buffers (1 MiB, reused)', async () => {
    const keys = newKeys();
    await keys.createKey('records');
    const lines: string[] = [];
    for (let i = 0; i < 24; i++) {
      const envelope = await sealed(keys, 'records', `v${i}`, `big-${i}`);
      // 300 kB of text per record (one batch spans many buffers), and one line of 2.5 MB.
      const size = i === 11 ? 2_500_000 : 300_000;
      const text = String.fromCharCode(97 + (i % 26)).repeat(size);
      lines.push(JSON.stringify({ id: `big-${i}`, text, data: encodeEnvelope(envelope, 'json') }));
    }
    const input = join(dir, 'in.jsonl');
    await writeFile(input, `${lines.join('\n')}\n`);
    await keys.rotate('records');
    for (const batchSize of [1000, 5]) {
      const output = join(dir, `out-${batchSize}.jsonl`);
      const result = await rewrapRecords({ keys, input, output, batchSize });
      expect(result).toMatchObject({ records: 24, envelopes: 24 });
      await expectAllRewrapped(keys, lines, output);
    }
  });

  it('names the line that is not JSON', async () => {
    const keys = newKeys();
    await keys.createKey('records');
    const input = join(dir, 'in.jsonl');
    const lines = await writeRecords(keys, input, 8);
    lines[6] = '{"id": broken';
    await writeFile(input, `${lines.join('\n')}\n`);
    const error = await rewrapRecords({ keys, input, output: join(dir, 'out.jsonl'), batchSize: 5 }).catch(
      (caught: unknown) => caught,
    );
    expect(isKosError(error, 'ERR_INVALID_ARGUMENT')).toBe(true);
    expect((error as Error).message).toMatch(/line 7 is not JSON/);
  });

  it('refuses an existing output unless resuming, and a resume without a progress file', async () => {
    const keys = newKeys();
    await keys.createKey('records');
    const input = join(dir, 'in.jsonl');
    await writeRecords(keys, input, 3);
    const output = join(dir, 'out.jsonl');
    await writeFile(output, 'someone else’s file\n');
    const refused = await rewrapRecords({ keys, input, output }).catch((caught: unknown) => caught);
    expect(isKosError(refused, 'ERR_INVALID_ARGUMENT')).toBe(true);
    expect((refused as Error).message).toMatch(/--resume/);
    const noProgress = await rewrapRecords({ keys, input, output, resume: true }).catch((caught: unknown) => caught);
    expect((noProgress as Error).message).toMatch(/no progress file/);
    await expect(readFile(output, 'utf8')).resolves.toBe('someone else’s file\n');
  });

  it('refuses a batch size that is not a positive integer', async () => {
    const keys = newKeys();
    for (const batchSize of [0, -1, 1.5, Number.NaN]) {
      const error = await rewrapRecords({ keys, input: dir, output: join(dir, 'out'), batchSize }).catch(
        (caught: unknown) => caught,
      );
      expect(isKosError(error, 'ERR_INVALID_ARGUMENT'), String(batchSize)).toBe(true);
    }
  });

  describe('resuming an interrupted run', () => {
    let keys: KeyManager;
    let input: string;
    let output: string;
    let lines: string[];

    beforeEach(async () => {
      keys = newKeys();
      await keys.createKey('records');
      input = join(dir, 'in.jsonl');
      output = join(dir, 'out.jsonl');
      lines = await writeRecords(keys, input, 200, '\r\n');
      await keys.rotate('records');
    });

    it('redoes what was written after the last checkpoint, and does every record exactly once', async () => {
      await interruptedRun(keys, input, output, 3, 20);
      const { slot } = await newestSlot(`${output}.progress`);
      expect(slot.records).toBeGreaterThanOrEqual(60);
      expect(slot.records).toBeLessThan(200);
      // As if the process died mid-write: output past the checkpoint, half a record.
      await appendFile(output, '{"id":"r-half-writ');
      const result = await rewrapRecords({ keys, input, output, resume: true, batchSize: 20 });
      expect(result.records).toBe(200);
      expect(result.envelopes).toBe(200 - slot.records);
      await expectAllRewrapped(keys, lines, output);
      await expect(readdir(dir)).resolves.toEqual(['in.jsonl', 'out.jsonl']);
    });

    it('falls back to the older checkpoint when the newer one is torn', async () => {
      await interruptedRun(keys, input, output, 2, 20);
      const { index, other } = await newestSlot(`${output}.progress`);
      const bytes = await readFile(`${output}.progress`);
      // Half of the newest slot rewritten with other bytes: its check fails.
      bytes.fill(0x41, index * 512, index * 512 + 100);
      await writeFile(`${output}.progress`, bytes);
      const result = await rewrapRecords({ keys, input, output, resume: true, batchSize: 20 });
      expect(result.envelopes).toBe(200 - other.records);
      await expectAllRewrapped(keys, lines, output);
    });

    it('refuses a progress file whose slots are both damaged rather than guessing', async () => {
      await interruptedRun(keys, input, output, 2, 20);
      const bytes = await readFile(`${output}.progress`);
      const slot = JSON.parse(bytes.subarray(0, 512).toString('utf8')) as Record<string, number>;
      // Valid JSON with a wrong check in both slots (e.g. edited by hand).
      const forged = Buffer.from(`${JSON.stringify({ ...slot, records: 0 }).padEnd(511, ' ')}\n`);
      await writeFile(`${output}.progress`, Buffer.concat([forged, forged]));
      const error = await rewrapRecords({ keys, input, output, resume: true }).catch((caught: unknown) => caught);
      expect((error as Error).message).toMatch(/no progress file/);
    });

    it('resumes from the single-object progress file earlier versions wrote', async () => {
      await interruptedRun(keys, input, output, 2, 20);
      const { slot } = await newestSlot(`${output}.progress`);
      await writeFile(
        `${output}.progress`,
        JSON.stringify({ inputBytes: slot.inputBytes, outputBytes: slot.outputBytes, records: slot.records }),
      );
      const result = await rewrapRecords({ keys, input, output, resume: true, batchSize: 20 });
      expect(result.envelopes).toBe(200 - slot.records);
      await expectAllRewrapped(keys, lines, output);
    });

    it('starts over when the output is gone, whatever the progress file says', async () => {
      await interruptedRun(keys, input, output, 2, 20);
      await writeFile(output, '');
      await import('node:fs/promises').then(({ rm }) => rm(output));
      const result = await rewrapRecords({ keys, input, output, resume: true, batchSize: 20 });
      expect(result.envelopes).toBe(200);
      await expectAllRewrapped(keys, lines, output);
    });
  });
});

describe('rewrapRecords on a folder', () => {
  it('rewraps each record file, and a resume skips the files already written', async () => {
    const keys = newKeys();
    await keys.createKey('records');
    const input = join(dir, 'in');
    const output = join(dir, 'out');
    await mkdir(input);
    const texts: string[] = [];
    for (let i = 0; i < 7; i++) {
      const envelope = await sealed(keys, 'records', `value ${i}`, `f${i}`);
      texts.push(JSON.stringify({ id: `f${i}`, data: encodeEnvelope(envelope, i % 2 ? 'compact' : 'json') }));
      await writeFile(join(input, `f${i}.json`), texts[i] as string);
    }
    await writeFile(join(input, 'notes.txt'), 'not a record');
    await keys.rotate('records');
    await mkdir(output);
    await writeFile(join(output, 'f3.json'), '"done before"');
    // What a run killed in the middle of writing f5.json leaves behind.
    await writeFile(join(output, '.f5.json.0123456789abcdef.tmp'), '{"id":');
    const refused = await rewrapRecords({ keys, input, output }).catch((caught: unknown) => caught);
    expect((refused as Error).message).toMatch(/--resume/);
    const result = await rewrapRecords({ keys, input, output, resume: true, batchSize: 3 });
    expect(result).toMatchObject({ records: 7, envelopes: 6 });
    expect((await readdir(output)).sort()).toEqual(texts.map((_, i) => `f${i}.json`));
    await expect(readFile(join(output, 'f3.json'), 'utf8')).resolves.toBe('"done before"');
    for (const [i, original] of texts.entries()) {
      if (i === 3) continue;
      await expectRewrapped(keys, original, await readFile(join(output, `f${i}.json`), 'utf8'), 2);
    }
  });

  it('names a record file that is not JSON', async () => {
    const keys = newKeys();
    const input = join(dir, 'in');
    await mkdir(input);
    await writeFile(join(input, 'a.json'), '{');
    const error = await rewrapRecords({ keys, input, output: join(dir, 'out') }).catch((caught: unknown) => caught);
    expect(isKosError(error, 'ERR_INVALID_ARGUMENT')).toBe(true);
    expect((error as Error).message).toMatch(/a\.json is not JSON/);
  });
});

describe('rewrapRecord', () => {
  it('returns a copy with every envelope rewrapped in its form, the input unchanged', async () => {
    const keys = newKeys();
    await keys.createKey('records');
    const a = await sealed(keys, 'records', 'one', 'x');
    const compact = encodeEnvelope(a, 'compact');
    const record = { id: 'x', list: [compact, compact], data: encodeEnvelope(a, 'json') };
    const before = JSON.stringify(record);
    await keys.rotate('records');
    const done = await rewrapRecord(keys, record);
    expect(done.envelopes).toBe(3);
    expect(JSON.stringify(record)).toBe(before);
    await expectRewrapped(keys, before, JSON.stringify(done.record), 2);
    const list = (done.record as { list: string[] }).list;
    // The same compact string twice is rewrapped twice (fresh nonces).
    expect(list[0]).not.toBe(list[1]);
    expect(await rewrapRecord(keys, { id: 'none' })).toEqual({ record: { id: 'none' }, envelopes: 0 });
  });
});
