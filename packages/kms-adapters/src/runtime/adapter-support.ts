import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { KosError, type RequestLike } from '@kos/core';
import type { KosRuntimeOptions } from './kos-runtime.js';
import { checkRuntimeConfig, missingForProduction } from './runtime-config.js';

/** A Node request as KOS sees it: method, absolute URL, headers (lower-case, joined). */
/** A request with plain string headers: usable both as RequestLike and as a KMS request. */
export interface PlainRequest extends RequestLike {
  readonly headers: Readonly<Record<string, string>>;
}

export function requestFromNode(req: IncomingMessage, protocol: string, path = req.url ?? '/'): PlainRequest {
  return {
    method: req.method ?? 'GET',
    url: `${protocol}://${req.headers.host ?? 'localhost'}${path}`,
    headers: plainHeaders(req.headers),
  };
}

/**
 * Node's request headers as plain strings. Node joins repeated request headers into one string
 * except `set-cookie` (an array): only then is a copy made.
 */
export function plainHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  if (headers['set-cookie'] === undefined) return headers as Record<string, string>;
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/**
 * Sets KOS's response headers on a Node response: each replaces the route's, except `vary`,
 * which gains what KOS needs while keeping what the route set.
 */
export function setNodeHeaders(res: ServerResponse, headers: Readonly<Record<string, string>>): void {
  for (const name in headers) {
    const value = headers[name] as string;
    if (name === 'vary') {
      const existing = res.getHeader('vary');
      res.setHeader('vary', mergeVary(Array.isArray(existing) ? existing.join(', ') : existing?.toString(), value));
    } else res.setHeader(name, value);
  }
}

/** A Web Request as KOS sees it. */
export function requestFromWeb(request: Request): PlainRequest {
  const headers: Record<string, string> = {};
  request.headers.forEach((value, name) => {
    headers[name] = value;
  });
  return { method: request.method, url: request.url, headers };
}

/** Reads a Node request body (bounded); resolves undefined for bodiless methods. */
export function readNodeBody(req: IncomingMessage, limit = 16 * 1024): Promise<Uint8Array | undefined> {
  if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS' || req.method === 'DELETE') {
    return Promise.resolve(undefined);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new KosError('ERR_REQUEST_TOO_LARGE', 'body is too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(new Uint8Array(Buffer.concat(chunks))));
    req.on('error', reject);
  });
}

/**
 * Checks middleware options when the middleware is created (before any request): the type of
 * each option, the shape of `config`, and that production has a configuration (the embedded default is development
 * only). Throws ERR_INVALID_OPTIONS listing what is missing.
 */
export function assertRuntimeOptions(options: unknown): asserts options is KosRuntimeOptions {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new KosError('ERR_INVALID_OPTIONS', 'kosMiddleware: options must be an object');
  }
  const { config, dir, env, embeddedNodes } = options as KosRuntimeOptions;
  if (config !== undefined && (typeof config !== 'object' || config === null)) {
    throw new KosError('ERR_INVALID_OPTIONS', 'kosMiddleware: config must be an object');
  }
  // The shape of what is given (store kinds, Redis connections, rotation settings), before anything connects.
  if (config !== undefined) checkRuntimeConfig(config);
  if (dir !== undefined && typeof dir !== 'string')
    throw new KosError('ERR_INVALID_OPTIONS', 'kosMiddleware: dir must be a path');
  if (embeddedNodes !== undefined && (!Number.isInteger(embeddedNodes) || embeddedNodes < 5 || embeddedNodes > 16)) {
    throw new KosError(
      'ERR_INVALID_OPTIONS',
      'kosMiddleware: embeddedNodes must be 5–16 (the default share bands need 5)',
    );
  }
  // A ready runtime was configured by whoever built it.
  if ((options as { runtime?: unknown }).runtime !== undefined) return;
  const environment = env ?? process.env;
  if (environment.NODE_ENV === 'production' && !environment.KOS_CONFIG) {
    const missing = missingForProduction(config ?? {});
    if (missing.length > 0) {
      throw new KosError(
        'ERR_INVALID_OPTIONS',
        `KOS will not start in production without configuration (the embedded .kos/ default is for development only). Missing: ${missing.join('; ')}`,
        { details: { missing } },
      );
    }
  }
}

/** The bytes to send for a KOS response body: bytes as they are, JSON values serialised once. */
export function toWireBody(body: unknown): string | Uint8Array {
  if (body instanceof Uint8Array) return body;
  return body === undefined ? '' : JSON.stringify(body);
}

/** `Vary` with `Authorization` added to what the route set (never replacing it). */
export function mergeVary(existing: string | undefined | null, add = 'Authorization'): string {
  // The common cases first: nothing set yet, or exactly what KOS set before.
  if (!existing) return add;
  if (existing === add) return existing;
  const parts = (existing ?? '')
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
  if (parts.includes('*') || parts.some((part) => part.toLowerCase() === add.toLowerCase())) return parts.join(', ');
  return [...parts, add].join(', ');
}

/** The start-up failure answer: the error's code and status (500 for configuration errors), never cached. */
export function startupFailure(error: unknown): { status: number; headers: Record<string, string>; body: unknown } {
  const code = (error as { code?: unknown })?.code;
  const known = typeof code === 'string' && code.startsWith('ERR_') ? code : 'ERR_INTERNAL';
  const status = known === 'ERR_INVALID_OPTIONS' || known === 'ERR_INTERNAL' ? 500 : 503;
  return {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' },
    body: { error: { code: known, message: 'KOS failed to start' } },
  };
}
