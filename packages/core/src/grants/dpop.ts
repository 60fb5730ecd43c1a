import { sha256 } from '@noble/hashes/sha2.js';
import {
  type CryptoKey,
  calculateJwkThumbprint,
  decodeProtectedHeader,
  EmbeddedJWK,
  type JWK,
  errors as joseErrors,
  jwtVerify,
  SignJWT,
} from 'jose';
import { toBase64url, utf8 } from '../bytes.js';
import { getRandomBytes } from '../crypto/noble-provider.js';
import { KosError } from '../errors.js';

/**
 * DPoP (RFC 9449): a grant bound to the holder's key (`cnf.jkt`) is only accepted with a
 * fresh proof signed by that key for this request. This file uses jose and @noble only, so
 * the same code runs in browsers (proof creation) and on nodes (verification).
 */

export const DPOP_TYP = 'dpop+jwt';
export const DPOP_ALGORITHMS = ['EdDSA', 'ES256'] as const;
/** How old a proof may be (RFC 9449 §11.1 leaves this to the server; KOS: 60 s). */
export const DPOP_MAX_AGE_SECONDS = 60;

/** `ath`: base64url(SHA-256(ASCII(access token))) (RFC 9449 §4.2). */
export function accessTokenHash(token: string): string {
  return toBase64url(sha256(utf8(token)));
}

/** The `htu` form of a URL: no query, no fragment (RFC 9449 §4.3 item 9). */
export function dpopTargetUri(url: string): string {
  const parsed = new URL(url);
  return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
}

/** The RFC 7638 SHA-256 thumbprint used as `cnf.jkt`. */
export function jwkThumbprint(jwk: JWK): Promise<string> {
  return calculateJwkThumbprint(jwk, 'sha256');
}

export interface DpopProofInput {
  readonly privateKey: CryptoKey;
  /** The public half, embedded in the proof header. */
  readonly publicJwk: JWK;
  readonly alg?: (typeof DPOP_ALGORITHMS)[number];
  readonly method: string;
  readonly url: string;
  /** The grant the proof accompanies. */
  readonly accessToken: string;
}

/** Creates a one-time DPoP proof for one request. */
export function createDpopProof(input: DpopProofInput): Promise<string> {
  const { d: _private, ...publicJwk } = input.publicJwk as JWK & { d?: string };
  return new SignJWT({
    htm: input.method.toUpperCase(),
    htu: dpopTargetUri(input.url),
    ath: accessTokenHash(input.accessToken),
  })
    .setProtectedHeader({ alg: input.alg ?? 'EdDSA', typ: DPOP_TYP, jwk: publicJwk })
    .setIssuedAt()
    .setJti(toBase64url(getRandomBytes(16)))
    .sign(input.privateKey);
}

export interface DpopCheck {
  readonly proof: string | undefined;
  readonly method: string;
  /** The full request URL as the node sees it (scheme, host, path). */
  readonly url: string;
  readonly accessToken: string;
  /** `cnf.jkt` of the grant. */
  readonly expectedJkt: string;
  readonly clockToleranceSeconds?: number;
  readonly clock?: () => number;
}

/**
 * Verifies a DPoP proof against the request and the bound grant. Resolves the proof's `jti`,
 * which the caller must accept only once (replay cache). Throws ERR_DPOP_REQUIRED or
 * ERR_DPOP_INVALID.
 */
export async function verifyDpopProof(check: DpopCheck): Promise<{ jti: string }> {
  if (typeof check.proof !== 'string' || check.proof.length === 0) {
    throw new KosError('ERR_DPOP_REQUIRED', 'this grant is bound to a key: a DPoP proof is required');
  }
  const fail = (why: string) => new KosError('ERR_DPOP_INVALID', `DPoP proof ${why}`);
  if (check.proof.length > 4096) throw fail('is too large');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(check.proof);
  } catch {
    throw fail('is malformed');
  }
  const jwk = header.jwk as (JWK & { d?: unknown }) | undefined;
  if (!jwk || typeof jwk !== 'object' || jwk.d !== undefined) throw fail('must carry a public jwk');
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(check.proof, EmbeddedJWK, {
      algorithms: [...DPOP_ALGORITHMS],
      typ: DPOP_TYP,
      requiredClaims: ['iat', 'jti', 'htm', 'htu', 'ath'],
      maxTokenAge: DPOP_MAX_AGE_SECONDS,
      clockTolerance: check.clockToleranceSeconds ?? 5,
      currentDate: new Date((check.clock ?? Date.now)()),
    }));
  } catch (error) {
    if (error instanceof joseErrors.JWTExpired) throw fail('is too old');
    throw fail('is not valid');
  }
  if (payload.htm !== check.method.toUpperCase()) throw fail('is for another method');
  let target: string;
  try {
    target = dpopTargetUri(check.url);
  } catch {
    throw fail('cannot be checked against this request URL');
  }
  if (payload.htu !== target) throw fail('is for another URL');
  if (payload.ath !== accessTokenHash(check.accessToken)) throw fail('is for another grant');
  if (typeof payload.jti !== 'string' || payload.jti.length < 16) throw fail('has no usable jti');
  if ((await jwkThumbprint(jwk)) !== check.expectedJkt) throw fail('is signed by another key than the grant names');
  return { jti: payload.jti };
}
