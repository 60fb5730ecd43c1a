import { type FileHandle, mkdir, open, readdir, readFile, rm, stat, truncate } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { encodeEnvelope, findEnvelopes, type KeyManager, KosError, replaceEnvelopes } from '@kos/core';
import { writeFileAtomic } from '../atomic-file.js';
import { LF, lineBatches } from './line-batches.js';
import { type Checkpoint, openProgress, readCheckpoint } from './progress-file.js';
import { EnvelopeCursor, type FoundEnvelopes, JsonOutput, writeRecord } from './rewrapped-json.js';

export interface RewrapProgress {
  /** Records (lines or files) done, including those skipped on resume. */
  readonly records: number;
  /** Envelopes re-encrypted in this run. */
  readonly envelopes: number;
  /** Input bytes done and in total (for rate and ETA). */
  readonly bytes: number;
  readonly totalBytes: number;
}

export interface RewrapOptions {
  readonly keys: KeyManager;
  /** A JSON-lines file (one record per line) or a folder of `.json` files (one record each). */
  readonly input: string;
  /** Where the rewrapped records go: a file for a file input, a folder for a folder input. */
  readonly output: string;
  /** Continue a run that stopped (crash, Ctrl-C) instead of refusing an existing output. */
  readonly resume?: boolean;
  /** Records per batch: each batch is written, fsynced and then checkpointed, in order (default 512). */
  readonly batchSize?: number;
  readonly onProgress?: (progress: RewrapProgress) => void;
  readonly signal?: AbortSignal;
}

/** Re-encrypts every envelope in one record (any depth) under its key's primary version, keeping each envelope's form. */
export async function rewrapRecord(keys: KeyManager, record: unknown): Promise<{ record: unknown; envelopes: number }> {
  const [found] = await rewrapEnvelopes(keys, [record]);
  if (!found || found.originals.length === 0) return { record, envelopes: 0 };
  const cursor = new EnvelopeCursor(found);
  const replaced = replaceEnvelopes(record, (original) => {
    const { envelope, compact } = cursor.next(original);
    return encodeEnvelope(envelope, compact ? 'compact' : 'json');
  });
  cursor.done();
  return { record: replaced, envelopes: found.originals.length };
}

/** Rewraps the envelopes of many records with one `KeyManager.rewrapMany` call (key state looked up once per key version). */
async function rewrapEnvelopes(keys: KeyManager, records: readonly unknown[]): Promise<FoundEnvelopes[]> {
  const found = records.map((record) => findEnvelopes(record));
  const rewrapped = await keys.rewrapMany(found.flat());
  let at = 0;
  return found.map((originals) => {
    const mine = rewrapped.slice(at, at + originals.length);
    at += originals.length;
    return { originals, rewrapped: mine };
  });
}

/**
 * Removes the temp files writeFileAtomic leaves in `dir` when a run is killed mid-write
 * (`.<target>.<16 hex>.tmp`), for the given target names only.
 */
async function removeLeftoverTempFiles(dir: string, targets: ReadonlySet<string>): Promise<void> {
  for (const name of await readdir(dir)) {
    const target = /^\.(.+)\.[0-9a-f]{16}\.tmp$/.exec(name)?.[1];
    if (target !== undefined && targets.has(target)) await rm(join(dir, name), { force: true });
  }
}

function bad(message: string): KosError {
  return new KosError('ERR_INVALID_ARGUMENT', `rewrap: ${message}`);
}

/**
 * Records re-encrypted together (one rewrapMany) inside a batch: large enough that the key
 * state looked up per group costs little, small enough that few parsed records are alive at
 * once (a whole batch of them outlives young-generation collections, which then copy it).
 */
const GROUP = 128;

/** Rewraps some input lines into `out`: each record rewrapped, blank lines kept, each line ended by LF. Resolves the envelopes rewrapped. */
async function rewrapLineGroup(
  keys: KeyManager,
  lines: readonly Buffer[],
  firstLine: number,
  out: JsonOutput,
): Promise<number> {
  const blank: Array<string | undefined> = new Array(lines.length);
  const parsed: unknown[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as Buffer).toString('utf8');
    if (line.trim().length === 0) {
      blank[i] = line;
      continue;
    }
    try {
      parsed.push(JSON.parse(line));
    } catch {
      throw bad(`line ${firstLine + i} is not JSON`);
    }
  }
  const found = await rewrapEnvelopes(keys, parsed);
  let envelopes = 0;
  let record = 0;
  for (let i = 0; i < lines.length; i++) {
    const text = blank[i];
    if (text !== undefined) out.text(text);
    else {
      envelopes += writeRecord(out, parsed[record], found[record] as FoundEnvelopes);
      record++;
    }
    out.byte(LF);
  }
  return envelopes;
}

/** Batches re-encrypted ahead of the one being written (each is still written, fsynced and checkpointed on its own). */
const BATCHES_AHEAD = 3;

async function rewrapLines(options: RewrapOptions): Promise<RewrapProgress> {
  const { keys, input, output } = options;
  const progressPath = `${output}.progress`;
  const batchSize = options.batchSize ?? 512;
  const totalBytes = (await stat(input)).size;
  let checkpoint: Checkpoint = { inputBytes: 0, outputBytes: 0, records: 0 };
  let seq = 0;
  const outputExists = await stat(output).then(
    () => true,
    () => false,
  );
  if (options.resume) {
    const saved = await readCheckpoint(progressPath);
    if (saved && outputExists) {
      ({ checkpoint, seq } = saved);
      // Anything written after the last checkpoint is redone.
      await truncate(output, checkpoint.outputBytes);
    } else if (outputExists) {
      throw bad(`${output} exists but has no progress file to resume from`);
    }
    // No output yet: nothing was written durably, so the run starts over.
  } else if (outputExists) {
    throw bad(`${output} already exists (use --resume to continue an interrupted run)`);
  }
  await removeLeftoverTempFiles(dirname(progressPath), new Set([basename(progressPath)]));
  // The progress file exists before the output does: an interrupted run can always be resumed.
  const progress = await openProgress(progressPath, checkpoint, seq);
  let out: FileHandle | undefined;
  let envelopes = 0;
  let records = checkpoint.records;
  // The next batch is re-encrypted while earlier ones are written; writes, fsyncs and
  // checkpoints stay strictly in order, each checkpoint after the output it covers is durable.
  let tail: Promise<void> = Promise.resolve();
  const queued: Promise<void>[] = [];
  // Output buffers whose batch is written, for the next batches.
  const spare: Buffer[] = [];
  try {
    out = await open(output, checkpoint.outputBytes > 0 ? 'r+' : 'w', 0o600);
    const file = out;
    const persist = async (data: Buffer, at: number, done: Checkpoint, added: number) => {
      let written = 0;
      while (written < data.length) {
        const { bytesWritten } = await file.write(data, written, data.length - written, at + written);
        written += bytesWritten;
      }
      await file.datasync();
      await progress.write(done);
      records = done.records;
      envelopes += added;
      options.onProgress?.({ records, envelopes, bytes: Math.min(done.inputBytes, totalBytes), totalBytes });
    };
    let next = checkpoint;
    for await (const batch of lineBatches(input, checkpoint.inputBytes, batchSize)) {
      if (options.signal?.aborted) throw new KosError('ERR_INTERNAL', 'rewrap interrupted; run again with --resume');
      const output = new JsonOutput(spare.pop() ?? Buffer.allocUnsafe(batch.bytes + (batch.bytes >> 3) + 4096));
      let added = 0;
      for (let from = 0; from < batch.lines.length; from += GROUP) {
        added += await rewrapLineGroup(keys, batch.lines.slice(from, from + GROUP), next.records + from + 1, output);
        // Re-encryption only awaits settled promises: let the event loop run the earlier
        // batches' writes and fsyncs along.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      const at = next.outputBytes;
      next = {
        inputBytes: next.inputBytes + batch.bytes,
        outputBytes: next.outputBytes + output.bytes.length,
        records: next.records + batch.lines.length,
      };
      const covered = next;
      tail = tail.then(async () => {
        await persist(output.bytes, at, covered, added);
        spare.push(output.buffer);
      });
      // Observed below (and in finally); a failed write stops every later one (they chain on it).
      tail.catch(() => undefined);
      queued.push(tail);
      if (queued.length > BATCHES_AHEAD) await queued.shift();
    }
    await tail;
  } finally {
    await tail.catch(() => undefined);
    await out?.close();
    await progress.close();
  }
  await rm(progressPath, { force: true });
  return { records, envelopes, bytes: totalBytes, totalBytes };
}

async function rewrapFolder(options: RewrapOptions): Promise<RewrapProgress> {
  const { keys, input, output } = options;
  await mkdir(output, { recursive: true, mode: 0o700 });
  const names = (await readdir(input)).filter((name) => name.endsWith('.json')).sort();
  await removeLeftoverTempFiles(output, new Set(names));
  const present = new Set(await readdir(output));
  if (!options.resume && names.some((name) => present.has(name))) {
    throw bad(`${output} already holds rewrapped records (use --resume to continue an interrupted run)`);
  }
  const sizes = await Promise.all(names.map(async (name) => (await stat(join(input, name))).size));
  const totalBytes = sizes.reduce((a, b) => a + b, 0);
  const batchSize = options.batchSize ?? 512;
  let records = 0;
  let envelopes = 0;
  let bytes = 0;
  for (let at = 0; at < names.length; at += batchSize) {
    if (options.signal?.aborted) throw new KosError('ERR_INTERNAL', 'rewrap interrupted; run again with --resume');
    const slice = names.slice(at, at + batchSize);
    // A file in the output was written whole (temp + rename): it is done.
    const todo = slice.filter((name) => !present.has(name));
    const texts = await Promise.all(todo.map((name) => readFile(join(input, name), 'utf8')));
    const parsed = texts.map((text, index) => {
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw bad(`${todo[index]} is not JSON`);
      }
    });
    const found = await rewrapEnvelopes(keys, parsed);
    const outputs = texts.map((text, index) => {
      const out = new JsonOutput(Buffer.allocUnsafe(text.length + 1024));
      envelopes += writeRecord(out, parsed[index], found[index] as FoundEnvelopes);
      return out;
    });
    await Promise.all(
      todo.map((name, index) =>
        writeFileAtomic(join(output, name), (outputs[index] as JsonOutput).bytes, { mode: 0o600 }),
      ),
    );
    records += slice.length;
    bytes += sizes.slice(at, at + batchSize).reduce((a, b) => a + b, 0);
    options.onProgress?.({ records, envelopes, bytes, totalBytes });
  }
  return { records, envelopes, bytes: totalBytes, totalBytes };
}

/**
 * Re-encrypts every envelope of a stream (JSON lines) or a folder of records to the primary
 * version of its key, in bounded memory (one batch at a time), resumable after a crash: a
 * file run checkpoints after every batch (`<output>.progress`, output fsynced first), a folder
 * run writes each record atomically and skips the ones already written.
 */
export async function rewrapRecords(options: RewrapOptions): Promise<RewrapProgress> {
  const batchSize = options.batchSize ?? 512;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw bad('batch size must be an integer >= 1');
  const info = await stat(options.input).catch(() => {
    throw bad(`cannot read ${options.input}`);
  });
  return info.isDirectory() ? rewrapFolder(options) : rewrapLines(options);
}
