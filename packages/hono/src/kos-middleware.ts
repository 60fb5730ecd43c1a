import { type EnvelopeJson, type Identity, type KosDecision, KosError, MAX_SHARE_BODY_BYTES } from '@kos/core';
import {
  assertRuntimeOptions,
  createKosRuntime,
  type KosRuntime,
  type KosRuntimeOptions,
  mergeVary,
  requestFromWeb,
  startupFailure,
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
  seal(kid: string, value: unknown, options: { dataId: string }): Promise<EnvelopeJson>;
  close(): Promise<void>;
};

function toResponse(
  response: { status: number; headers: Record<string, string>; body: unknown },
  raw = false,
): Response {
  const wire = raw ? (response.body as string) : toWireBody(response.body);
  return new Response(wire as BodyInit, { status: response.status, headers: response.headers });
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
      return toResponse(startupFailure(error));
    }
    const request = requestFromWeb(c.req.raw);
    if (c.req.path.startsWith(`${runtime.mountPrefix}/`)) {
      try {
        const method = c.req.method;
        let body: Uint8Array | undefined;
        if (method === 'PUT' || method === 'POST') {
          if (Number(c.req.header('content-length') ?? '0') > MAX_SHARE_BODY_BYTES)
            throw new KosError('ERR_REQUEST_TOO_LARGE', 'body is too large');
          body = new Uint8Array(await c.req.raw.arrayBuffer());
          if (body.length > MAX_SHARE_BODY_BYTES) throw new KosError('ERR_REQUEST_TOO_LARGE', 'body is too large');
        }
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
    // The route's headers stay, KOS's win (content type, cache control, tier) and Vary gains
    // Authorization. `c.res = undefined` first: Hono would otherwise copy the route's headers
    // back over the new response.
    const headers = new Headers(routed.headers);
    if (out.transformed) headers.delete('content-length');
    for (const [name, value] of Object.entries(out.headers)) {
      headers.set(name, name === 'vary' ? mergeVary(routed.headers.get('vary'), value) : value);
    }
    const body = out.transformed ? toWireBody(out.body) : routed.body;
    c.res = undefined as unknown as Response;
    c.res = new Response(body as BodyInit, { status: out.status, headers });
  };

  return Object.assign(middleware, {
    ready,
    seal: async (kid: string, value: unknown, sealOptions: { dataId: string }) =>
      (await ready).kos.seal(kid, value, sealOptions),
    close: async () => (await ready).close(),
  });
}
