import { createHash } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, readFile, rm, stat, truncate } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import {
  type Envelope,
  encodeEnvelope,
  encodeEnvelopeJsonParts,
  findEnvelopes,
  type KeyManager,
  KosError,
  MAX_BODY_DEPTH,
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
  /** Records per batch: each batch is written, fsynced and then checkpointed, in order (default 512). */
  readonly batchSize?: number;
  readonly onProgress?: (progress: RewrapProgress) => void;
  readonly signal?: AbortSignal;
}

interface Checkpoint {
  readonly inputBytes: number;
  readonly outputBytes: number;
  readonly records: number;
}

/**
 * The progress file (`<output>.progress`): two fixed 512-byte slots, written in turn in place
 * (no rename). Each slot is a line of JSON with a sequence number and a SHA-256 over its
 * fields; a torn or corrupt slot fails its check and the other slot, one checkpoint older, is
 * used. The file itself is created atomically. A checkpoint is written only once the output it
 * covers is fsynced, so whichever checkpoint the disk holds after a crash is safe to resume from.
 */
const SLOT_BYTES = 512;

function slotCheck(seq: number, checkpoint: Checkpoint): string {
  return createHash('sha256')
    .update(`kos-rewrap-progress:${seq}:${checkpoint.inputBytes}:${checkpoint.outputBytes}:${checkpoint.records}`)
    .digest('hex');
}

function encodeSlot(seq: number, checkpoint: Checkpoint): Buffer {
  const { inputBytes, outputBytes, records } = checkpoint;
  const text = JSON.stringify({ seq, inputBytes, outputBytes, records, check: slotCheck(seq, checkpoint) });
  return Buffer.from(`${text.padEnd(SLOT_BYTES - 1, ' ')}\n`, 'utf8');
}

const isCount = (value: unknown): value is number =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;

function decodeSlot(bytes: Buffer): { seq: number; checkpoint: Checkpoint } | undefined {
  try {
    const slot = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    const { seq, inputBytes, outputBytes, records, check } = slot;
    if (!isCount(seq) || !isCount(inputBytes) || !isCount(outputBytes) || !isCount(records)) return undefined;
    const checkpoint = { inputBytes, outputBytes, records };
    return check === slotCheck(seq, checkpoint) ? { seq, checkpoint } : undefined;
  } catch {
    return undefined;
  }
}

/** The last checkpoint in a progress file (either slot format, or the single JSON object older versions wrote). */
async function readCheckpoint(path: string): Promise<{ seq: number; checkpoint: Checkpoint } | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch {
    return undefined;
  }
  if (bytes.length !== 2 * SLOT_BYTES) {
    try {
      const { inputBytes, outputBytes, records } = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
      if (isCount(inputBytes) && isCount(outputBytes) && isCount(records)) {
        return { seq: 0, checkpoint: { inputBytes, outputBytes, records } };
      }
    } catch {
      // Not a progress file.
    }
    return undefined;
  }
  const slots = [decodeSlot(bytes.subarray(0, SLOT_BYTES)), decodeSlot(bytes.subarray(SLOT_BYTES))];
  return slots.reduce<{ seq: number; checkpoint: Checkpoint } | undefined>(
    (best, slot) => (slot && (!best || slot.seq > best.seq) ? slot : best),
    undefined,
  );
}

/** Creates the progress file (atomically, both slots holding `checkpoint`) and returns a writer for the next ones. */
async function openProgress(
  path: string,
  checkpoint: Checkpoint,
  seq: number,
): Promise<{ write(next: Checkpoint): Promise<void>; close(): Promise<void> }> {
  const first = encodeSlot(seq, checkpoint);
  await writeFileAtomic(path, Buffer.concat([first, first]), { mode: 0o600 });
  const file = await open(path, 'r+');
  let at = seq;
  // The fsync of a checkpoint runs while the next batch's output is written and fsynced (no
  // order is needed between them); it is awaited before the next checkpoint is written.
  let syncing: Promise<void> = Promise.resolve();
  return {
    async write(next) {
      await syncing;
      at += 1;
      const slot = encodeSlot(at, next);
      await file.write(slot, 0, SLOT_BYTES, (at % 2) * SLOT_BYTES);
      syncing = file.datasync();
      syncing.catch(() => undefined);
    },
    async close() {
      try {
        await syncing;
      } finally {
        await file.close();
      }
    },
  };
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

interface FoundEnvelopes {
  /** The envelopes of one record as findEnvelopes lists them, and their rewrapped forms. */
  readonly originals: readonly unknown[];
  readonly rewrapped: readonly Envelope[];
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
 * Hands out a record's rewrapped envelopes to a walk that visits the envelopes in the order
 * findEnvelopes listed them (checked: a walk in another order fails instead of mixing them up).
 */
class EnvelopeCursor {
  #at = 0;
  readonly #found: FoundEnvelopes;

  constructor(found: FoundEnvelopes) {
    this.#found = found;
  }

  /** Whether `value` is the next envelope findEnvelopes listed (the same object, or an equal compact string). */
  isNext(value: unknown): boolean {
    return this.#at < this.#found.originals.length && value === this.#found.originals[this.#at];
  }

  next(original: unknown): { envelope: Envelope; compact: boolean } {
    const { originals, rewrapped } = this.#found;
    if (this.#at >= originals.length || original !== originals[this.#at]) {
      throw new KosError('ERR_INTERNAL', 'rewrap: envelopes were not visited in order');
    }
    return { envelope: rewrapped[this.#at++] as Envelope, compact: typeof original === 'string' };
  }

  done(): void {
    if (this.#at !== this.#found.originals.length) {
      throw new KosError('ERR_INTERNAL', 'rewrap: envelopes were not all replaced');
    }
  }
}

const QUOTE = 0x22;
const COMMA = 0x2c;
const COLON = 0x3a;

/**
 * JSON written straight into a buffer that grows as needed (no intermediate strings to join or
 * flatten). Batch buffers (ciphertext only) are reused from batch to batch: fresh ones would be
 * external memory that makes V8 run full collections over and over.
 */
class JsonOutput {
  #buffer: Buffer;
  #size = 0;

  constructor(buffer: Buffer) {
    this.#buffer = buffer;
  }

  /** The whole buffer, to reuse once the output is written. */
  get buffer(): Buffer {
    return this.#buffer;
  }

  get bytes(): Buffer {
    return this.#buffer.subarray(0, this.#size);
  }

  #room(bytes: number): void {
    if (this.#size + bytes <= this.#buffer.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(2 * this.#buffer.length, this.#size + bytes));
    this.#buffer.copy(bigger, 0, 0, this.#size);
    this.#buffer = bigger;
  }

  byte(value: number): void {
    this.#room(1);
    this.#buffer[this.#size++] = value;
  }

  /** A string as UTF-8 (short ASCII ones copied here: cheaper than a call into the native writer). */
  text(value: string): void {
    const length = value.length;
    this.#room(3 * length);
    const buffer = this.#buffer;
    if (length <= 32) {
      let at = this.#size;
      for (let i = 0; i < length; i++) {
        const code = value.charCodeAt(i);
        if (code > 0x7f) {
          this.#size += buffer.write(value, this.#size, 'utf8');
          return;
        }
        buffer[at++] = code;
      }
      this.#size = at;
      return;
    }
    this.#size += buffer.write(value, this.#size, 'utf8');
  }

  /** A base64url string (ASCII, nothing to escape) as a JSON string. */
  base64url(value: string): void {
    this.#room(value.length + 2);
    this.#buffer[this.#size++] = QUOTE;
    this.#size += this.#buffer.write(value, this.#size, 'latin1');
    this.#buffer[this.#size++] = QUOTE;
  }

  /** A rewrapped envelope, exactly as JSON.stringify writes its JSON form (or its compact string). */
  envelope(envelope: Envelope, compact: boolean): void {
    if (compact) {
      this.base64url(encodeEnvelope(envelope, 'compact'));
      return;
    }
    const [head, ct, tail] = encodeEnvelopeJsonParts(envelope);
    this.text(head);
    this.#room(ct.length);
    this.#size += this.#buffer.write(ct, this.#size, 'latin1');
    this.text(tail);
  }

  /**
   * JSON.stringify of a record as JSON.parse returned it, with its envelopes replaced by
   * their rewrapped forms (the same walk as findEnvelopes and replaceEnvelopes: an envelope
   * is matched before looking inside, to MAX_BODY_DEPTH, values in key order). Walking in the
   * same order, the envelopes come up one after the other as findEnvelopes listed them, so a
   * value is one exactly when it is the next in that list (checked again by the cursor).
   * JSON.parse output holds only plain objects, arrays, strings, finite numbers, booleans and
   * null, so these are the bytes JSON.stringify would write for the replaced record.
   */
  record(value: unknown, cursor: EnvelopeCursor, depth = 0): void {
    if (depth <= MAX_BODY_DEPTH && cursor.isNext(value)) {
      const { envelope, compact } = cursor.next(value);
      this.envelope(envelope, compact);
    } else if (Array.isArray(value)) {
      this.byte(0x5b);
      for (let i = 0; i < value.length; i++) {
        if (i > 0) this.byte(COMMA);
        this.record(value[i], cursor, depth + 1);
      }
      this.byte(0x5d);
    } else if (typeof value === 'object' && value !== null) {
      this.byte(0x7b);
      let first = true;
      // JSON.parse objects have no enumerable inherited keys: for-in is Object.keys' order
      // (an own "__proto__" field is read as the own field it is).
      const object = value as Record<string, unknown>;
      for (const key in object) {
        if (!first) this.byte(COMMA);
        first = false;
        this.text(JSON.stringify(key));
        this.byte(COLON);
        this.record(object[key], cursor, depth + 1);
      }
      this.byte(0x7d);
    } else {
      this.text(JSON.stringify(value) as string);
    }
  }
}

/** Writes a parsed record with its envelopes swapped for their rewrapped forms; the envelopes written. */
function writeRecord(out: JsonOutput, record: unknown, found: FoundEnvelopes): number {
  if (found.originals.length === 0) {
    out.text(JSON.stringify(record));
    return 0;
  }
  const cursor = new EnvelopeCursor(found);
  out.record(record, cursor);
  cursor.done();
  return found.originals.length;
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

interface LineBatch {
  /** The lines' bytes, without their line break (LF or CRLF). */
  readonly lines: Buffer[];
  /** Input bytes the lines took, line breaks included. */
  readonly bytes: number;
}

const READ_CHUNK = 1 << 20;
const LF = 0x0a;
const CR = 0x0d;

/** Read buffers in turn: one being read into, one being split, one still holding lines of the batch being filled. */
const READ_RING = 3;

/**
 * The lines of a file from byte `start`, `batchSize` at a time, with the exact number of input
 * bytes each batch covers (so a checkpoint is a byte offset that starts a line). Lines end at
 * LF; a CR before the LF is dropped; a last line without LF counts too. Lines are views of the
 * read buffers, decoded by the caller before it asks for the next batch; the buffers are reused
 * (a line not yet handed out is copied before its buffer is read into again).
 */
async function* lineBatches(path: string, start: number, batchSize: number): AsyncGenerator<LineBatch> {
  const file = await open(path, 'r');
  const ring: Buffer[] = [];
  let reads = 0;
  let lines: Buffer[] = [];
  const readAt = async (at: number) => {
    const slot = reads++ % READ_RING;
    ring[slot] ??= Buffer.allocUnsafe(READ_CHUNK);
    const chunk = ring[slot];
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i] as Buffer;
      if (line.buffer === chunk.buffer) lines[i] = Buffer.from(line);
    }
    const { bytesRead } = await file.read(chunk, 0, READ_CHUNK, at);
    return chunk.subarray(0, bytesRead);
  };
  let reading = readAt(start);
  try {
    let position = start;
    // The start of a line whose end is not read yet (copied: its buffer will be reused).
    let partial: Buffer[] = [];
    let bytes = 0;
    const take = (data: Buffer, from: number, end: number) => {
      lines.push(data.subarray(from, end > from && data[end - 1] === CR ? end - 1 : end));
    };
    for (;;) {
      const data = await reading;
      if (data.length === 0) break;
      position += data.length;
      // The next read runs while this chunk's lines are re-encrypted.
      reading = readAt(position);
      let from = 0;
      for (let newline = data.indexOf(LF); newline !== -1; newline = data.indexOf(LF, from)) {
        if (lines.length >= batchSize) {
          yield { lines, bytes };
          lines = [];
          bytes = 0;
        }
        if (partial.length > 0) {
          // The line that started in an earlier read ends here.
          const line = Buffer.concat([...partial, data.subarray(0, newline)]);
          partial = [];
          take(line, 0, line.length);
          bytes += line.length + 1;
        } else {
          take(data, from, newline);
          bytes += newline + 1 - from;
        }
        from = newline + 1;
      }
      if (from < data.length) partial.push(Buffer.from(data.subarray(from)));
    }
    if (partial.length > 0) {
      if (lines.length >= batchSize) {
        yield { lines, bytes };
        lines = [];
        bytes = 0;
      }
      const last = Buffer.concat(partial);
      take(last, 0, last.length);
      bytes += last.length;
    }
    if (lines.length > 0) yield { lines, bytes };
  } finally {
    await reading.catch(() => undefined);
    await file.close();
  }
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
