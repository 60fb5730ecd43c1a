import { type FileHandle, open, readFile, stat, truncate } from 'node:fs/promises';
import { type AuditRecord, type AuditSink, KosError } from '@kos/core';
import { CompactSign, type CryptoKey } from 'jose';
import { writeFileAtomic } from '../atomic-file.js';
import { type ChainLine, chainLine, GENESIS_HASH } from './audit-chain.js';

export interface HashChainedFileSinkOptions {
  /** The JSON-lines file (one per process; created 0600). A `<path>.head` file keeps the latest checkpoint. */
  readonly path: string;
  /** Ed25519 private key that signs checkpoints (recommended: without it checkpoints are unsigned). */
  readonly signingKey?: CryptoKey;
  readonly keyId?: string;
  /** A checkpoint every this many records (default 100), and on close. */
  readonly checkpointEvery?: number;
  /** `always`: fsync every record (slow, nothing lost on power failure); `checkpoint` (default): fsync at checkpoints. */
  readonly fsync?: 'always' | 'checkpoint';
}

export interface HashChainedFileSink extends AuditSink {
  /** Writes a checkpoint now. */
  checkpoint(): Promise<void>;
}

interface State {
  handle: FileHandle;
  seq: number;
  hash: string;
  sinceCheckpoint: number;
}

/** Reads the end of an existing log to continue its chain; cuts a torn last line left by a crash. */
async function resume(path: string): Promise<{ seq: number; hash: string; torn: number }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return { seq: -1, hash: GENESIS_HASH, torn: 0 };
    throw error;
  }
  let end = text.length;
  let torn = 0;
  if (end > 0 && !text.endsWith('\n')) {
    const lastNewline = text.lastIndexOf('\n');
    end = lastNewline + 1;
    torn = Buffer.byteLength(text.slice(end));
    await truncate(path, Buffer.byteLength(text.slice(0, end)));
  }
  const lines = text
    .slice(0, end)
    .split('\n')
    .filter((line) => line.length > 0);
  const last = lines.at(-1);
  if (!last) return { seq: -1, hash: GENESIS_HASH, torn };
  const parsed = JSON.parse(last) as ChainLine;
  return { seq: parsed.seq, hash: parsed.hash, torn };
}

/**
 * The tamper-evident audit log: every record commits to the one before (SHA-256 chain), and a
 * signed checkpoint every N records (and on close) is also written to `<path>.head`, so
 * editing, deleting, reordering or truncating records is detected by `verifyAuditLog`.
 */
export async function createHashChainedFileSink(options: HashChainedFileSinkOptions): Promise<HashChainedFileSink> {
  const every = options.checkpointEvery ?? 100;
  if (!Number.isInteger(every) || every < 1)
    throw new KosError('ERR_INVALID_OPTIONS', 'audit file: checkpointEvery must be >= 1');
  const resumed = await resume(options.path);
  const state: State = {
    handle: await open(options.path, 'a', 0o600),
    seq: resumed.seq,
    hash: resumed.hash,
    sinceCheckpoint: 0,
  };
  let queue: Promise<unknown> = Promise.resolve();

  async function append(body: { record?: unknown; checkpoint?: unknown }, sync: boolean): Promise<void> {
    const seq = state.seq + 1;
    const line = chainLine(state.hash, seq, body);
    try {
      await state.handle.write(line.text);
      if (sync) await state.handle.datasync();
    } catch (error) {
      throw new KosError('ERR_AUDIT_UNAVAILABLE', 'the audit log could not be written', { cause: error });
    }
    state.seq = seq;
    state.hash = line.hash;
  }

  async function writeCheckpoint(): Promise<void> {
    if (state.seq < 0) return;
    const statement = { seq: state.seq, hash: state.hash, time: new Date().toISOString() };
    const jws = options.signingKey
      ? await new CompactSign(new TextEncoder().encode(JSON.stringify(statement)))
          .setProtectedHeader({
            alg: 'EdDSA',
            typ: 'kos-audit-checkpoint',
            ...(options.keyId ? { kid: options.keyId } : {}),
          })
          .sign(options.signingKey)
      : undefined;
    const checkpoint = { ...statement, ...(jws ? { jws } : {}) };
    await append({ checkpoint }, true);
    await writeFileAtomic(
      `${options.path}.head`,
      JSON.stringify({ ...checkpoint, line: state.seq, lineHash: state.hash }),
      { mode: 0o600 },
    );
    state.sinceCheckpoint = 0;
  }

  const serial = <T>(task: () => Promise<T>): Promise<T> => {
    const run = queue.then(task, task);
    queue = run.catch(() => undefined);
    return run;
  };

  if (resumed.torn > 0) {
    await serial(() =>
      append(
        {
          record: {
            time: new Date().toISOString(),
            type: 'recovery',
            reason: 'torn last line removed',
            details: { bytes: resumed.torn },
          },
        },
        true,
      ),
    );
  }

  return {
    write: (record: AuditRecord) =>
      serial(async () => {
        await append({ record }, options.fsync === 'always');
        state.sinceCheckpoint++;
        if (state.sinceCheckpoint >= every) await writeCheckpoint();
      }),
    checkpoint: () => serial(writeCheckpoint),
    close: () =>
      serial(async () => {
        if (state.sinceCheckpoint > 0) await writeCheckpoint();
        await state.handle.close();
      }),
  };
}

/** Size of a log file in bytes (0 when missing). */
export async function auditLogSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}
