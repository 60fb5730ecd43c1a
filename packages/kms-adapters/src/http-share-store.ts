import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import {
  assertId,
  decodeShareBody,
  encodeShareBody,
  isValidId,
  KosError,
  MAX_SHARE_BODY_BYTES,
  SERVICE_AUTH_SCHEME,
  type ShareStore,
  type StoreCallOptions,
  type StoredShare,
  shareUrl,
  type TokenIssuer,
} from '@kos/core';

export interface HttpShareStoreOptions {
  readonly nodeId: string;
  readonly zone?: string;
  /** The node's base URL, e.g. `https://kms-1.internal:8443`. Plain HTTP only to loopback. */
  readonly baseUrl: string;
  /** Signs the short-lived, audience-bound service tokens. */
  readonly tokens: TokenIssuer;
  /** Per-request deadline (default 5000 ms). */
  readonly timeoutMs?: number;
  /** CA bundle (PEM) to trust for the node's certificate. */
  readonly ca?: string | Buffer;
  /** Client certificate and key (PEM) for mutual TLS. */
  readonly cert?: string | Buffer;
  readonly key?: string | Buffer;
  /** Largest response body accepted (default 16 KiB). */
  readonly maxBodyBytes?: number;
}

/** A ShareStore that also says where it lives (for medium-tier references). */
export interface HttpShareStore extends ShareStore {
  readonly baseUrl: string;
}

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

function invalid(message: string): KosError {
  return new KosError('ERR_INVALID_OPTIONS', `http share store: ${message}`);
}

/**
 * KOS's side of a remote KMS node: put, get and delete over HTTPS with a service token that
 * names this node as audience and lives a minute; optional client certificate (mutual TLS).
 * Every failure is typed: ERR_KMS_UNREACHABLE, ERR_KMS_TIMEOUT, ERR_KMS_BAD_STATUS,
 * ERR_KMS_BAD_BODY, ERR_KMS_BODY_TOO_LARGE.
 */
export function createHttpShareStore(options: HttpShareStoreOptions): HttpShareStore {
  if (!options || typeof options !== 'object') throw invalid('options are required');
  if (!isValidId(options.nodeId)) throw invalid('nodeId must be a valid id');
  if (options.zone !== undefined && !isValidId(options.zone)) throw invalid('zone must be a valid id');
  if (!options.tokens || typeof options.tokens.issueServiceToken !== 'function') throw invalid('tokens are required');
  let base: URL;
  try {
    base = new URL(options.baseUrl);
  } catch {
    throw invalid('baseUrl must be an absolute URL');
  }
  if (base.protocol !== 'https:' && base.protocol !== 'http:') throw invalid('baseUrl must be http(s)');
  if (base.protocol === 'http:' && !isLoopback(base.hostname)) {
    throw new KosError('ERR_INSECURE_TRANSPORT', 'plain HTTP to a KMS node is refused except to loopback; use https');
  }
  const timeoutMs = options.timeoutMs ?? 5000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw invalid('timeoutMs must be > 0');
  const maxBodyBytes = options.maxBodyBytes ?? MAX_SHARE_BODY_BYTES;
  const secure = base.protocol === 'https:';
  const agent = secure
    ? new HttpsAgent({
        keepAlive: true,
        ...(options.ca ? { ca: options.ca } : {}),
        ...(options.cert ? { cert: options.cert } : {}),
        ...(options.key ? { key: options.key } : {}),
        minVersion: 'TLSv1.2',
      })
    : new HttpAgent({ keepAlive: true });
  const baseUrl = base.toString().replace(/\/+$/, '');
  const { nodeId, tokens } = options;
  let cached: { token: string; refreshAt: number } | undefined;

  async function serviceToken(): Promise<string> {
    const nowSeconds = Math.floor(Date.now() / 1000);
    if (cached && nowSeconds < cached.refreshAt) return cached.token;
    const issued = await tokens.issueServiceToken(nodeId);
    // Reuse until 20 s before expiry: a few signatures per minute per node, not one per call.
    cached = { token: issued.token, refreshAt: issued.expiresAt - 20 };
    return issued.token;
  }

  async function call(
    method: 'GET' | 'PUT' | 'DELETE',
    shareId: string,
    body: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; json: unknown }> {
    const token = await serviceToken();
    const url = new URL(shareUrl(baseUrl, shareId));
    return new Promise((resolve, reject) => {
      const send = secure ? httpsRequest : httpRequest;
      let settled = false;
      const fail = (error: KosError) => {
        if (settled) return;
        settled = true;
        req.destroy();
        reject(error);
      };
      const timer = setTimeout(
        () => fail(new KosError('ERR_KMS_TIMEOUT', `node ${nodeId} did not answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onAbort = () => fail(new KosError('ERR_STORE_IO', `request to node ${nodeId} was aborted`));
      signal?.addEventListener('abort', onAbort, { once: true });
      const req = send(
        url,
        {
          method,
          agent,
          headers: {
            authorization: `${SERVICE_AUTH_SCHEME} ${token}`,
            accept: 'application/json',
            ...(body === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }),
          },
        },
        (res: IncomingMessage) => {
          const declared = Number(res.headers['content-length'] ?? '0');
          if (declared > maxBodyBytes) {
            fail(new KosError('ERR_KMS_BODY_TOO_LARGE', `node ${nodeId} answered with an oversize body`));
            return;
          }
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > maxBodyBytes) {
              fail(new KosError('ERR_KMS_BODY_TOO_LARGE', `node ${nodeId} answered with an oversize body`));
              return;
            }
            chunks.push(chunk);
          });
          res.on('end', () => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            signal?.removeEventListener('abort', onAbort);
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = text.length === 0 ? undefined : JSON.parse(text);
            } catch {
              reject(new KosError('ERR_KMS_BAD_BODY', `node ${nodeId} answered with a non-JSON body`));
              return;
            }
            resolve({ status: res.statusCode ?? 0, json });
          });
          res.on('error', () => fail(new KosError('ERR_KMS_UNREACHABLE', `connection to node ${nodeId} failed`)));
        },
      );
      req.on('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (settled) return;
        settled = true;
        reject(
          new KosError('ERR_KMS_UNREACHABLE', `node ${nodeId} is unreachable`, {
            details: { nodeId, reason: error.code ?? 'error' },
          }),
        );
      });
      if (signal?.aborted) onAbort();
      req.end(body);
    });
  }

  function badStatus(status: number, json: unknown): KosError {
    const code = (json as { error?: { code?: unknown } } | undefined)?.error?.code;
    return new KosError('ERR_KMS_BAD_STATUS', `node ${nodeId} answered ${status}`, {
      details: { nodeId, status, ...(typeof code === 'string' ? { nodeCode: code.slice(0, 64) } : {}) },
    });
  }

  return {
    nodeId,
    zone: options.zone,
    baseUrl,
    async put(share: StoredShare, callOptions?: StoreCallOptions) {
      assertId(share.shareId, 'share id');
      const { status, json } = await call(
        'PUT',
        share.shareId,
        JSON.stringify({ share: encodeShareBody(share) }),
        callOptions?.signal,
      );
      if (status !== 201 && status !== 200) throw badStatus(status, json);
    },
    async get(shareId: string, callOptions?: StoreCallOptions) {
      assertId(shareId, 'share id');
      const { status, json } = await call('GET', shareId, undefined, callOptions?.signal);
      if (status === 404 && (json as { error?: { code?: string } })?.error?.code === 'ERR_SHARE_NOT_FOUND') {
        return undefined;
      }
      if (status !== 200) throw badStatus(status, json);
      const share = decodeShareBody((json as { share?: unknown } | undefined)?.share, 'ERR_KMS_BAD_BODY');
      if (share.shareId !== shareId)
        throw new KosError('ERR_KMS_BAD_BODY', `node ${nodeId} answered for another share`);
      return share;
    },
    async delete(shareId: string, callOptions?: StoreCallOptions) {
      assertId(shareId, 'share id');
      const { status, json } = await call('DELETE', shareId, undefined, callOptions?.signal);
      if (status !== 200) throw badStatus(status, json);
      return Boolean((json as { deleted?: unknown } | undefined)?.deleted);
    },
    async close() {
      agent.destroy();
    },
  };
}
