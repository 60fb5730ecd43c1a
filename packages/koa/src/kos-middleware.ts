import type { EnvelopeJson, Identity, KosDecision } from '@kos/core';
import {
  assertRuntimeOptions,
  type KosRuntime,
  type KosRuntimeOptions,
  readNodeBody,
  requestFromNode,
  setNodeHeaders,
  startRuntime,
  startupFailure,
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
    // Once started, requests go straight on (no wait on the start-up promise).
    let runtime: KosRuntime | undefined = started.current;
    if (!runtime) {
      try {
        runtime = await ready;
      } catch (error) {
        return respond(ctx, startupFailure(error));
      }
    }
    const request = requestFromNode(ctx.req, ctx.protocol, ctx.originalUrl);
    if (ctx.path.startsWith(`${runtime.mountPrefix}/`)) {
      try {
        const mounted = await runtime.handleKms({
          method: request.method,
          url: request.url,
          headers: request.headers,
          path: ctx.path,
          body: await readNodeBody(ctx.req),
        });
        if (mounted) return respond(ctx, mounted, true);
      } catch (error) {
        return respond(ctx, runtime.kos.errorResponse(error));
      }
    }
    let decision: KosDecision;
    let identity: Identity;
    try {
      ({ decision, identity } = await runtime.kos.decide(request));
    } catch (error) {
      return respond(ctx, runtime.kos.errorResponse(error));
    }
    ctx.state.kos = decision;
    await next();
    if (routeBody(ctx.body) === undefined && ctx.body !== undefined && ctx.body !== null) {
      // A body KOS does not read (text, stream): only the decision headers are added.
      setNodeHeaders(ctx.res, runtime.kos.decisionHeaders(decision));
      return;
    }
    const out = await runtime.kos.deliver(request, identity, decision, {
      status: ctx.status,
      body: routeBody(ctx.body),
    });
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
