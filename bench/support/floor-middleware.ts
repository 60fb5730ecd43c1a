/**
 * The reference row of `bench/middleware.bench.ts` ("floor"): for each framework, the least a
 * middleware in KOS's place could do and still send exactly the high-tier bytes — the same
 * body (`{ id, data: { kosTier, envelope, dek } }`) and the same headers, with no checks at
 * all: the token is not verified (only its presence is), there is no tier decision, no
 * access check, the envelope is not decoded and the DEK is a string fixed at start-up.
 *
 * It is not a product and nobody should deploy it. It measures what the framework, Node and
 * the loopback cost for a middleware that answers these bytes, so the bench can show, in the
 * same run, how much of KOS's added time is KOS's own work and how much any middleware pays.
 */
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

/** KOS's high-tier headers, in the order KOS sets them. */
const HIGH_HEADERS: ReadonlyArray<readonly [string, string]> = [
  ['kos-tier', 'high'],
  ['vary', 'Authorization'],
  ['cache-control', 'no-store'],
  ['pragma', 'no-cache'],
  ['content-type', 'application/json; charset=utf-8'],
];

/** `{ id, data: envelope }` with the envelope replaced by its high-tier item, as KOS writes it. */
function highText(row: unknown, dek: string): string | undefined {
  const data = (row as { data?: Record<string, unknown> } | null)?.data;
  if (!data || typeof data.ct !== 'string') return undefined;
  const { id } = row as { id: unknown };
  return JSON.stringify({ id, data: { kosTier: 'high', envelope: data, dek } });
}

const hasBearer = (value: unknown): boolean => typeof value === 'string' && value.startsWith('Bearer ');

export function expressFloor(dek: string): ExpressLike {
  return (req, res, next) => {
    if (!hasBearer(req.headers.authorization)) {
      res.statusCode = 401;
      res.end('');
      return;
    }
    res.json = (body: unknown) => {
      const text = highText(body, dek);
      if (text === undefined) throw new Error('floor: the route did not answer an envelope');
      for (const [name, value] of HIGH_HEADERS) res.setHeader(name, value);
      return res.end(text);
    };
    next();
  };
}

export function honoFloor(dek: string): MiddlewareHandler {
  return async (c: HonoContext, next) => {
    if (!hasBearer(c.req.header('authorization'))) return c.body(null, 401);
    let text: string | undefined;
    const json = c.json;
    c.json = ((value: unknown, ...rest: unknown[]) => {
      text = highText(value, dek);
      return (json as (...args: unknown[]) => Response)(value, ...rest);
    }) as typeof c.json;
    await next();
    if (text === undefined) throw new Error('floor: the route did not answer an envelope');
    const headers: Record<string, string> = {};
    for (const [name, value] of HIGH_HEADERS) headers[name] = value;
    c.res = undefined as unknown as Response;
    c.res = new Response(text, { status: 200, headers });
  };
}

export function koaFloor(dek: string): (ctx: KoaContext, next: KoaNext) => Promise<void> {
  return async (ctx, next) => {
    if (!hasBearer(ctx.req.headers.authorization)) {
      ctx.status = 401;
      return;
    }
    await next();
    const text = highText(ctx.body, dek);
    if (text === undefined) throw new Error('floor: the route did not answer an envelope');
    for (const [name, value] of HIGH_HEADERS) ctx.res.setHeader(name, value);
    ctx.body = text;
  };
}
