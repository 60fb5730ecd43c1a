import type { EnvelopeJson } from '@kos/core';
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
import type { NextFunction, Request, RequestHandler, Response } from 'express';

export interface KosMiddlewareOptions extends KosRuntimeOptions {
  /** A runtime built elsewhere (shared by several apps); other options are then ignored. */
  readonly runtime?: KosRuntime | Promise<KosRuntime>;
}

/** The middleware, plus the helpers a route needs. */
export interface KosExpressMiddleware extends RequestHandler {
  /** Resolves once KOS is ready (rejects with the start-up error): await it before listening. */
  readonly ready: Promise<KosRuntime>;
  /** Seals a JSON value for a write route; store what it returns. */
  seal(kid: string, value: unknown, options: { dataId: string }): Promise<EnvelopeJson>;
  close(): Promise<void>;
}

/** Sends a KOS response (JSON values serialised once) or a mounted node's response (text as is). */
function send(
  res: Response,
  response: { status: number; headers: Record<string, string>; body: unknown },
  raw = false,
) {
  res.statusCode = response.status;
  // KOS's headers win; Vary gains what KOS needs and keeps what the route set.
  setNodeHeaders(res, response.headers);
  const wire = raw ? (response.body as string) : toWireBody(response.body);
  res.end(typeof wire === 'string' ? wire : Buffer.from(wire.buffer, wire.byteOffset, wire.byteLength));
}

/**
 * KOS for Express: `app.use(kosMiddleware())`. Every request is identified (a bad or missing
 * token is refused before the route runs) and every envelope in what the route sends through
 * `res.json` / `res.send` is delivered in the caller's tier. The decision is in `res.locals.kos`.
 * With no options in development it runs the embedded default from `.kos/`.
 */
export function kosMiddleware(options: KosMiddlewareOptions = {}): KosExpressMiddleware {
  assertRuntimeOptions(options);
  const started = startRuntime(options);
  const { ready } = started;

  const middleware = async function kosExpress(req: Request, res: Response, next: NextFunction): Promise<void> {
    const request = requestFromNode(req, req.protocol, req.originalUrl);
    const admitted =
      admitNow(started, request, req.url) ??
      (await admitRequest(started, request, {
        url: req.url,
        path: () => req.path,
        readBody: () => readNodeBody(req),
      }));
    if ('answer' in admitted) return send(res, admitted.answer, admitted.raw);
    const { runtime, decision, identity } = admitted;
    res.locals.kos = decision;
    setNodeHeaders(res, runtime.kos.decisionHeaders(decision));

    const originalJson = res.json;
    const originalSend = res.send;
    const deliver = (body: unknown, fallback: (body: unknown) => Response): Response => {
      const response = { status: res.statusCode, body };
      const now = runtime.kos.deliverNow(request, identity, decision, response);
      if (now) {
        if (!now.transformed) return fallback(body);
        send(res, now);
        return res;
      }
      runtime.kos
        .deliver(request, identity, decision, response)
        .then((out) => {
          if (!out.transformed) return fallback(body);
          send(res, out);
        })
        .catch((error: unknown) => send(res, runtime.kos.errorResponse(error)));
      return res;
    };
    res.json = (body: unknown) => deliver(body, (value) => originalJson.call(res, value));
    res.send = (body?: unknown) => {
      // res.json ends in res.send with a string: only raw bytes are looked at here.
      if (body instanceof Uint8Array)
        return deliver(new Uint8Array(body.buffer, body.byteOffset, body.byteLength), () =>
          originalSend.call(res, body),
        );
      return originalSend.call(res, body);
    };
    next();
  } as KosExpressMiddleware;

  Object.defineProperties(middleware, {
    ready: { value: ready },
    seal: {
      value: async (kid: string, value: unknown, sealOptions: { dataId: string }) =>
        (await ready).kos.seal(kid, value, sealOptions),
    },
    close: { value: async () => (await ready).close() },
  });
  return middleware;
}
