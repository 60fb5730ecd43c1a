import { type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  createDpopProof,
  createTokenIssuer,
  createTokenVerifier,
  jwkThumbprint,
  type TokenIssuer,
  type TokenVerifier,
  verifyDpopProof,
} from '../src/index.js';
import { expectKosError } from './helpers.js';

const ISSUER = 'https://kos.test';
const request = {
  clientId: 'client-7',
  kid: 'orders',
  version: 2,
  setId: 'sSet1',
  shares: { 'node-1': 'sSet1.17', 'node-2': 'sSet1.99' },
};

describe('grants and service tokens', () => {
  let privateKey: CryptoKey;
  let publicKey: CryptoKey;
  let publicJwk: JWK;
  let tokens: TokenIssuer;
  let node1: TokenVerifier;

  beforeAll(async () => {
    ({ privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true }));
    publicJwk = await exportJWK(publicKey);
    tokens = createTokenIssuer({ issuer: ISSUER, privateKey });
    node1 = createTokenVerifier({ nodeId: 'node-1', issuer: ISSUER, keys: publicKey });
  });

  it('one grant covers every placement and names client, key, version and set', async () => {
    const grant = await tokens.issueGrant(request);
    const claims = await node1.verifyGrant(grant.token);
    expect(claims).toMatchObject({
      iss: ISSUER,
      sub: 'client-7',
      key: 'orders',
      ver: 2,
      set: 'sSet1',
      aud: ['node-1', 'node-2'],
    });
    expect(claims.shr['node-1']).toBe('sSet1.17');
    expect(claims.exp - claims.iat).toBeLessThanOrEqual(60);
    expect(claims.jti).toBe(grant.jti);
    const node2 = createTokenVerifier({ nodeId: 'node-2', issuer: ISSUER, keys: publicKey });
    expect((await node2.verifyGrant(grant.token)).shr['node-2']).toBe('sSet1.99');
  });

  it('refuses a grant for another node', async () => {
    const node3 = createTokenVerifier({ nodeId: 'node-3', issuer: ISSUER, keys: publicKey });
    await expectKosError(
      async () => node3.verifyGrant((await tokens.issueGrant(request)).token),
      'ERR_GRANT_WRONG_AUDIENCE',
    );
  });

  it('refuses an expired grant', async () => {
    const past = createTokenIssuer({ issuer: ISSUER, privateKey, clock: () => Date.now() - 120_000 });
    await expectKosError(async () => node1.verifyGrant((await past.issueGrant(request)).token), 'ERR_GRANT_EXPIRED');
  });

  it('refuses a grant that claims to live longer than 60 s', async () => {
    const now = Math.floor(Date.now() / 1000);
    const long = await new SignJWT({ key: 'orders', ver: 2, set: 'sSet1', shr: request.shares })
      .setProtectedHeader({ alg: 'EdDSA', typ: 'kos-grant+jwt' })
      .setIssuer(ISSUER)
      .setAudience(['node-1'])
      .setSubject('client-7')
      .setIssuedAt(now)
      .setExpirationTime(now + 3600)
      .setJti('abcdefghijklmnopqrstuv')
      .sign(privateKey);
    await expectKosError(() => node1.verifyGrant(long), 'ERR_GRANT_INVALID');
  });

  it('refuses alg none, HS256 signed with the public key, and a header jwk of another key', async () => {
    const payload = {
      iss: ISSUER,
      aud: ['node-1'],
      sub: 'client-7',
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 30,
      jti: 'abcdefghijklmnopqrstuv',
      key: 'orders',
      ver: 2,
      set: 'sSet1',
      shr: request.shares,
    };
    const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    await expectKosError(
      () => node1.verifyGrant(`${b64({ alg: 'none', typ: 'kos-grant+jwt' })}.${b64(payload)}.`),
      'ERR_GRANT_INVALID',
    );

    const hmacWithPublic = await new SignJWT(payload)
      .setProtectedHeader({ alg: 'HS256', typ: 'kos-grant+jwt' })
      .sign(new TextEncoder().encode(JSON.stringify(publicJwk)));
    await expectKosError(() => node1.verifyGrant(hmacWithPublic), 'ERR_GRANT_INVALID');

    const attacker = await generateKeyPair('EdDSA', { extractable: true });
    const withJwk = await new SignJWT(payload)
      .setProtectedHeader({ alg: 'EdDSA', typ: 'kos-grant+jwt', jwk: await exportJWK(attacker.publicKey) })
      .sign(attacker.privateKey);
    await expectKosError(() => node1.verifyGrant(withJwk), 'ERR_GRANT_INVALID');
  });

  it('never accepts a service token as a grant, nor a grant as a service token', async () => {
    const service = await tokens.issueServiceToken('node-1');
    await expectKosError(() => node1.verifyGrant(service.token), 'ERR_TOKEN_WRONG_TYPE');
    const grant = await tokens.issueGrant(request);
    await expectKosError(() => node1.verifyServiceToken(grant.token), 'ERR_TOKEN_WRONG_TYPE');
    expect((await node1.verifyServiceToken(service.token)).aud).toBe('node-1');
  });

  it('refuses a service token for another node', async () => {
    await expectKosError(
      async () => node1.verifyServiceToken((await tokens.issueServiceToken('node-2')).token),
      'ERR_SERVICE_TOKEN_INVALID',
    );
  });

  it.each([
    ['a grant lifetime above 60 s', { grantTtlSeconds: 61 }],
    ['an HMAC algorithm', { alg: 'HS256' }],
    ['no issuer', { issuer: '' }],
  ])('the issuer refuses %s', async (_what, change) => {
    await expectKosError(
      () => createTokenIssuer({ issuer: ISSUER, privateKey, ...change } as never),
      'ERR_INVALID_OPTIONS',
    );
  });
});

describe('DPoP proofs (RFC 9449)', () => {
  let holder: { privateKey: CryptoKey; publicJwk: JWK; jkt: string };
  const url = 'https://kms-1.test/v1/shares/sSet1.17';
  const grant = 'header.payload.signature';

  beforeAll(async () => {
    const pair = await generateKeyPair('EdDSA', { extractable: true });
    const publicJwk = await exportJWK(pair.publicKey);
    holder = { privateKey: pair.privateKey, publicJwk, jkt: await jwkThumbprint(publicJwk) };
  });

  const proof = (change: Partial<Parameters<typeof createDpopProof>[0]> = {}) =>
    createDpopProof({
      privateKey: holder.privateKey,
      publicJwk: holder.publicJwk,
      method: 'GET',
      url,
      accessToken: grant,
      ...change,
    });

  it('accepts the holder proof for this request and returns its jti', async () => {
    const { jti } = await verifyDpopProof({
      proof: await proof(),
      method: 'GET',
      url: `${url}?x=1`,
      accessToken: grant,
      expectedJkt: holder.jkt,
    });
    expect(jti).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });

  it('requires a proof for a bound grant', async () => {
    await expectKosError(
      () => verifyDpopProof({ proof: undefined, method: 'GET', url, accessToken: grant, expectedJkt: holder.jkt }),
      'ERR_DPOP_REQUIRED',
    );
  });

  it.each([
    ['another method', { method: 'DELETE' }],
    ['another URL', { url: 'https://kms-2.test/v1/shares/sSet1.17' }],
    ['another grant', { accessToken: 'other.grant.token' }],
  ])('refuses a proof made for %s', async (_what, change) => {
    await expectKosError(
      async () =>
        verifyDpopProof({
          proof: await proof(change),
          method: 'GET',
          url,
          accessToken: grant,
          expectedJkt: holder.jkt,
        }),
      'ERR_DPOP_INVALID',
    );
  });

  it('refuses a proof by another key than the grant names', async () => {
    const other = await generateKeyPair('EdDSA', { extractable: true });
    const wrong = await createDpopProof({
      privateKey: other.privateKey,
      publicJwk: await exportJWK(other.publicKey),
      method: 'GET',
      url,
      accessToken: grant,
    });
    await expectKosError(
      () => verifyDpopProof({ proof: wrong, method: 'GET', url, accessToken: grant, expectedJkt: holder.jkt }),
      'ERR_DPOP_INVALID',
    );
  });

  it('refuses an old proof', async () => {
    const old = await proof();
    await expectKosError(
      () =>
        verifyDpopProof({
          proof: old,
          method: 'GET',
          url,
          accessToken: grant,
          expectedJkt: holder.jkt,
          clock: () => Date.now() + 120_000,
        }),
      'ERR_DPOP_INVALID',
    );
  });
});
