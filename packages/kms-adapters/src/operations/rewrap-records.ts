import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import {
  decodeEnvelope,
  encodeEnvelope,
  findEnvelopes,
  isCompactEnvelope,
  type KeyManager,
  KosError,
  replaceEnvelopes,
} from '@kos/core';
import { writeFileAtomic } from '../atomic-file.js';

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
  /** Records per batch: re-encrypted concurrently, written in order, then checkpointed (default 512). */
  readonly batchSize?: number;
  readonly onProgress?: (progress: RewrapProgress) => void;
  readonly signal?: AbortSignal;
}

interface Checkpoint {
  readonly inputBytes: number;
  readonly outputBytes: number;
  readonly records: number;
}

/** Re-encrypts every envelope in one record (any depth) under its key's primary version, keeping each envelope's form. */
export async function rewrapRecord(keys: KeyManager, record: unknown): Promise<{ record: unknown; envelopes: number }> {
  const found = findEnvelopes(record);
  if (found.length === 0) return { record, envelopes: 0 };
  const replaced = new Map<unknown, unknown>();
  for (const original of found) {
    const envelope = decodeEnvelope(original);
    const rewrapped = await keys.rewrap(envelope, { dataId: envelope.header.did });
    replaced.set(original, encodeEnvelope(rewrapped, isCompactEnvelope(original) ? 'compact' : 'json'));
  }
  return { record: replaceEnvelopes(record, (original) => replaced.get(original)), envelopes: found.length };
}

function bad(message: string): KosError {
  return new KosError('ERR_INVALID_ARGUMENT', `rewrap: ${message}`);
}

async function rewrapLines(options: RewrapOptions): Promise<RewrapProgress> {
  const { keys, input, output } = options;
  const progressPath = `${output}.progress`;
  const batchSize = options.batchSize ?? 512;
  const totalBytes = (await stat(input)).size;
  let checkpoint: Checkpoint = { inputBytes: 0, outputBytes: 0, records: 0 };
  const outputExists = await stat(output).then(
    () => true,
    () => false,
  );
  if (options.resume) {
    try {
      checkpoint = JSON.parse(await readFile(progressPath, 'utf8')) as Checkpoint;
    } catch {
      if (outputExists) throw bad(`${output} exists but has no progress file to resume from`);
    }
    // Anything written after the last checkpoint is redone.
    if (outputExists) await truncate(output, checkpoint.outputBytes);
  } else if (outputExists) {
    throw bad(`${output} already exists (use --resume to continue an interrupted run)`);
  }
  const out = await open(output, checkpoint.outputBytes > 0 ? 'r+' : 'w', 0o600);
  let outputBytes = checkpoint.outputBytes;
  let inputBytes = checkpoint.inputBytes;
  let records = checkpoint.records;
  let envelopes = 0;
  const lines = createInterface({
    input: createReadStream(input, { start: inputBytes }),
    crlfDelay: Number.POSITIVE_INFINITY,
  });
  let batch: string[] = [];

  const flush = async () => {
    const results = await Promise.all(
      batch.map(async (line) => {
        if (line.trim().length === 0) return { text: line, envelopes: 0 };
        let parsed: unknown;
        try {
          parsed = JSON.parse(line);
        } catch {
          throw bad(`line ${records + 1} is not JSON`);
        }
        const done = await rewrapRecord(keys, parsed);
        return { text: JSON.stringify(done.record), envelopes: done.envelopes };
      }),
    );
    const text = results.map((result) => `${result.text}\n`).join('');
    const { bytesWritten } = await out.write(text, outputBytes);
    await out.datasync();
    outputBytes += bytesWritten;
    inputBytes += batch.reduce((sum, line) => sum + Buffer.byteLength(line) + 1, 0);
    records += batch.length;
    envelopes += results.reduce((sum, result) => sum + result.envelopes, 0);
    batch = [];
    await writeFileAtomic(progressPath, JSON.stringify({ inputBytes, outputBytes, records }), { mode: 0o600 });
    options.onProgress?.({ records, envelopes, bytes: Math.min(inputBytes, totalBytes), totalBytes });
  };

  try {
    for await (const line of lines) {
      if (options.signal?.aborted) throw new KosError('ERR_INTERNAL', 'rewrap interrupted; run again with --resume');
      batch.push(line);
      if (batch.length >= batchSize) await flush();
    }
    if (batch.length > 0) await flush();
  } finally {
    await out.close();
  }
  await rm(progressPath, { force: true });
  return { records, envelopes, bytes: totalBytes, totalBytes };
}

async function rewrapFolder(options: RewrapOptions): Promise<RewrapProgress> {
  const { keys, input, output } = options;
  await mkdir(output, { recursive: true, mode: 0o700 });
  const names = (await readdir(input)).filter((name) => name.endsWith('.json')).sort();
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
    await Promise.all(
      slice.map(async (name) => {
        // A file in the output was written whole (temp + rename): it is done.
        if (!present.has(name)) {
          const done = await rewrapRecord(keys, JSON.parse(await readFile(join(input, name), 'utf8')));
          await writeFileAtomic(join(output, name), JSON.stringify(done.record), { mode: 0o600 });
          envelopes += done.envelopes;
        }
      }),
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
  const info = await stat(options.input).catch(() => {
    throw bad(`cannot read ${options.input}`);
  });
  return info.isDirectory() ? rewrapFolder(options) : rewrapLines(options);
}
