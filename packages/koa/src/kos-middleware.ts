import type { EnvelopeJson, KosDecision } from '@kos/core';
import {
  admitNow,
  admitRequest,
  assertRuntimeOptions,
  type KosRuntime,
  type KosRuntimeOptions,
  readNodeBody,
  requestFromNode,
  setNodeHeaders,
  startRuntime,
  toWireBody,
} from '@kos/kms-adapters';
import type { Context, Middleware, Next } from 'koa';

export interface KosMiddlewareOptions extends KosRuntimeOptions {
  /** A runtime built elsewhere (shared by several apps); other options are then ignored. */
  readonly runtime?: KosRuntime | Promise<KosRuntime>;
}

/** State the middleware sets: `ctx.state.kos` is the decision. */
export interface KosState {
  kos: KosDecision;
}

export type KosKoaMiddleware = Middleware<KosState> & {
  /** Resolves once KOS is ready (rejects with the start-up error). */
  readonly ready: Promise<KosRuntime>;
  /** Seals a JSON value for a write route; store what it returns. */
  seal(kid: string, value: unknown, options: { dataId: string }): Promise<EnvelopeJson>;
  close(): Promise<void>;
};

function respond(
  ctx: Context,
  response: { status: number; headers: Record<string, string>; body: unknown },
  raw = false,
) {
  ctx.status = response.status;
  // KOS's headers win; Vary gains what KOS needs and keeps what the route set.
  setNodeHeaders(ctx.res, response.headers);
  const wire = raw ? (response.body as string) : toWireBody(response.body);
  ctx.body = typeof wire === 'string' ? wire : Buffer.from(wire.buffer, wire.byteOffset, wire.byteLength);
}

/**
 * What a route set as body, as KOS reads it: JSON values and envelope bytes. Strings and
 * streams are not looked at (the same as Express's res.send(string) and Hono's text bodies).
 */
function routeBody(body: unknown): unknown {
  if (Buffer.isBuffer(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  if (body === null || body === undefined || typeof body !== 'object') return undefined;
  if (typeof (body as { pipe?: unknown }).pipe === 'function') return undefined;
  return body;
}

/**
 * KOS for Koa: `app.use(kosMiddleware())`. Every request is identified (a bad or missing token
 * is refused before the route runs) and every envelope in `ctx.body` is delivered in the
 * caller's tier. The decision is `ctx.state.kos`.
 */
export function kosMiddleware(options: KosMiddlewareOptions = {}): KosKoaMiddleware {
  assertRuntimeOptions(options);
  const started = startRuntime(options);
  const { ready } = started;

  const middleware = async function kosKoa(ctx: Context, next: Next): Promise<void> {
    const request = requestFromNode(ctx.req, ctx.protocol, ctx.originalUrl);
    const admitted =
      admitNow(started, request, ctx.url) ??
      (await admitRequest(started, request, {
        url: ctx.url,
        path: () => ctx.path,
        readBody: () => readNodeBody(ctx.req),
      }));
    if ('answer' in admitted) return respond(ctx, admitted.answer, admitted.raw);
    const { runtime, decision, identity } = admitted;
    ctx.state.kos = decision;
    await next();
    if (routeBody(ctx.body) === undefined && ctx.body !== undefined && ctx.body !== null) {
      // A body KOS does not read (text, stream): only the decision headers are added.
      setNodeHeaders(ctx.res, runtime.kos.decisionHeaders(decision));
      return;
    }
    const response = { status: ctx.status, body: routeBody(ctx.body) };
    const out =
      runtime.kos.deliverNow(request, identity, decision, response) ??
      (await runtime.kos.deliver(request, identity, decision, response));
    if (!out.transformed) {
      setNodeHeaders(ctx.res, out.headers);
      return;
    }
    respond(ctx, out);
  };

  return Object.assign(middleware, {
    ready,
    seal: async (kid: string, value: unknown, sealOptions: { dataId: string }) =>
      (await ready).kos.seal(kid, value, sealOptions),
    close: async () => (await ready).close(),
  }) as KosKoaMiddleware;
}
