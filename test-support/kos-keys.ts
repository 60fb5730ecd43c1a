import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTokenIssuer, type TokenIssuer } from '@kos/core';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK } from 'jose';

/** A KOS signing identity for tests: an Ed25519 key pair, its issuer, and a JWKS file nodes trust. */
export interface TestKosIdentity {
  readonly issuer: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
  readonly jwksPath: string;
  readonly tokens: TokenIssuer;
}

export async function createKosIdentity(dir: string, issuer = 'https://kos.test'): Promise<TestKosIdentity> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid: 'kos-test-1', alg: 'EdDSA', use: 'sig' };
  const jwksPath = join(dir, 'kos-public.jwks.json');
  writeFileSync(jwksPath, JSON.stringify({ keys: [publicJwk] }));
  return {
    issuer,
    privateKey,
    publicJwk,
    jwksPath,
    tokens: createTokenIssuer({ issuer, privateKey, keyId: 'kos-test-1' }),
  };
}
