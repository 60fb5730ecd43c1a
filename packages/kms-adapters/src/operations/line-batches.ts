import { open } from 'node:fs/promises';

export interface LineBatch {
  /** The lines' bytes, without their line break (LF or CRLF). */
  readonly lines: Buffer[];
  /** Input bytes the lines took, line breaks included. */
  readonly bytes: number;
}

const READ_CHUNK = 1 << 20;
/** Line feed: what ends a line (a CR before it is dropped). */
export const LF = 0x0a;
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
export async function* lineBatches(path: string, start: number, batchSize: number): AsyncGenerator<LineBatch> {
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
