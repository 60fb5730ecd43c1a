import { type JWTVerifyGetKey, errors as joseErrors, jwtVerify, type KeyInput } from 'jose';
import { LRUCache } from 'lru-cache';
import { KosError } from '../errors.js';
import { isValidId } from '../stores/ids.js';
import { assertScore } from './score.js';

/** Who is calling, from a verified source only (DESIGN invariant 11). */
export interface Identity {
  readonly clientId: string;
  readonly score: number;
  /**
   * The client's public key from the token's `cnf.jwk` (RFC 7800), if any: high-tier DEKs are
   * wrapped to it and medium-tier grants bound to it (DPoP).
   */
  readonly publicJwk?: Readonly<Record<string, unknown>> | undefined;
}

/** The parts of an HTTP request an identity source may look at. */
export interface RequestLike {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}

/** Turns a request into an Identity or throws ERR_UNAUTHENTICATED / ERR_TOKEN_* / ERR_SCORE_INVALID. */
export interface IdentitySource {
  identify(request: RequestLike): Promise<Identity>;
  /**
   * What `identify` would return, without waiting, when the source already knows the answer
   * (a token it verified and still remembers); undefined otherwise, and never an error (the
   * caller then calls `identify`). Optional: a source without it is always asked `identify`.
   */
  peek?(request: RequestLike): Identity | undefined;
}

export interface JwtIdentityOptions {
  /** Verification key: public key, shared secret, JWK, or a key set from jose's createLocalJWKSet/createRemoteJWKSet. */
  readonly key: KeyInput | JWTVerifyGetKey;
  /** Accepted algorithms, e.g. `['EdDSA']`. Required; `none` is refused. */
  readonly algorithms: readonly string[];
  readonly issuer: string;
  readonly audience: string | readonly string[];
  /** Allowed clock skew (default 5). */
  readonly clockToleranceSeconds?: number;
  /** Refuse tokens older than this (`iat`), when set. */
  readonly maxTokenAgeSeconds?: number;
  /** Claim holding the score (default `trust_score`). */
  readonly scoreClaim?: string;
  /** Claim holding the client id (default `sub`). */
  readonly clientIdClaim?: string;
  /**
   * Remember a verified token for at most this long (and never past its `exp`), so a client
   * resending the same token is not verified again on every request (default 60; 0 disables).
   */
  readonly cacheSeconds?: number;
}

function invalid(message: string): KosError {
  return new KosError('ERR_INVALID_OPTIONS', `jwt identity: ${message}`);
}

const BEARER = /^Bearer ([A-Za-z0-9._~+/=-]+)$/;

/** The token of an `Authorization: Bearer …` header, or undefined. */
function bearerTokenOf(request: RequestLike): string | undefined {
  const header = request.headers.authorization ?? request.headers.Authorization;
  return typeof header === 'string' ? BEARER.exec(header.trim())?.[1] : undefined;
}

/** The token of an `Authorization: Bearer …` header, or ERR_UNAUTHENTICATED. */
export function bearerToken(request: RequestLike): string {
  const token = bearerTokenOf(request);
  if (!token) throw new KosError('ERR_UNAUTHENTICATED', 'a bearer token is required');
  return token;
}

function checkIdentity(clientId: unknown, score: unknown, publicJwk?: unknown): Identity {
  if (!isValidId(clientId)) throw new KosError('ERR_TOKEN_INVALID', 'client id is missing or invalid');
  assertScore(score);
  let jwk: Record<string, unknown> | undefined;
  if (publicJwk !== undefined) {
    const candidate = publicJwk as Record<string, unknown>;
    const isPublicKey =
      typeof publicJwk === 'object' &&
      publicJwk !== null &&
      !Array.isArray(publicJwk) &&
      typeof candidate.kty === 'string' &&
      candidate.d === undefined &&
      candidate.k === undefined;
    if (!isPublicKey) throw new KosError('ERR_TOKEN_INVALID', 'cnf.jwk must be a public key');
    jwk = candidate;
  }
  return Object.freeze({ clientId, score, publicJwk: jwk });
}

/**
 * Identity from a signed JWT (jose), with explicit algorithms, issuer, audience and a
 * required expiry (RFC 8725). A score anywhere else in the request is never read.
 */
export function createJwtIdentity(options: JwtIdentityOptions): IdentitySource {
  if (!options || typeof options !== 'object') throw invalid('options are required');
  if (options.key === undefined || options.key === null) throw invalid('key is required');
  const algorithms = options.algorithms;
  if (!Array.isArray(algorithms) || algorithms.length === 0 || algorithms.some((alg) => typeof alg !== 'string')) {
    throw invalid('algorithms must be a non-empty list');
  }
  if (algorithms.some((alg) => alg.toLowerCase() === 'none')) throw invalid('algorithm none is never accepted');
  if (typeof options.issuer !== 'string' || options.issuer.length === 0) throw invalid('issuer is required');
  const audience = options.audience;
  if (
    !(typeof audience === 'string' && audience.length > 0) &&
    !(Array.isArray(audience) && audience.length > 0 && audience.every((a) => typeof a === 'string' && a.length > 0))
  ) {
    throw invalid('audience is required');
  }
  const tolerance = options.clockToleranceSeconds ?? 5;
  if (!Number.isFinite(tolerance) || tolerance < 0 || tolerance > 300) {
    throw invalid('clockToleranceSeconds must be 0–300');
  }
  const maxAge = options.maxTokenAgeSeconds;
  if (maxAge !== undefined && (!Number.isFinite(maxAge) || maxAge <= 0))
    throw invalid('maxTokenAgeSeconds must be > 0');
  const scoreClaim = options.scoreClaim ?? 'trust_score';
  const clientIdClaim = options.clientIdClaim ?? 'sub';
  const key = options.key;
  const verifyOptions = {
    algorithms: [...algorithms],
    issuer: options.issuer,
    audience: typeof audience === 'string' ? audience : [...audience],
    clockTolerance: tolerance,
    requiredClaims: ['exp', 'iat', clientIdClaim, scoreClaim],
    ...(maxAge === undefined ? {} : { maxTokenAge: maxAge }),
  };

  const cacheSeconds = options.cacheSeconds ?? 60;
  if (!Number.isFinite(cacheSeconds) || cacheSeconds < 0 || cacheSeconds > 3600)
    throw invalid('cacheSeconds must be 0–3600');
  const verified = new LRUCache<string, { identity: Identity; untilMs: number }>({ max: 10_000 });

  /** The identity of a token verified before and still remembered (never past its expiry). */
  const remembered = (token: string): Identity | undefined => {
    const known = cacheSeconds > 0 ? verified.get(token) : undefined;
    return known && Date.now() < known.untilMs ? known.identity : undefined;
  };

  return {
    peek(request) {
      const token = bearerTokenOf(request);
      return token === undefined ? undefined : remembered(token);
    },
    async identify(request) {
      const token = bearerToken(request);
      const known = remembered(token);
      if (known) return known;
      let payload: Record<string, unknown>;
      try {
        ({ payload } = await jwtVerify(token, key as KeyInput, verifyOptions));
      } catch (error) {
        if (error instanceof joseErrors.JWTExpired) throw new KosError('ERR_TOKEN_EXPIRED', 'token has expired');
        throw new KosError('ERR_TOKEN_INVALID', 'token is not valid');
      }
      const cnf = payload.cnf as { jwk?: unknown } | undefined;
      const identity = checkIdentity(payload[clientIdClaim], payload[scoreClaim], cnf?.jwk);
      if (cacheSeconds > 0) {
        // Never past the token's own expiry (checked above), at most cacheSeconds.
        const untilMs = Math.min((payload.exp as number) * 1000, Date.now() + cacheSeconds * 1000);
        verified.set(token, { identity, untilMs });
      }
      return identity;
    },
  };
}

/** Identity from an app-supplied async function (its result is validated the same way). */
export function createCustomIdentity(
  resolve: (
    request: RequestLike,
  ) => Promise<{ clientId: string; score: number; publicJwk?: Record<string, unknown> } | undefined>,
): IdentitySource {
  if (typeof resolve !== 'function') throw new KosError('ERR_INVALID_OPTIONS', 'identity resolver must be a function');
  return {
    async identify(request) {
      const result = await resolve(request);
      if (!result) throw new KosError('ERR_UNAUTHENTICATED', 'caller is not identified');
      return checkIdentity(result.clientId, result.score, result.publicJwk);
    },
  };
}
