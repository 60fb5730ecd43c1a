/**
 * The two kinds of tokens KOS signs for KMS nodes (docs/kms-api.md §3). They share a signing
 * key but never a `typ`: a grant is refused where a service token is expected and the reverse.
 */

/** JWS `typ` of a medium-tier share grant (RFC 8725 §3.11: explicit typing). */
export const GRANT_TYP = 'kos-grant+jwt';
/** JWS `typ` of a KOS-to-node service token. */
export const SERVICE_TOKEN_TYP = 'kos-service+jwt';
/** A grant lives at most this long. */
export const MAX_GRANT_TTL_SECONDS = 60;
/** A service token lives at most this long. */
export const MAX_SERVICE_TOKEN_TTL_SECONDS = 300;
/** Default signature algorithm. */
export const DEFAULT_TOKEN_ALG = 'EdDSA';
/** Signature algorithms KOS signs and accepts (asymmetric only: nodes hold public keys). */
export const TOKEN_ALGORITHMS = ['EdDSA', 'ES256'] as const;
export type TokenAlgorithm = (typeof TOKEN_ALGORITHMS)[number];

/** Claims of a share grant: one signature covers the client's placements on every node. */
export interface GrantClaims {
  readonly iss: string;
  /** The node ids this grant is good for. */
  readonly aud: readonly string[];
  /** The client id; must own the share. */
  readonly sub: string;
  readonly iat: number;
  readonly exp: number;
  readonly jti: string;
  /** Key id. */
  readonly key: string;
  /** Key version. */
  readonly ver: number;
  /** Share set id. */
  readonly set: string;
  /** Share id per node id. */
  readonly shr: Readonly<Record<string, string>>;
  /** RFC 9449 confirmation: the SHA-256 JWK thumbprint of the holder's DPoP key. */
  readonly cnf?: { readonly jkt: string };
}

/** Claims of a service token (KOS acting as itself towards one node). */
export interface ServiceTokenClaims {
  readonly iss: string;
  readonly aud: string;
  readonly sub: string;
  readonly iat: number;
  readonly exp: number;
  readonly jti: string;
}
