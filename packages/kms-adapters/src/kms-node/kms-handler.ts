import {
  decodeShareBody,
  encodeShareBody,
  HEALTH_PATH,
  httpStatusFor,
  isKosError,
  isValidId,
  KosError,
  MAX_SHARE_BODY_BYTES,
  type MetadataStore,
  SERVICE_AUTH_SCHEME,
  SHARES_PATH,
  type ShareStore,
  type TokenVerifier,
  toErrorBody,
  verifyDpopProof,
} from '@kos/core';

/** A request as the handler needs it; the server (or a framework mount) builds it. */
export interface KmsRequest {
  readonly method: string;
  /** Absolute URL as the client addressed it (scheme, host, path, query); DPoP proofs are checked against it. */
  readonly url: string;
  /** Path to route on, when the API is mounted under a prefix (default: the URL's path). */
  readonly path?: string;
  /** Lower-case header names. */
  readonly headers: Readonly<Record<string, string | undefined>>;
  readonly body?: Uint8Array | undefined;
}

export interface KmsResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** What a node reports for the audit trail: ids and codes, never tokens or share bytes. */
export type KmsNodeEvent =
  | {
      type: 'share.released';
      nodeId: string;
      shareId: string;
      via: 'grant' | 'service';
      clientId?: string;
      jti?: string;
    }
  | { type: 'share.refused'; nodeId: string; code: string; shareId?: string }
  | { type: 'share.stored' | 'share.deleted'; nodeId: string; shareId: string };

/** The share id the health probe reads (no share ever has it: a healthy store answers "not found"). */
export const HEALTH_PROBE_SHARE_ID = 'kos-health-probe';

/** A change of the node's store health, as `GET /v1/health` sees it (ids and codes only). */
export interface KmsHealthChange {
  readonly nodeId: string;
  readonly healthy: boolean;
  /** The code answered while unhealthy (`ERR_STORE_IO`). */
  readonly code?: string;
  /** Why the probe failed (the store's error message, or the timeout), for the node's log only. */
  readonly reason?: string;
}

export interface KmsHandlerOptions {
  readonly nodeId: string;
  readonly store: ShareStore;
  /** Verifies grants and service tokens issued by the KOS this node trusts. */
  readonly verifier: TokenVerifier;
  /** Replay cache for grant and DPoP proof ids (Redis- or file-backed so it survives restarts). */
  readonly replay: Pick<MetadataStore, 'markOnce'>;
  /** Base URL clients use to reach this node, for DPoP `htu` checks (default: from the Host header). */
  readonly publicUrl?: string;
  /** Origins allowed to fetch shares from a browser (default: none). `*` allows any. */
  readonly corsOrigins?: readonly string[];
  readonly clock?: () => number;
  readonly onEvent?: (event: KmsNodeEvent) => void;
  /** Called with unexpected errors (already mapped to ERR_INTERNAL for the client). */
  readonly onError?: (error: unknown) => void;
  /**
   * How `GET /v1/health` checks the store: by default a read of {@link HEALTH_PROBE_SHARE_ID}
   * (one GET on Redis, one failed open on a file store); a function to probe otherwise (it
   * must honour the signal); `false` to answer without touching the store.
   */
  readonly healthProbe?: false | ((signal: AbortSignal) => Promise<unknown>);
  /** How long the probe may take before the node is reported unhealthy (default 2000 ms). */
  readonly healthTimeoutMs?: number;
  /**
   * How long a probe's outcome answers further health requests (default 1000 ms; 0: probe on
   * every request). Concurrent requests share one probe, so a flood of health checks costs
   * the store at most one read per period.
   */
  readonly healthCacheMs?: number;
  /** Told when the store turns unhealthy or healthy again (for the node's log). */
  readonly onHealthChange?: (change: KmsHealthChange) => void;
}

const JSON_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
};

function respond(status: number, body: unknown, extra: Record<string, string> = {}): KmsResponse {
  return { status, headers: { ...JSON_HEADERS, ...extra }, body: body === undefined ? '' : JSON.stringify(body) };
}

function parseAuthorization(header: string | undefined): { scheme: string; token: string } | undefined {
  if (!header) return undefined;
  const match = /^([A-Za-z-]+) ([A-Za-z0-9._~+/=-]+)$/.exec(header.trim());
  return match ? { scheme: match[1] as string, token: match[2] as string } : undefined;
}

/**
 * The KMS node HTTP API (docs/kms-api.md) as a function from request to response, so it can
 * run in the node's own server or be mounted in an app. Retrieval takes a grant (`Bearer`,
 * or `DPoP` with a proof) or a service token (`KOS-Service`); store and delete take a service
 * token only. Every refusal has its own code; responses never echo tokens.
 */
export function createKmsHandler(options: KmsHandlerOptions): (request: KmsRequest) => Promise<KmsResponse> {
  if (!options || typeof options !== 'object')
    throw new KosError('ERR_INVALID_OPTIONS', 'kms handler: options are required');
  const { nodeId, store, verifier, replay } = options;
  if (!isValidId(nodeId)) throw new KosError('ERR_INVALID_OPTIONS', 'kms handler: nodeId must be a valid id');
  if (!store || typeof store.get !== 'function')
    throw new KosError('ERR_INVALID_OPTIONS', 'kms handler: store is required');
  if (!verifier || verifier.nodeId !== nodeId) {
    throw new KosError('ERR_INVALID_OPTIONS', 'kms handler: verifier must be created for this node id');
  }
  if (!replay || typeof replay.markOnce !== 'function') {
    throw new KosError('ERR_INVALID_OPTIONS', 'kms handler: a replay cache (markOnce) is required');
  }
  const healthTimeoutMs = options.healthTimeoutMs ?? 2000;
  if (!Number.isInteger(healthTimeoutMs) || healthTimeoutMs < 1 || healthTimeoutMs > 60_000) {
    throw new KosError('ERR_INVALID_OPTIONS', 'kms handler: healthTimeoutMs must be an integer 1–60000');
  }
  const healthCacheMs = options.healthCacheMs ?? 1000;
  if (!Number.isInteger(healthCacheMs) || healthCacheMs < 0 || healthCacheMs > 60_000) {
    throw new KosError('ERR_INVALID_OPTIONS', 'kms handler: healthCacheMs must be an integer 0–60000');
  }
  if (options.healthProbe !== undefined && options.healthProbe !== false && typeof options.healthProbe !== 'function') {
    throw new KosError('ERR_INVALID_OPTIONS', 'kms handler: healthProbe must be a function or false');
  }
  const cors = new Set(options.corsOrigins ?? []);
  const clock = options.clock ?? Date.now;
  const emit = (event: KmsNodeEvent) => {
    try {
      options.onEvent?.(event);
    } catch {
      // Auditing failures are the audit layer's concern.
    }
  };

  const probe =
    options.healthProbe === false
      ? undefined
      : (options.healthProbe ?? ((signal: AbortSignal) => store.get(HEALTH_PROBE_SHARE_ID, { signal })));
  type HealthOutcome = { readonly ok: true } | { readonly ok: false; readonly code: string; readonly reason: string };
  let lastHealth: { outcome: HealthOutcome; at: number } | undefined;
  let healthInFlight: Promise<HealthOutcome> | undefined;
  let reportedHealthy = true;

  /** One probe of the store, bounded by the timeout even if the store ignores its signal. */
  async function runProbe(check: (signal: AbortSignal) => Promise<unknown>): Promise<HealthOutcome> {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        controller.abort();
        reject(new KosError('ERR_STORE_IO', `the store did not answer within ${healthTimeoutMs} ms`));
      }, healthTimeoutMs);
    });
    try {
      await Promise.race([check(controller.signal), timeout]);
      return { ok: true };
    } catch (error) {
      const code = isKosError(error) && error.code.startsWith('ERR_STORE_') ? error.code : 'ERR_STORE_IO';
      const reason = isKosError(error) ? error.message : 'unexpected error';
      return { ok: false, code, reason };
    } finally {
      clearTimeout(timer);
    }
  }

  function health(): Promise<HealthOutcome> {
    if (!probe) return Promise.resolve({ ok: true });
    if (lastHealth && clock() - lastHealth.at < healthCacheMs) return Promise.resolve(lastHealth.outcome);
    healthInFlight ??= runProbe(probe).then((outcome) => {
      healthInFlight = undefined;
      lastHealth = { outcome, at: clock() };
      if (outcome.ok !== reportedHealthy) {
        reportedHealthy = outcome.ok;
        try {
          options.onHealthChange?.(
            outcome.ok
              ? { nodeId, healthy: true }
              : { nodeId, healthy: false, code: outcome.code, reason: outcome.reason },
          );
        } catch {
          // A failing log hook must not fail the health check.
        }
      }
      return outcome;
    });
    return healthInFlight;
  }

  function corsHeaders(origin: string | undefined): Record<string, string> {
    if (!origin || !(cors.has('*') || cors.has(origin))) return {};
    return {
      'access-control-allow-origin': cors.has('*') ? '*' : origin,
      'access-control-allow-headers': 'authorization, dpop, content-type',
      'access-control-allow-methods': 'GET',
      'access-control-max-age': '600',
      vary: 'Origin',
    };
  }

  async function requireService(auth: { token: string } | undefined): Promise<void> {
    if (!auth) throw new KosError('ERR_UNAUTHENTICATED', 'a service token is required');
    await verifier.verifyServiceToken(auth.token);
  }

  async function retrieve(request: KmsRequest, shareId: string): Promise<KmsResponse> {
    const auth = parseAuthorization(request.headers.authorization);
    if (!auth) throw new KosError('ERR_UNAUTHENTICATED', 'a grant or service token is required');
    if (auth.scheme === SERVICE_AUTH_SCHEME) {
      await verifier.verifyServiceToken(auth.token);
      const share = await store.get(shareId);
      if (!share) throw new KosError('ERR_SHARE_NOT_FOUND', 'share not found');
      emit({ type: 'share.released', nodeId, shareId, via: 'service' });
      return respond(200, { share: encodeShareBody(share) });
    }
    if (auth.scheme !== 'Bearer' && auth.scheme !== 'DPoP') {
      throw new KosError('ERR_UNAUTHENTICATED', 'unsupported authorization scheme');
    }
    const claims = await verifier.verifyGrant(auth.token);
    if (claims.shr[nodeId] !== shareId) throw new KosError('ERR_GRANT_WRONG_SHARE', 'grant is for another share');
    let proofJti: string | undefined;
    if (claims.cnf) {
      if (auth.scheme !== 'DPoP') throw new KosError('ERR_DPOP_REQUIRED', 'this grant is bound to a key: use DPoP');
      const base = options.publicUrl?.replace(/\/+$/, '');
      const url = base ? `${base}${request.path ?? new URL(request.url).pathname}` : request.url;
      ({ jti: proofJti } = await verifyDpopProof({
        proof: request.headers.dpop,
        method: request.method,
        url,
        accessToken: auth.token,
        expectedJkt: claims.cnf.jkt,
        clockToleranceSeconds: verifier.clockToleranceSeconds,
        clock,
      }));
    } else if (auth.scheme === 'DPoP') {
      throw new KosError('ERR_DPOP_INVALID', 'the DPoP scheme needs a key-bound grant');
    }
    const share = await store.get(shareId);
    if (!share) throw new KosError('ERR_SHARE_NOT_FOUND', 'share not found');
    if (share.kid !== claims.key) throw new KosError('ERR_GRANT_WRONG_KEY', 'grant is for another key');
    if (share.version !== claims.ver) throw new KosError('ERR_GRANT_WRONG_VERSION', 'grant is for another key version');
    if (share.setId !== claims.set) throw new KosError('ERR_GRANT_WRONG_SHARE', 'grant is for another share set');
    if (share.owner !== claims.sub) throw new KosError('ERR_GRANT_WRONG_CLIENT', 'grant is for another client');
    // Single use, checked last so a refused attempt does not burn the grant. A key-bound grant
    // is reusable by its holder within its lifetime; its proofs are single-use instead.
    // Kept until the grant can no longer be accepted (expiry plus the accepted clock skew), plus a margin.
    const ttlSeconds = Math.max(1, claims.exp - Math.floor(clock() / 1000) + verifier.clockToleranceSeconds + 60);
    if (proofJti !== undefined) {
      if (!(await replay.markOnce(`dpop.${nodeId}`, proofJti, 120 + verifier.clockToleranceSeconds))) {
        throw new KosError('ERR_DPOP_REPLAYED', 'this DPoP proof was already used');
      }
    } else if (!(await replay.markOnce(`grant.${nodeId}`, claims.jti, ttlSeconds))) {
      throw new KosError('ERR_GRANT_REPLAYED', 'this grant was already used at this node');
    }
    emit({ type: 'share.released', nodeId, shareId, via: 'grant', clientId: claims.sub, jti: claims.jti });
    return respond(200, { share: encodeShareBody(share) });
  }

  async function put(request: KmsRequest, shareId: string): Promise<KmsResponse> {
    await requireService(parseAuthorization(request.headers.authorization));
    const body = request.body ?? new Uint8Array();
    if (body.length > MAX_SHARE_BODY_BYTES) throw new KosError('ERR_REQUEST_TOO_LARGE', 'body is too large');
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
    } catch {
      throw new KosError('ERR_INVALID_ARGUMENT', 'body must be JSON');
    }
    const share = decodeShareBody((parsed as { share?: unknown } | null)?.share, 'ERR_INVALID_ARGUMENT');
    if (share.shareId !== shareId) throw new KosError('ERR_INVALID_ARGUMENT', 'share id in body and path differ');
    await store.put(share);
    emit({ type: 'share.stored', nodeId, shareId });
    return respond(201, { stored: true });
  }

  async function remove(request: KmsRequest, shareId: string): Promise<KmsResponse> {
    await requireService(parseAuthorization(request.headers.authorization));
    const deleted = await store.delete(shareId);
    emit({ type: 'share.deleted', nodeId, shareId });
    return respond(200, { deleted });
  }

  return async function handleKmsRequest(request) {
    const origin = request.headers.origin;
    let shareId: string | undefined;
    try {
      let path: string;
      try {
        path = request.path ?? new URL(request.url).pathname;
      } catch {
        throw new KosError('ERR_INVALID_ARGUMENT', 'bad request URL');
      }
      if (path === HEALTH_PATH) {
        if (request.method !== 'GET') throw new KosError('ERR_METHOD_NOT_ALLOWED', 'use GET');
        const outcome = await health();
        if (outcome.ok) return respond(200, { status: 'ok', nodeId });
        // The reason stays in the node's log: this endpoint answers anyone.
        return respond(503, {
          error: { code: outcome.code, message: `node ${nodeId}: its share store is unavailable` },
        });
      }
      if (!path.startsWith(SHARES_PATH)) throw new KosError('ERR_ROUTE_NOT_FOUND', 'no such route');
      let segment: string;
      try {
        segment = decodeURIComponent(path.slice(SHARES_PATH.length));
      } catch {
        throw new KosError('ERR_INVALID_ID', 'share id is not valid');
      }
      if (!isValidId(segment)) throw new KosError('ERR_INVALID_ID', 'share id is not valid');
      shareId = segment;
      switch (request.method) {
        case 'OPTIONS':
          return { status: 204, headers: corsHeaders(origin), body: '' };
        case 'GET': {
          const response = await retrieve(request, shareId);
          return { ...response, headers: { ...response.headers, ...corsHeaders(origin) } };
        }
        case 'PUT':
          return await put(request, shareId);
        case 'DELETE':
          return await remove(request, shareId);
        default:
          throw new KosError('ERR_METHOD_NOT_ALLOWED', 'method not allowed');
      }
    } catch (error) {
      if (!isKosError(error)) options.onError?.(error);
      const body = toErrorBody(error);
      emit({ type: 'share.refused', nodeId, code: body.error.code, ...(shareId ? { shareId } : {}) });
      const status = isKosError(error) ? httpStatusFor(error.code) : 500;
      // A store that is down answers 503 with its code, never a bare 500.
      return respond(status, body, corsHeaders(origin));
    }
  };
}
