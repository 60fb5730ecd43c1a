import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { KosError } from '@kos/core';
import { hasCode, ioError } from './atomic-file.js';

/** Format version of the integrity wrapper. */
const FORMAT_VERSION = 1;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * Wraps a JSON body for storage as `{ "v": 1, "body": …, "sha256": hex(SHA-256(JSON.stringify(body))) }`.
 * The digest detects damage at rest (bit rot, a truncated copy, a stray edit); it is not a MAC
 * and does not stop someone who can write the file.
 */
export function encodeWithIntegrity(body: Readonly<Record<string, unknown>>): string {
  const json = JSON.stringify(body);
  return JSON.stringify({ v: FORMAT_VERSION, body: JSON.parse(json) as unknown, sha256: sha256Hex(json) });
}

/**
 * The body of a wrapper written by encodeWithIntegrity.
 *
 * @throws KosError ERR_STORE_CORRUPT naming `id` (never the contents) when the text is not
 *   JSON, is not a version-1 wrapper, or its digest does not match.
 */
export function decodeWithIntegrity(text: string, id: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // No cause: V8's SyntaxError quotes a slice of the input, which may hold share bytes.
    throw corrupt(id, 'not valid JSON');
  }
  if (!isPlainObject(parsed)) throw corrupt(id, 'not a JSON object');
  const keys = Object.keys(parsed).sort();
  if (keys.length !== 3 || keys[0] !== 'body' || keys[1] !== 'sha256' || keys[2] !== 'v') {
    throw corrupt(id, 'unexpected fields');
  }
  if (parsed.v !== FORMAT_VERSION) throw corrupt(id, 'unsupported format version');
  const { body, sha256 } = parsed;
  if (!isPlainObject(body)) throw corrupt(id, 'body is not an object');
  if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256)) throw corrupt(id, 'digest is malformed');
  if (sha256Hex(JSON.stringify(body)) !== sha256) throw corrupt(id, 'digest mismatch');
  return body;
}

export interface ReadJsonWithIntegrityOptions {
  /** What the file holds (a share id, a key id), used in error messages instead of its contents. */
  readonly id: string;
  readonly signal?: AbortSignal;
}

/**
 * Reads and checks a file written with encodeWithIntegrity; resolves `undefined` when the
 * file does not exist.
 *
 * @throws KosError ERR_STORE_CORRUPT (see decodeWithIntegrity) or ERR_STORE_IO when reading fails.
 */
export async function readJsonWithIntegrity(
  path: string,
  options: ReadJsonWithIntegrityOptions,
): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, { encoding: 'utf8', ...(options.signal ? { signal: options.signal } : {}) });
  } catch (error) {
    if (hasCode(error, 'ENOENT')) return undefined;
    if (options.signal?.aborted) {
      throw new KosError('ERR_STORE_IO', `read of ${options.id} aborted`, { cause: options.signal.reason });
    }
    throw ioError(`could not read ${options.id}`, options.id, error);
  }
  return decodeWithIntegrity(text, options.id);
}

/** ERR_STORE_CORRUPT for a record that passed (or skipped) the digest but is not what it should be. */
export function corrupt(id: string, reason: string): KosError {
  return new KosError('ERR_STORE_CORRUPT', `stored record ${id} is corrupt: ${reason}`, { details: { id, reason } });
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
