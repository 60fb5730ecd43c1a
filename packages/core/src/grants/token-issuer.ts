import { type CryptoKey, type KeyObject, SignJWT } from 'jose';
import { toBase64url } from '../bytes.js';
import { getRandomBytes } from '../crypto/noble-provider.js';
import { KosError } from '../errors.js';
import { assertId } from '../stores/ids.js';
import {
  DEFAULT_TOKEN_ALG,
  GRANT_TYP,
  MAX_GRANT_TTL_SECONDS,
  MAX_SERVICE_TOKEN_TTL_SECONDS,
  SERVICE_TOKEN_TYP,
  TOKEN_ALGORITHMS,
  type TokenAlgorithm,
} from './token-types.js';

export interface TokenIssuerOptions {
  /** This KOS deployment's issuer name (`iss`), e.g. `https://kos.example.com`. */
  readonly issuer: string;
  /** Private signing key (Ed25519 for EdDSA, P-256 for ES256). */
  readonly privateKey: CryptoKey | KeyObject;
  readonly alg?: TokenAlgorithm;
  /** `kid` header, so nodes can pick the key during key rollover. */
  readonly keyId?: string;
  /** Grant lifetime, at most 60 (default 30). */
  readonly grantTtlSeconds?: number;
  /** Service token lifetime, at most 300 (default 60). */
  readonly serviceTokenTtlSeconds?: number;
  readonly clock?: () => number;
}

export interface GrantRequest {
  readonly clientId: string;
  readonly kid: string;
  readonly version: number;
  readonly setId: string;
  /** The client's placements: node id → share id. */
  readonly shares: Readonly<Record<string, string>>;
  /** Bind the grant to the holder's DPoP key (RFC 9449 `cnf.jkt`). */
  readonly dpopJkt?: string | undefined;
}

export interface IssuedToken {
  readonly token: string;
  readonly jti: string;
  /** Expiry, seconds since the epoch. */
  readonly expiresAt: number;
}

export interface TokenIssuer {
  readonly issuer: string;
  /** One signature for all placements of a response. */
  issueGrant(request: GrantRequest): Promise<IssuedToken>;
  /** A short-lived token for KOS's own calls to one node. */
  issueServiceToken(nodeId: string): Promise<IssuedToken>;
}

function invalid(message: string): KosError {
  return new KosError('ERR_INVALID_OPTIONS', `token issuer: ${message}`);
}

function ttl(value: number | undefined, fallback: number, max: number, name: string): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < 1 || resolved > max) throw invalid(`${name} must be 1–${max}`);
  return resolved;
}

/** Signs grants and service tokens with an explicit `typ`, `alg`, audience and short expiry. */
export function createTokenIssuer(options: TokenIssuerOptions): TokenIssuer {
  if (!options || typeof options !== 'object') throw invalid('options are required');
  if (typeof options.issuer !== 'string' || options.issuer.length === 0) throw invalid('issuer is required');
  if (!options.privateKey) throw invalid('privateKey is required');
  const alg = options.alg ?? DEFAULT_TOKEN_ALG;
  if (!TOKEN_ALGORITHMS.includes(alg)) throw invalid(`alg must be one of ${TOKEN_ALGORITHMS.join(', ')}`);
  const grantTtl = ttl(options.grantTtlSeconds, 30, MAX_GRANT_TTL_SECONDS, 'grantTtlSeconds');
  const serviceTtl = ttl(options.serviceTokenTtlSeconds, 60, MAX_SERVICE_TOKEN_TTL_SECONDS, 'serviceTokenTtlSeconds');
  const clock = options.clock ?? Date.now;
  const { issuer, privateKey, keyId } = options;
  const header = (typ: string) => ({ alg, typ, ...(keyId ? { kid: keyId } : {}) });
  const jti = () => toBase64url(getRandomBytes(16));

  return {
    issuer,
    async issueGrant(request) {
      assertId(request.clientId, 'client id');
      assertId(request.kid, 'key id');
      assertId(request.setId, 'set id');
      const nodes = Object.keys(request.shares);
      if (nodes.length === 0) throw new KosError('ERR_INVALID_ARGUMENT', 'a grant needs at least one placement');
      for (const [nodeId, shareId] of Object.entries(request.shares)) {
        assertId(nodeId, 'node id');
        assertId(shareId, 'share id');
      }
      const now = Math.floor(clock() / 1000);
      const id = jti();
      const token = await new SignJWT({
        key: request.kid,
        ver: request.version,
        set: request.setId,
        shr: { ...request.shares },
        ...(request.dpopJkt ? { cnf: { jkt: request.dpopJkt } } : {}),
      })
        .setProtectedHeader(header(GRANT_TYP))
        .setIssuer(issuer)
        .setAudience(nodes)
        .setSubject(request.clientId)
        .setIssuedAt(now)
        .setExpirationTime(now + grantTtl)
        .setJti(id)
        .sign(privateKey);
      return { token, jti: id, expiresAt: now + grantTtl };
    },
    async issueServiceToken(nodeId) {
      assertId(nodeId, 'node id');
      const now = Math.floor(clock() / 1000);
      const id = jti();
      const token = await new SignJWT({})
        .setProtectedHeader(header(SERVICE_TOKEN_TYP))
        .setIssuer(issuer)
        .setAudience(nodeId)
        .setSubject('kos')
        .setIssuedAt(now)
        .setExpirationTime(now + serviceTtl)
        .setJti(id)
        .sign(privateKey);
      return { token, jti: id, expiresAt: now + serviceTtl };
    },
  };
}
