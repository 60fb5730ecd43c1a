import { createHash } from 'node:crypto';
import { fromBase64url, toBase64url } from '@kos/core';
import { canonicalJson } from './canonical-json.js';

/**
 * The hash chain of an audit log file (docs/audit.md): line i is
 * `{"seq":i,"prev":b64u(h[i-1]),"record":{…}|"checkpoint":{…},"hash":b64u(h[i])}` with
 * h[i] = SHA-256(h[i-1] || canonical JSON of {seq, record|checkpoint}) and h[-1] = 32 zero bytes.
 * A checkpoint carries a signed statement (compact JWS) of the previous line's seq and hash.
 */
export const GENESIS_HASH = toBase64url(new Uint8Array(32));

export interface ChainLine {
  readonly seq: number;
  readonly prev: string;
  readonly record?: Record<string, unknown>;
  readonly checkpoint?: { readonly jws?: string; readonly seq: number; readonly hash: string; readonly time: string };
  readonly hash: string;
}

export function lineHash(prev: string, seq: number, body: { record?: unknown; checkpoint?: unknown }): string {
  const content = canonicalJson({ seq, ...body });
  return toBase64url(createHash('sha256').update(fromBase64url(prev, 'prev')).update(content, 'utf8').digest());
}

/** The text of one line (with its newline). */
export function chainLine(
  prev: string,
  seq: number,
  body: { record?: unknown; checkpoint?: unknown },
): { text: string; hash: string } {
  const hash = lineHash(prev, seq, body);
  return { text: `${canonicalJson({ seq, prev, ...body, hash })}\n`, hash };
}
