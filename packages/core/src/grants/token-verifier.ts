import { type JWTVerifyGetKey, errors as joseErrors, jwtVerify, type KeyInput } from 'jose';
import { KosError, type KosErrorCode } from '../errors.js';
import { isValidId } from '../stores/ids.js';
import {
  GRANT_TYP,
  type GrantClaims,
  MAX_GRANT_TTL_SECONDS,
  MAX_SERVICE_TOKEN_TTL_SECONDS,
  SERVICE_TOKEN_TYP,
  type ServiceTokenClaims,
  TOKEN_ALGORITHMS,
  type TokenAlgorithm,
} from './token-types.js';

export interface TokenVerifierOptions {
  /** The node this verifier guards; tokens must name it in `aud`. */
  readonly nodeId: string;
  /** The KOS issuer it trusts. */
  readonly issuer: string;
  /** KOS public key(s): a key, or a key set from jose's `createLocalJWKSet`. Header `jwk`/`jku` are never used. */
  readonly keys: KeyInput | JWTVerifyGetKey;
  /** Accepted algorithms (default EdDSA and ES256; never `none` or HMAC). */
  readonly algorithms?: readonly TokenAlgorithm[];
  readonly clockToleranceSeconds?: number;
  readonly clock?: () => number;
}

export interface TokenVerifier {
  readonly nodeId: string;
  /** The clock skew accepted (seconds): replay entries must outlive a grant by at least this. */
  readonly clockToleranceSeconds: number;
  verifyGrant(token: string): Promise<GrantClaims>;
  verifyServiceToken(token: string): Promise<ServiceTokenClaims>;
}

interface Codes {
  readonly invalid: KosErrorCode;
  readonly expired: KosErrorCode;
  readonly audience: KosErrorCode;
}

const GRANT_CODES: Codes = {
  invalid: 'ERR_GRANT_INVALID',
  expired: 'ERR_GRANT_EXPIRED',
  audience: 'ERR_GRANT_WRONG_AUDIENCE',
};
const SERVICE_CODES: Codes = {
  invalid: 'ERR_SERVICE_TOKEN_INVALID',
  expired: 'ERR_SERVICE_TOKEN_EXPIRED',
  audience: 'ERR_SERVICE_TOKEN_INVALID',
};

function invalid(message: string): KosError {
  return new KosError('ERR_INVALID_OPTIONS', `token verifier: ${message}`);
}

function isClaimFailure(error: unknown): error is InstanceType<typeof joseErrors.JWTClaimValidationFailed> {
  return error instanceof joseErrors.JWTClaimValidationFailed;
}

/**
 * Verifies KOS tokens on a KMS node with a fixed key set and algorithm allow-list (RFC 8725):
 * signature first, then `typ`, issuer, audience, expiry and the lifetime cap. Each failure
 * has its own code; messages never echo the token.
 */
export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  if (!options || typeof options !== 'object') throw invalid('options are required');
  if (!isValidId(options.nodeId)) throw invalid('nodeId must be a valid id');
  if (typeof options.issuer !== 'string' || options.issuer.length === 0) throw invalid('issuer is required');
  if (!options.keys) throw invalid('keys are required');
  const algorithms = [...(options.algorithms ?? TOKEN_ALGORITHMS)];
  if (algorithms.length === 0 || algorithms.some((alg) => !TOKEN_ALGORITHMS.includes(alg))) {
    throw invalid(`algorithms must be among ${TOKEN_ALGORITHMS.join(', ')}`);
  }
  const tolerance = options.clockToleranceSeconds ?? 5;
  if (!Number.isFinite(tolerance) || tolerance < 0 || tolerance > 300)
    throw invalid('clockToleranceSeconds must be 0–300');
  const { nodeId, issuer, keys } = options;
  const clock = options.clock ?? Date.now;

  async function verify(
    token: string,
    typ: string,
    maxTtl: number,
    codes: Codes,
    required: string[],
  ): Promise<Record<string, unknown>> {
    if (typeof token !== 'string' || token.length === 0 || token.length > 8192) {
      throw new KosError(codes.invalid, 'token is missing or malformed');
    }
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, keys as KeyInput, {
        algorithms,
        issuer,
        audience: nodeId,
        typ,
        clockTolerance: tolerance,
        maxTokenAge: maxTtl + tolerance,
        requiredClaims: ['exp', 'iat', 'jti', 'sub', ...required],
        currentDate: new Date(clock()),
      }));
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) throw new KosError(codes.expired, 'token has expired');
      if (isClaimFailure(error) && error.claim === 'typ') {
        throw new KosError('ERR_TOKEN_WRONG_TYPE', `expected a ${typ} token`);
      }
      if (isClaimFailure(error) && error.claim === 'aud') {
        throw new KosError(codes.audience, 'token is not for this node');
      }
      throw new KosError(codes.invalid, 'token is not valid');
    }
    if ((payload.exp as number) - (payload.iat as number) > maxTtl) {
      throw new KosError(codes.invalid, `token lifetime exceeds ${maxTtl} s`);
    }
    if (!isValidId(payload.sub) || typeof payload.jti !== 'string' || payload.jti.length < 16) {
      throw new KosError(codes.invalid, 'token claims are malformed');
    }
    return payload;
  }

  return {
    nodeId,
    clockToleranceSeconds: tolerance,
    async verifyGrant(token) {
      const payload = await verify(token, GRANT_TYP, MAX_GRANT_TTL_SECONDS, GRANT_CODES, ['key', 'ver', 'set', 'shr']);
      const { key, ver, set, shr, cnf } = payload;
      const shares = shr as Record<string, unknown>;
      const shareEntries =
        typeof shr === 'object' && shr !== null && !Array.isArray(shr) ? Object.entries(shares) : undefined;
      const audience = Array.isArray(payload.aud) ? (payload.aud as unknown[]) : [payload.aud];
      const wellFormed =
        isValidId(key) &&
        Number.isInteger(ver) &&
        (ver as number) >= 1 &&
        (ver as number) <= 0xffff_ffff &&
        isValidId(set) &&
        shareEntries !== undefined &&
        shareEntries.length > 0 &&
        shareEntries.every(([node, share]) => isValidId(node) && isValidId(share)) &&
        audience.every((entry) => isValidId(entry)) &&
        (cnf === undefined ||
          (typeof cnf === 'object' &&
            cnf !== null &&
            typeof (cnf as { jkt?: unknown }).jkt === 'string' &&
            /^[A-Za-z0-9_-]{43}$/.test((cnf as { jkt: string }).jkt)));
      if (!wellFormed) throw new KosError('ERR_GRANT_INVALID', 'grant claims are malformed');
      const aud = Array.isArray(payload.aud) ? (payload.aud as string[]) : [payload.aud as string];
      return { ...(payload as unknown as GrantClaims), aud };
    },
    async verifyServiceToken(token) {
      const payload = await verify(token, SERVICE_TOKEN_TYP, MAX_SERVICE_TOKEN_TTL_SECONDS, SERVICE_CODES, []);
      // A service token names exactly one node: this one.
      if (payload.aud !== nodeId) throw new KosError('ERR_SERVICE_TOKEN_INVALID', 'service token claims are malformed');
      return payload as unknown as ServiceTokenClaims;
    },
  };
}
