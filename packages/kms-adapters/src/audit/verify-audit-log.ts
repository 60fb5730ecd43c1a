import { readFile } from 'node:fs/promises';
import { type CryptoKey, compactVerify, importJWK, type JWK, type KeyObject } from 'jose';
import { type ChainLine, GENESIS_HASH, lineHash } from './audit-chain.js';

export interface AuditVerification {
  readonly ok: boolean;
  /** Lines read (records and checkpoints). */
  readonly lines: number;
  readonly records: number;
  readonly checkpoints: number;
  /** The first problem found: line number (1-based) and what is wrong. */
  readonly problem?: { readonly line: number; readonly reason: string };
}

/**
 * Checks an audit log written by the hash-chained file sink: sequence numbers without gaps,
 * every line's `prev` equal to the hash before it, every hash recomputed, every checkpoint's
 * signature (when a public key is given) and statement, and the `<path>.head` checkpoint
 * present in the log (a log cut shorter than its last checkpoint is truncated).
 */
export async function verifyAuditLog(
  path: string,
  options: { publicKey?: CryptoKey | KeyObject | JWK; requireSignatures?: boolean } = {},
): Promise<AuditVerification> {
  const key =
    options.publicKey && !('kty' in options.publicKey)
      ? options.publicKey
      : options.publicKey
        ? await importJWK(options.publicKey as JWK, 'EdDSA')
        : undefined;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return { ok: false, lines: 0, records: 0, checkpoints: 0, problem: { line: 0, reason: 'the log cannot be read' } };
  }
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  let prev = GENESIS_HASH;
  let records = 0;
  let checkpoints = 0;
  const hashes: string[] = [];
  const fail = (line: number, reason: string): AuditVerification => ({
    ok: false,
    lines: lines.length,
    records,
    checkpoints,
    problem: { line, reason },
  });
  for (const [index, raw] of lines.entries()) {
    let line: ChainLine;
    try {
      line = JSON.parse(raw) as ChainLine;
    } catch {
      return fail(index + 1, 'not valid JSON (torn or edited)');
    }
    if (line.seq !== index)
      return fail(index + 1, `sequence ${line.seq} where ${index} was expected (deleted or reordered)`);
    if (line.prev !== prev)
      return fail(index + 1, 'does not follow the line before it (deleted, inserted or reordered)');
    const body = line.checkpoint ? { checkpoint: line.checkpoint } : { record: line.record };
    if (lineHash(prev, line.seq, body) !== line.hash)
      return fail(index + 1, 'content does not match its hash (edited)');
    if (line.checkpoint) {
      checkpoints++;
      const { jws, seq, hash } = line.checkpoint;
      if (seq !== index - 1 || hash !== prev) return fail(index + 1, 'checkpoint names another line');
      if (key) {
        if (!jws) return fail(index + 1, 'checkpoint is not signed');
        try {
          const { payload } = await compactVerify(jws, key, { algorithms: ['EdDSA'] });
          const statement = JSON.parse(new TextDecoder().decode(payload)) as { seq: number; hash: string };
          if (statement.seq !== seq || statement.hash !== hash)
            return fail(index + 1, 'checkpoint signature covers other values');
        } catch {
          return fail(index + 1, 'checkpoint signature is not valid');
        }
      } else if (options.requireSignatures) {
        return fail(index + 1, 'no public key to check the checkpoint signature');
      }
    } else {
      records++;
    }
    hashes.push(line.hash);
    prev = line.hash;
  }
  let head: { line?: number; lineHash?: string } | undefined;
  try {
    head = JSON.parse(await readFile(`${path}.head`, 'utf8')) as { line: number; lineHash: string };
  } catch {
    head = undefined;
  }
  if (head && typeof head.line === 'number') {
    if (head.line >= hashes.length)
      return fail(
        lines.length,
        `truncated: the last checkpoint names line ${head.line + 1} but the log has ${lines.length}`,
      );
    if (hashes[head.line] !== head.lineHash) return fail(head.line + 1, 'the last checkpoint does not match this line');
  }
  return { ok: true, lines: lines.length, records, checkpoints };
}
