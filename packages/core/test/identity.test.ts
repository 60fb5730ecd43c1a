import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { createCustomIdentity, createJwtIdentity, type IdentitySource, type RequestLike } from '../src/index.js';
import { expectKosError } from './helpers.js';

const ISSUER = 'https://issuer.test';
const AUDIENCE = 'kos-api';

function request(token?: string, extra: Record<string, string> = {}): RequestLike {
  return {
    method: 'GET',
    url: '/records/1',
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...extra },
  };
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

describe('identity from a verified JWT', () => {
  let privateKey: CryptoKey;
  let publicKey: CryptoKey;
  let identity: IdentitySource;

  async function token(
    claims: Record<string, unknown> = {},
    options: { exp?: string | number; iss?: string; aud?: string } = {},
  ) {
    const jwt = new SignJWT({ trust_score: 72, ...claims })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setIssuer(options.iss ?? ISSUER)
      .setAudience(options.aud ?? AUDIENCE)
      .setSubject('client-7')
      .setIssuedAt();
    if (options.exp !== undefined) jwt.setExpirationTime(options.exp);
    else jwt.setExpirationTime('5m');
    return jwt.sign(privateKey);
  }

  beforeAll(async () => {
    ({ privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true }));
    identity = createJwtIdentity({ key: publicKey, algorithms: ['EdDSA'], issuer: ISSUER, audience: AUDIENCE });
  });

  it('reads client id and score from a valid token', async () => {
    expect(await identity.identify(request(await token()))).toMatchObject({ clientId: 'client-7', score: 72 });
  });

  it('ignores a score sent in a header or the query string', async () => {
    const req = { ...request(await token({ trust_score: 30 }), { 'x-trust-score': '99' }), url: '/records/1?score=99' };
    expect((await identity.identify(req)).score).toBe(30);
  });

  it('requires a bearer token', async () => {
    await expectKosError(() => identity.identify(request()), 'ERR_UNAUTHENTICATED');
    await expectKosError(
      () => identity.identify({ ...request(), headers: { authorization: 'Basic abc' } }),
      'ERR_UNAUTHENTICATED',
    );
  });

  it('refuses an expired token with its own code', async () => {
    await expectKosError(
      async () => identity.identify(request(await token({}, { exp: Math.floor(Date.now() / 1000) - 60 }))),
      'ERR_TOKEN_EXPIRED',
    );
  });

  it('remembers a verified token only until it expires', async () => {
    const strict = createJwtIdentity({
      key: publicKey,
      algorithms: ['EdDSA'],
      issuer: ISSUER,
      audience: AUDIENCE,
      clockToleranceSeconds: 0,
    });
    const exp = Math.floor(Date.now() / 1000) + 1;
    const shortLived = await token({}, { exp });
    expect((await strict.identify(request(shortLived))).clientId).toBe('client-7');
    expect((await strict.identify(request(shortLived))).clientId).toBe('client-7');
    expect(strict.peek?.(request(shortLived))?.clientId).toBe('client-7');
    await new Promise((resolve) => setTimeout(resolve, exp * 1000 - Date.now() + 50));
    expect(strict.peek?.(request(shortLived))).toBeUndefined();
    await expectKosError(() => strict.identify(request(shortLived)), 'ERR_TOKEN_EXPIRED');
  });

  it('peek answers only for a token it verified and remembers, and never throws', async () => {
    const fresh = createJwtIdentity({ key: publicKey, algorithms: ['EdDSA'], issuer: ISSUER, audience: AUDIENCE });
    const jwt = await token();
    expect(fresh.peek?.(request(jwt))).toBeUndefined();
    const verified = await fresh.identify(request(jwt));
    expect(fresh.peek?.(request(jwt))).toBe(verified);
    expect(fresh.peek?.(request())).toBeUndefined();
    expect(fresh.peek?.({ ...request(), headers: { authorization: ['Bearer a', 'Bearer b'] } })).toBeUndefined();
    expect(fresh.peek?.(request(`${jwt}x`))).toBeUndefined();
    const forgetful = createJwtIdentity({
      key: publicKey,
      algorithms: ['EdDSA'],
      issuer: ISSUER,
      audience: AUDIENCE,
      cacheSeconds: 0,
    });
    await forgetful.identify(request(jwt));
    expect(forgetful.peek?.(request(jwt))).toBeUndefined();
  });

  it('refuses a token without an expiry', async () => {
    const noExp = await new SignJWT({ trust_score: 90 })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('client-7')
      .setIssuedAt()
      .sign(privateKey);
    await expectKosError(() => identity.identify(request(noExp)), 'ERR_TOKEN_INVALID');
  });

  it.each([
    ['another issuer', { iss: 'https://evil.test' }],
    ['another audience', { aud: 'other-api' }],
  ])('refuses a token from %s', async (_what, options) => {
    await expectKosError(async () => identity.identify(request(await token({}, options))), 'ERR_TOKEN_INVALID');
  });

  it('refuses a token signed by another key', async () => {
    const other = await generateKeyPair('EdDSA');
    const forged = await new SignJWT({ trust_score: 99 })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('client-7')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(other.privateKey);
    await expectKosError(() => identity.identify(request(forged)), 'ERR_TOKEN_INVALID');
  });

  it('refuses alg none', async () => {
    const payload = { sub: 'client-7', iss: ISSUER, aud: AUDIENCE, trust_score: 99, iat: 1, exp: 4_000_000_000 };
    await expectKosError(
      () => identity.identify(request(`${b64url({ alg: 'none' })}.${b64url(payload)}.`)),
      'ERR_TOKEN_INVALID',
    );
  });

  it('refuses HS256 signed with the public key as the secret', async () => {
    const jwk = await exportJWK(publicKey);
    const secret = new TextEncoder().encode(JSON.stringify(jwk));
    const confused = await new SignJWT({ trust_score: 99 })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('client-7')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(secret);
    await expectKosError(() => identity.identify(request(confused)), 'ERR_TOKEN_INVALID');
  });

  it.each([
    ['missing', { trust_score: undefined }, 'ERR_TOKEN_INVALID'],
    ['a string', { trust_score: '95' }, 'ERR_SCORE_INVALID'],
    ['above 100', { trust_score: 101 }, 'ERR_SCORE_INVALID'],
    ['negative', { trust_score: -5 }, 'ERR_SCORE_INVALID'],
  ] as const)('fails closed when the score is %s', async (_what, claims, code) => {
    await expectKosError(async () => identity.identify(request(await token(claims))), code);
  });

  it.each([
    ['no algorithms', { algorithms: [] }],
    ['alg none allowed', { algorithms: ['none'] }],
    ['no issuer', { issuer: '' }],
    ['no audience', { audience: '' }],
  ])('refuses options with %s', async (_what, change) => {
    await expectKosError(
      () => createJwtIdentity({ key: publicKey, algorithms: ['EdDSA'], issuer: ISSUER, audience: AUDIENCE, ...change }),
      'ERR_INVALID_OPTIONS',
    );
  });
});

describe('identity from an app-supplied function', () => {
  it('validates what the function returns', async () => {
    const ok = createCustomIdentity(async () => ({ clientId: 'svc-1', score: 85 }));
    expect(await ok.identify(request())).toMatchObject({ clientId: 'svc-1', score: 85 });
    await expectKosError(() => createCustomIdentity(async () => undefined).identify(request()), 'ERR_UNAUTHENTICATED');
    await expectKosError(
      () => createCustomIdentity(async () => ({ clientId: 'svc-1', score: Number.NaN })).identify(request()),
      'ERR_SCORE_INVALID',
    );
    await expectKosError(
      () => createCustomIdentity(async () => ({ clientId: '../x', score: 50 })).identify(request()),
      'ERR_TOKEN_INVALID',
    );
  });
});
