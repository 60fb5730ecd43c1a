import type { IncomingMessage } from 'node:http';
import {
  type BodySnapshot,
  type EnvelopeJson,
  type KosDecision,
  KosError,
  MAX_SHARE_BODY_BYTES,
  snapshotBody,
} from '@kos/core';
import {
  admitNow,
  admitRequest,
  assertRuntimeOptions,
  type KosRuntime,
  type KosRuntimeOptions,
  mergeVary,
  type PlainRequest,
  plainHeaders,
  requestFromWeb,
  startRuntime,
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

/** The body of a KMS node call (PUT/POST), bounded like the node server's; none for other methods. */
async function readWebBody(request: Request): Promise<Uint8Array | undefined> {
  if (request.method !== 'PUT' && request.method !== 'POST') return undefined;
  if (Number(request.headers.get('content-length') ?? '0') > MAX_SHARE_BODY_BYTES)
    throw new KosError('ERR_REQUEST_TOO_LARGE', 'body is too large');
  const body = new Uint8Array(await request.arrayBuffer());
  if (body.length > MAX_SHARE_BODY_BYTES) throw new KosError('ERR_REQUEST_TOO_LARGE', 'body is too large');
  return body;
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
 * The response that leaves: the route's headers stay, KOS's win (content type, cache control,
 * tier) and Vary gains Authorization; the body is KOS's when it changed it. Plain header
 * objects and a string body keep @hono/node-server on its fast path; a route that set cookies
 * keeps them all through a Headers object.
 */
function buildResponse(
  routed: Response,
  out: { status: number; headers: Record<string, string>; body: unknown; transformed: boolean },
): Response {
  const routeHeaders = routed.headers;
  if (!out.transformed) {
    // The route's own response goes out with KOS's headers added (its body untouched, and not
    // read: on @hono/node-server reading it would turn a string body into a stream).
    try {
      for (const name in out.headers) {
        const value = out.headers[name] as string;
        routeHeaders.set(name, name === 'vary' ? mergeVary(routeHeaders.get('vary'), value) : value);
      }
      return routed;
    } catch {
      // Immutable headers (a fetched or Response.redirect() response): copied below.
    }
  }
  const body = out.transformed ? toWireBody(out.body) : routed.body;
  if (routeHeaders.has('set-cookie')) {
    const headers = new Headers(routeHeaders);
    if (out.transformed) headers.delete('content-length');
    for (const [name, value] of Object.entries(out.headers)) {
      headers.set(name, name === 'vary' ? mergeVary(routeHeaders.get('vary'), value) : value);
    }
    return new Response(body as BodyInit, { status: out.status, headers });
  }
  const headers: Record<string, string> = {};
  routeHeaders.forEach((value, name) => {
    if (!(out.transformed && name === 'content-length')) headers[name] = value;
  });
  for (const name in out.headers) {
    const value = out.headers[name] as string;
    headers[name] = name === 'vary' ? mergeVary(routeHeaders.get('vary'), value) : value;
  }
  return new Response(body as BodyInit, { status: out.status, headers });
}

/** What the route handed to `c.json`, kept on the Context for the middleware to read. */
interface JsonCapture {
  readonly json: (...args: unknown[]) => Response;
  response?: Response;
  snapshot?: BodySnapshot | undefined;
}

const CAPTURE = Symbol('kos.jsonCapture');
type CapturingContext = { [CAPTURE]: JsonCapture };

/**
 * The `c.json` the route calls: Hono's own, after taking the value's snapshot. One function for
 * every request, bound to its Context: a closure made per request and stored on the Context
 * tips V8 (Node 20) into pretenuring the HTTP server's objects, and the server into a
 * major GC every half second (the bench's Hono rows doubled).
 */
function capturingJson(this: CapturingContext, value: unknown, ...rest: unknown[]): Response {
  const capture = this[CAPTURE];
  const answer = capture.json(value, ...rest);
  capture.response = answer;
  try {
    capture.snapshot = snapshotBody(value);
  } catch {
    // Deeper than KOS walks: read from the body below, where `deliver` refuses it.
    capture.snapshot = undefined;
  }
  return answer;
}

/**
 * KOS for Hono: `app.use(kosMiddleware())`. Every request is identified (a bad or missing token
 * is refused before the route runs) and every envelope in the route's JSON or binary response
 * is delivered in the caller's tier. The decision is `c.get('kos')`.
 */
export function kosMiddleware(options: KosMiddlewareOptions = {}): KosHonoMiddleware {
  assertRuntimeOptions(options);
  const started = startRuntime(options);
  const { ready } = started;

  const middleware: MiddlewareHandler<{ Variables: KosVariables }> = async function kosHono(c, next) {
    // On @hono/node-server the Node request is at hand: its headers are read as they are,
    // without building a Web Headers object.
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    const request: PlainRequest = incoming?.headers
      ? { method: c.req.method, url: c.req.url, headers: plainHeaders(incoming.headers) }
      : requestFromWeb(c.req.raw);
    const admitted =
      admitNow(started, request, c.req.path) ??
      (await admitRequest(started, request, {
        url: c.req.path,
        path: () => c.req.path,
        readBody: () => readWebBody(c.req.raw),
      }));
    if ('answer' in admitted) return toResponse(admitted.answer, admitted.raw);
    const { runtime, decision, identity } = admitted;
    c.set('kos', decision);
    // What the route hands to c.json is read there (as JSON will send it), so its response
    // need not be parsed back; any other response is read from its body.
    const capture: JsonCapture = { json: c.json as JsonCapture['json'] };
    (c as unknown as CapturingContext)[CAPTURE] = capture;
    c.json = capturingJson.bind(c as unknown as CapturingContext) as unknown as typeof c.json;
    await next();
    const routed = c.res;
    const taken = routed === capture.response ? capture.snapshot : undefined;
    const response = taken
      ? { status: routed.status, body: taken.root, snapshot: taken }
      : { status: routed.status, body: await readRouteBody(routed) };
    const out =
      runtime.kos.deliverNow(request, identity, decision, response) ??
      (await runtime.kos.deliver(request, identity, decision, response));
    c.res = undefined as unknown as Response;
    c.res = buildResponse(routed, out);
  };
  return Object.assign(middleware, {
    ready,
    seal: async (kid: string, value: unknown, sealOptions: { dataId: string }) =>
      (await ready).kos.seal(kid, value, sealOptions),
    close: async () => (await ready).close(),
  });
}
