import type { Identity, KosDecision } from '@kos/core';
import {
  assertRuntimeOptions,
  createKosRuntime,
  type KosRuntime,
  type KosRuntimeOptions,
  requestFromWeb,
  toWireBody,
} from '@kos/kms-adapters';
import type { MiddlewareHandler } from 'hono';

export interface KosMiddlewareOptions extends KosRuntimeOptions {
  /** A runtime built elsewhere (shared by several apps); other options are then ignored. */
  readonly runtime?: KosRuntime | Promise<KosRuntime>;
}

/** Context variables the middleware sets: `c.get('kos')` is the decision. */
export interface KosVariables {
  kos: KosDecision;
}

export type KosHonoMiddleware = MiddlewareHandler<{ Variables: KosVariables }> & {
  /** Resolves once KOS is ready (rejects with the start-up error). */
  readonly ready: Promise<KosRuntime>;
  /** Seals a JSON value for a write route; store what it returns. */
  seal(kid: string, value: unknown, options: { dataId: string }): Promise<unknown>;
  close(): Promise<void>;
};

function toResponse(
  response: { status: number; headers: Record<string, string>; body: unknown },
  raw = false,
): Response {
  const wire = raw ? (response.body as string) : toWireBody(response.body);
  return new Response(wire as BodyInit, { status: response.status, headers: response.headers });
}

function startupFailure(error: unknown): Response {
  const code = (error as { code?: unknown })?.code;
  const body = {
    error: {
      code: typeof code === 'string' && code.startsWith('ERR_') ? code : 'ERR_INTERNAL',
      message: 'KOS failed to start',
    },
  };
  return toResponse({ status: 503, headers: { 'content-type': 'application/json; charset=utf-8' }, body });
}

/** What a route returned, as KOS reads it: JSON values, envelope bytes, or nothing to look at. */
async function readRouteBody(response: Response): Promise<unknown> {
  const type = response.headers.get('content-type') ?? '';
  if (type.includes('json')) {
    try {
      return await response.clone().json();
    } catch {
      return undefined;
    }
  }
  if (type.includes('octet-stream') || type.includes('vnd.kos.envelope')) {
    return new Uint8Array(await response.clone().arrayBuffer());
  }
  return undefined;
}

/**
 * KOS for Hono: `app.use(kosMiddleware())`. Every request is identified (a bad or missing token
 * is refused before the route runs) and every envelope in the route's JSON or binary response
 * is delivered in the caller's tier. The decision is `c.get('kos')`.
 */
export function kosMiddleware(options: KosMiddlewareOptions = {}): KosHonoMiddleware {
  assertRuntimeOptions(options);
  const ready = Promise.resolve(options.runtime ?? createKosRuntime(options));
  ready.catch(() => undefined);

  const middleware: MiddlewareHandler<{ Variables: KosVariables }> = async function kosHono(c, next) {
    let runtime: KosRuntime;
    try {
      runtime = await ready;
    } catch (error) {
      return startupFailure(error);
    }
    const request = requestFromWeb(c.req.raw);
    if (c.req.path.startsWith(`${runtime.mountPrefix}/`)) {
      try {
        const method = c.req.method;
        const body = method === 'PUT' || method === 'POST' ? new Uint8Array(await c.req.raw.arrayBuffer()) : undefined;
        const mounted = await runtime.handleKms({ ...request, body });
        if (mounted) return toResponse(mounted, true);
      } catch (error) {
        return toResponse(runtime.kos.errorResponse(error));
      }
    }
    let decision: KosDecision;
    let identity: Identity;
    try {
      ({ decision, identity } = await runtime.kos.decide(request));
    } catch (error) {
      return toResponse(runtime.kos.errorResponse(error));
    }
    c.set('kos', decision);
    await next();
    const routed = c.res;
    const out = await runtime.kos.deliver(request, identity, decision, {
      status: routed.status,
      body: await readRouteBody(routed),
    });
    if (!out.transformed) {
      const headers = new Headers(routed.headers);
      for (const [name, value] of Object.entries(out.headers)) headers.set(name, value);
      c.res = new Response(routed.body, { status: routed.status, headers });
      return;
    }
    c.res = toResponse(out);
  };

  return Object.assign(middleware, {
    ready,
    seal: async (kid: string, value: unknown, sealOptions: { dataId: string }) =>
      (await ready).kos.seal(kid, value, sealOptions),
    close: async () => (await ready).close(),
  });
}
