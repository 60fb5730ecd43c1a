/**
 * The reference rows of `bench/middleware.bench.ts`: for each framework, the least a
 * middleware in KOS's place could do and still send KOS's bytes, with no checks at all — the
 * token is not verified (only its presence is), there is no tier decision and no access check.
 *
 * - high (`highAnswer`): the same body (`{ id, data: { kosTier, envelope, dek } }`) and
 *   headers as KOS's high tier; the envelope is not decoded, the DEK is a string fixed at
 *   start-up;
 * - low (`lowAnswer`): the record's plaintext, decrypted per request with node:crypto
 *   AES-256-GCM under a key and associated data fixed at start-up (the envelope's nonce and
 *   ciphertext are decoded per request), sent as KOS's low tier sends it; the plaintext is not
 *   parsed, only placed in the body.
 *
 * They are not products and nobody should deploy them. They measure what the framework, Node
 * and the loopback cost for a middleware that answers these bytes (and, for low, decrypts one
 * record), so the bench shows in the same run how much of KOS's added time is KOS's own work.
 */
import { createDecipheriv } from 'node:crypto';
import type { Context as HonoContext, MiddlewareHandler } from 'hono';
import type { Context as KoaContext, Next as KoaNext } from 'koa';

interface NodeResponse {
  setHeader(name: string, value: string): unknown;
}
type ExpressLike = (
  req: { headers: Record<string, string | string[] | undefined> },
  res: NodeResponse & { statusCode: number; json: (body: unknown) => unknown; end(body: string): unknown },
  next: () => void,
) => void;

/** What a reference middleware answers: the body text for the route's value, and the headers. */
export interface ReferenceAnswer {
  readonly headers: ReadonlyArray<readonly [string, string]>;
  /** The body for `{ id, data: envelope }` (undefined: the route did not answer an envelope). */
  text(row: unknown): string | undefined;
}

const JSON_TYPE = 'application/json; charset=utf-8';

function envelopeOf(row: unknown): Record<string, unknown> | undefined {
  const data = (row as { data?: Record<string, unknown> } | null)?.data;
  return data && typeof data.ct === 'string' ? data : undefined;
}

/** KOS's high tier: the envelope as it is and the DEK (base64url, fixed). */
export function highAnswer(dek: string): ReferenceAnswer {
  return {
    headers: [
      ['kos-tier', 'high'],
      ['vary', 'Authorization'],
      ['cache-control', 'no-store'],
      ['pragma', 'no-cache'],
      ['content-type', JSON_TYPE],
    ],
    text(row) {
      const envelope = envelopeOf(row);
      if (!envelope) return undefined;
      return JSON.stringify({ id: (row as { id: unknown }).id, data: { kosTier: 'high', envelope, dek } });
    },
  };
}

/** KOS's low tier: the plaintext record in place of the envelope (AES-256-GCM, key and AAD fixed). */
export function lowAnswer(key: Uint8Array, aad: Uint8Array): ReferenceAnswer {
  return {
    headers: [
      ['kos-tier', 'low'],
      ['vary', 'Authorization'],
      ['content-type', JSON_TYPE],
    ],
    text(row) {
      const envelope = envelopeOf(row);
      if (!envelope) return undefined;
      const sealed = Buffer.from(envelope.ct as string, 'base64url');
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(envelope.nonce as string, 'base64url'));
      decipher.setAAD(aad);
      decipher.setAuthTag(sealed.subarray(sealed.length - 16));
      const plaintext = Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - 16)), decipher.final()]);
      return `{"id":${JSON.stringify((row as { id: unknown }).id)},"data":${plaintext.toString('utf8')}}`;
    },
  };
}

const hasBearer = (value: unknown): boolean => typeof value === 'string' && value.startsWith('Bearer ');

export function expressFloor(answer: ReferenceAnswer): ExpressLike {
  return (req, res, next) => {
    if (!hasBearer(req.headers.authorization)) {
      res.statusCode = 401;
      res.end('');
      return;
    }
    res.json = (body: unknown) => {
      const text = answer.text(body);
      if (text === undefined) throw new Error('floor: the route did not answer an envelope');
      for (const [name, value] of answer.headers) res.setHeader(name, value);
      return res.end(text);
    };
    next();
  };
}

export function honoFloor(answer: ReferenceAnswer): MiddlewareHandler {
  return async (c: HonoContext, next) => {
    if (!hasBearer(c.req.header('authorization'))) return c.body(null, 401);
    let text: string | undefined;
    const json = c.json;
    c.json = ((value: unknown, ...rest: unknown[]) => {
      text = answer.text(value);
      return (json as (...args: unknown[]) => Response)(value, ...rest);
    }) as typeof c.json;
    await next();
    if (text === undefined) throw new Error('floor: the route did not answer an envelope');
    const headers: Record<string, string> = {};
    for (const [name, value] of answer.headers) headers[name] = value;
    c.res = undefined as unknown as Response;
    c.res = new Response(text, { status: 200, headers });
  };
}

export function koaFloor(answer: ReferenceAnswer): (ctx: KoaContext, next: KoaNext) => Promise<void> {
  return async (ctx, next) => {
    if (!hasBearer(ctx.req.headers.authorization)) {
      ctx.status = 401;
      return;
    }
    await next();
    const text = answer.text(ctx.body);
    if (text === undefined) throw new Error('floor: the route did not answer an envelope');
    for (const [name, value] of answer.headers) ctx.res.setHeader(name, value);
    ctx.body = text;
  };
}
