import { createHash } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../atomic-file.js';

/** Where a rewrap stopped: input bytes read, output bytes written, records done. */
export interface Checkpoint {
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
export async function readCheckpoint(path: string): Promise<{ seq: number; checkpoint: Checkpoint } | undefined> {
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
export async function openProgress(
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
