/**
 * Fuzzing the token parsers (issue 5, item 4; DESIGN invariants 11–12): share grants and
 * service tokens at a KMS node (`createTokenVerifier`), DPoP proofs (`verifyDpopProof`) and
 * identity tokens (`createJwtIdentity().identify`).
 *
 * Inputs: arbitrary strings, JWT-shaped strings (base64url JSON header and payload, random
 * signature), and tokens VALIDLY signed with the trusted key whose header and claims are
 * arbitrary (wrong types, missing, huge, nested, negative exp, aud arrays of junk, shr junk).
 * Each call must return well-formed claims / a well-formed identity, or throw a KosError with
 * one of its documented codes; a token whose claims are malformed is never accepted, and no
 * error message echoes the token.
 *
 * Fixed seed and 200 runs per property by default; a long run:
 *
 *   FUZZ_RUNS=20000 npx vitest run tests/fuzz/tokens.fuzz.test.ts
 *   FUZZ_RUNS=20000 FUZZ_SEED=7 npx vitest run tests/fuzz/tokens.fuzz.test.ts
 */
import {
  accessTokenHash,
  createDpopProof,
  createJwtIdentity,
  createTokenIssuer,
  createTokenVerifier,
  dpopTargetUri,
  GRANT_TYP,
  type IdentitySource,
  isValidId,
  jwkThumbprint,
  type KosErrorCode,
  SERVICE_TOKEN_TYP,
  type TokenIssuer,
  type TokenVerifier,
  toBase64url,
  utf8,
  verifyDpopProof,
} from '@kos/core';
import fc from 'fast-check';
import { CompactSign, type CryptoKey, exportJWK, generateKeyPair, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  base64urlBytes,
  base64urlish,
  expectCode,
  fuzzParams,
  fuzzTimeout,
  junkValue,
  nastyString,
  type Outcome,
  preview,
  sometimes,
  typedOutcome,
  validId,
} from './fuzz-support.js';

const ISSUER = 'https://kos.test';
const NODE = 'node-1';
const ID_ISSUER = 'https://idp.test';
const ID_AUDIENCE = 'records-api';
const TOLERANCE = 5;

const GRANT_CODES: readonly KosErrorCode[] = [
  'ERR_GRANT_INVALID',
  'ERR_GRANT_EXPIRED',
  'ERR_GRANT_WRONG_AUDIENCE',
  'ERR_TOKEN_WRONG_TYPE',
];
const SERVICE_CODES: readonly KosErrorCode[] = [
  'ERR_SERVICE_TOKEN_INVALID',
  'ERR_SERVICE_TOKEN_EXPIRED',
  'ERR_TOKEN_WRONG_TYPE',
];
const DPOP_CODES: readonly KosErrorCode[] = ['ERR_DPOP_REQUIRED', 'ERR_DPOP_INVALID'];
const IDENTITY_CODES: readonly KosErrorCode[] = [
  'ERR_UNAUTHENTICATED',
  'ERR_TOKEN_INVALID',
  'ERR_TOKEN_EXPIRED',
  'ERR_SCORE_INVALID',
];

const now = () => Math.floor(Date.now() / 1000);

/**
 * Signs any payload as a JWS (jose's SignJWT refuses malformed registered claims, and an
 * attacker's signer would not): the payload is JSON of whatever value is given.
 */
function signRaw(payload: unknown, header: Record<string, unknown>, key: CryptoKey): Promise<string> {
  return new CompactSign(utf8(JSON.stringify(payload) ?? 'null'))
    .setProtectedHeader(header as { alg: string })
    .sign(key);
}
const b64json = (value: unknown) => toBase64url(utf8(JSON.stringify(value) ?? 'null'));
const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' &&
  value !== null &&
  !Array.isArray(value) &&
  Object.getPrototypeOf(value) === Object.prototype;
const finite = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value);

/** A well-formed grant, as DESIGN invariant 12 and `GrantClaims` describe it (independent of the verifier). */
function grantProblems(claims: Record<string, unknown>): string[] {
  const problems: string[] = [];
  if (claims.iss !== ISSUER) problems.push('iss');
  const aud = claims.aud;
  if (!Array.isArray(aud) || aud.length === 0 || !aud.every((a) => typeof a === 'string' && a.length > 0)) {
    problems.push('aud must be a list of node ids');
  } else if (!aud.includes(NODE)) problems.push('aud must name this node');
  if (!isValidId(claims.sub)) problems.push('sub');
  if (!finite(claims.iat) || !finite(claims.exp)) problems.push('iat/exp');
  else {
    if (claims.exp - claims.iat > 60) problems.push('lifetime > 60 s');
    if (claims.exp <= now() - TOLERANCE - 1) problems.push('expired');
  }
  if (typeof claims.jti !== 'string' || claims.jti.length < 16) problems.push('jti');
  if (!isValidId(claims.key)) problems.push('key');
  if (!Number.isInteger(claims.ver) || (claims.ver as number) < 1 || (claims.ver as number) > 0xffff_ffff) {
    problems.push('ver must be a key version (1 to 2^32-1)');
  }
  if (!isValidId(claims.set)) problems.push('set');
  const shr = claims.shr;
  if (!isPlainObject(shr) || Object.keys(shr).length === 0) problems.push('shr must be a non-empty map');
  else if (!Object.entries(shr).every(([node, share]) => isValidId(node) && isValidId(share)))
    problems.push('shr entries');
  const cnf = claims.cnf;
  if (
    cnf !== undefined &&
    !(isPlainObject(cnf) && typeof cnf.jkt === 'string' && /^[A-Za-z0-9_-]{43}$/.test(cnf.jkt))
  ) {
    problems.push('cnf.jkt must be a SHA-256 JWK thumbprint');
  }
  return problems;
}

function serviceProblems(claims: Record<string, unknown>): string[] {
  const problems: string[] = [];
  if (claims.iss !== ISSUER) problems.push('iss');
  const aud = claims.aud;
  const auds = Array.isArray(aud) ? aud : [aud];
  if (!auds.every((a) => typeof a === 'string' && a.length > 0)) problems.push('aud must be node ids');
  else if (!auds.includes(NODE)) problems.push('aud must name this node');
  if (!isValidId(claims.sub)) problems.push('sub');
  if (!finite(claims.iat) || !finite(claims.exp)) problems.push('iat/exp');
  else if (claims.exp - claims.iat > 300) problems.push('lifetime > 300 s');
  if (typeof claims.jti !== 'string' || claims.jti.length < 16) problems.push('jti');
  return problems;
}

/** No error message may echo a token (or a large piece of one). */
function assertNoEcho(outcome: Outcome<unknown>, token: string, context: string): void {
  if (outcome.ok) return;
  for (const part of token.split('.')) {
    if (part.length >= 12 && outcome.error.message.includes(part)) {
      throw new Error(`${context}: error message echoes the token: ${outcome.error.message}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/** A claim: right value (weighted), a plausible wrong value, junk, or absent (`undefined`). */
function claim<T>(right: fc.Arbitrary<T>, wrong: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  return fc.oneof(
    { arbitrary: right, weight: 6 },
    { arbitrary: wrong, weight: 2 },
    { arbitrary: junkValue, weight: 1 },
    { arbitrary: fc.constant(undefined), weight: 1 },
  );
}

const timeOffset = fc.oneof(
  fc.integer({ min: -10, max: 10 }),
  fc.constantFrom(-3600, 61, 300, 301, 10 ** 9, -(10 ** 10), 2 ** 53),
);

/** Times relative to now: sane mostly, then negative, far future, fractional, strings, huge. */
const times = fc.record({
  iat: claim(
    timeOffset.map((offset) => now() + offset),
    fc.constantFrom(-1, 0, 1.5, '0', Number.MAX_VALUE),
  ),
  lifetime: fc.oneof(fc.integer({ min: -5, max: 70 }), fc.constantFrom(299, 300, 301, 10 ** 8)),
  exp: sometimes(fc.oneof(fc.constantFrom(-1, 0, '9999999999', 1e300, null), junkValue), 8),
});

/** Removes the claim. */
const DROP = Symbol('drop');

interface ClaimSpec {
  /** Well-formed values. */
  readonly right: fc.Arbitrary<unknown>;
  /** Plausible wrong values (junk values and dropping the claim are added to these). */
  readonly wrong: fc.Arbitrary<unknown>;
}

/** Wrong times: expired, not yet issued, too long-lived, negative, fractional, not numbers. */
const wrongTime = fc.oneof(
  timeOffset.map((offset) => now() + offset),
  fc.constantFrom(-1, 0, 1.5, -1e300, 1e300, Number.MAX_VALUE, '0', `${now()}`, null, [now()]),
);

/**
 * A validly shaped token body, then up to three claims replaced by a wrong value, junk, or
 * removed, plus junk extra claims: most inputs are one or two steps away from acceptance,
 * which is where a lax verifier lets a malformed claim through.
 */
function mutatedClaims(fields: Record<string, ClaimSpec>, extraNames: readonly string[]): fc.Arbitrary<SignedClaims> {
  const names = Object.keys(fields);
  const right = fc.record(Object.fromEntries(names.map((name) => [name, (fields[name] as ClaimSpec).right])));
  const mutation = fc
    .constantFrom(...names)
    .chain((name) =>
      fc
        .oneof(
          { arbitrary: (fields[name] as ClaimSpec).wrong, weight: 3 },
          { arbitrary: junkValue, weight: 1 },
          { arbitrary: fc.constant(DROP), weight: 1 },
        )
        .map((value) => [name, value] as const),
    );
  return fc
    .record({
      header: fc.oneof({ arbitrary: fc.constant({}), weight: 3 }, { arbitrary: headerExtras, weight: 1 }),
      iatOffset: fc.integer({ min: -4, max: 2 }),
      lifetime: fc.integer({ min: 1, max: 60 }),
      right,
      mutations: fc.uniqueArray(mutation, { selector: ([name]) => name, maxLength: 3 }),
      extra: fc.dictionary(fc.constantFrom(...extraNames), junkValue, { maxKeys: 2 }),
    })
    .map(({ header, iatOffset, lifetime, right: values, mutations, extra }) => {
      const claims: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(extra)) {
        // defineProperty: an own "__proto__" claim, as JSON.parse would make it.
        Object.defineProperty(claims, key, { value, enumerable: true, writable: true, configurable: true });
      }
      const iat = now() + iatOffset;
      Object.assign(claims, values, { iat, exp: iat + lifetime });
      for (const [name, value] of mutations) {
        if (value === DROP) delete claims[name];
        else claims[name] = value;
      }
      return { header, claims };
    });
}

const audienceSpec = (others: readonly string[]): ClaimSpec => ({
  right: fc.oneof(
    fc.constant([NODE]),
    fc.shuffledSubarray([NODE, ...others], { minLength: 1 }).filter((a) => a.includes(NODE)),
  ),
  wrong: fc.oneof(
    fc.array(fc.oneof(fc.constant(NODE), junkValue, validId), { minLength: 1, maxLength: 4 }),
    fc.constantFrom(NODE, 'node-2', '', [], ['node-2'], [NODE.toUpperCase()], `${NODE} `, [NODE, NODE]),
  ),
});

const jtiSpec: ClaimSpec = {
  right: base64urlBytes(24, 12),
  wrong: fc.oneof(fc.string({ maxLength: 15 }), fc.integer(), fc.string({ minLength: 2000, maxLength: 4000 })),
};

const timeSpec: ClaimSpec = { right: fc.constant(undefined), wrong: wrongTime };

const GRANT_FIELDS: Record<string, ClaimSpec> = {
  iss: {
    right: fc.constant(ISSUER),
    wrong: fc.constantFrom('https://evil.test', `${ISSUER}/`, '', ISSUER.toUpperCase()),
  },
  aud: audienceSpec(['node-2', 'node-3']),
  sub: { right: validId, wrong: fc.oneof(nastyString, fc.constantFrom('../c', '', 'a'.repeat(129), 7)) },
  iat: timeSpec,
  exp: timeSpec,
  jti: jtiSpec,
  key: { right: validId, wrong: fc.oneof(nastyString, fc.constantFrom('..', '', 'k/1', 1)) },
  ver: {
    right: fc.integer({ min: 1, max: 5 }),
    wrong: fc.constantFrom(0, -1, 1.5, '1', 2 ** 32, 2 ** 53, 1e300, 0xffff_ffff, null, [1]),
  },
  set: { right: validId, wrong: fc.oneof(nastyString, fc.constantFrom('', '.hidden', ['s'])) },
  shr: {
    right: fc.dictionary(validId, validId, { minKeys: 1, maxKeys: 4 }).map((shr) => ({ ...shr, [NODE]: 'set1.1' })),
    wrong: fc.oneof(
      fc.array(validId, { maxLength: 3 }),
      fc.constantFrom({}, [], 'set1.1', { [NODE]: 42 }, { [NODE]: '../x' }, { '': 'a' }, { [NODE]: { nested: 'x' } }),
      fc.dictionary(nastyString, junkValue, { maxKeys: 3 }),
    ),
  },
  cnf: {
    right: fc.oneof(
      fc.constant(undefined),
      base64urlBytes(32, 32).map((jkt) => ({ jkt })),
    ),
    wrong: fc.oneof(
      fc.constantFrom({}, { jkt: '' }, { jkt: 42 }, { jwk: {} }, [], 'jkt', null, { jkt: 'x'.repeat(4000) }),
      fc.record({ jkt: junkValue }),
    ),
  },
};

const SERVICE_FIELDS: Record<string, ClaimSpec> = {
  iss: GRANT_FIELDS.iss as ClaimSpec,
  aud: {
    right: fc.constant(NODE),
    wrong: fc.oneof(
      fc.array(fc.oneof(fc.constant(NODE), junkValue), { minLength: 1, maxLength: 3 }),
      fc.constantFrom('node-2', '', [NODE], [NODE, 'node-2'], null),
    ),
  },
  sub: { right: fc.constant('kos'), wrong: fc.oneof(nastyString, validId) },
  iat: timeSpec,
  exp: timeSpec,
  jti: jtiSpec,
};

/** Header of a validly signed token: typ right or wrong, extra junk parameters. */
const headerExtras = fc.record(
  {
    typ: fc.oneof(
      fc.constantFrom(
        GRANT_TYP,
        SERVICE_TOKEN_TYP,
        'JWT',
        'application/kos-grant+jwt',
        'KOS-GRANT+JWT',
        'dpop+jwt',
        '',
      ),
      nastyString,
    ),
    kid: fc.oneof(nastyString, fc.constant('kos-1')),
    jku: fc.constantFrom('https://evil.test/jwks'),
    x5u: fc.constantFrom('https://evil.test/cert'),
    cty: fc.constantFrom('JWT', 'json'),
  },
  { requiredKeys: [] },
);

interface SignedClaims {
  readonly header: Record<string, unknown>;
  readonly claims: Record<string, unknown>;
}

function grantClaims(): fc.Arbitrary<SignedClaims> {
  return mutatedClaims(GRANT_FIELDS, ['nbf', 'scope', '__proto__', 'nested', 'trust_score', 'typ']);
}

function serviceClaims(): fc.Arbitrary<SignedClaims> {
  return mutatedClaims(SERVICE_FIELDS, ['nbf', 'shr', '__proto__', 'key', 'cnf']);
}

/** Claims for an identity token (times as in `times`). */
function build(
  t: { iat: unknown; lifetime: number; exp: unknown },
  named: Record<string, unknown>,
): Record<string, unknown> {
  const claims: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(named)) if (value !== undefined) claims[key] = value;
  if (t.iat !== undefined) claims.iat = t.iat;
  const exp = t.exp ?? (typeof t.iat === 'number' ? t.iat + t.lifetime : now() + t.lifetime);
  if (exp !== undefined) claims.exp = exp;
  return claims;
}

/** JWT-shaped strings: JSON (or not) header and payload, random or empty signature. */
const jwtShaped = fc
  .tuple(
    fc.oneof(
      fc
        .record(
          {
            alg: fc.oneof(fc.constantFrom('EdDSA', 'ES256', 'none', 'HS256', 'RS256', 'NONE', ''), junkValue),
            typ: fc.oneof(fc.constantFrom(GRANT_TYP, SERVICE_TOKEN_TYP), junkValue),
            crit: fc.oneof(fc.constant(['b64']), junkValue),
            b64: fc.boolean(),
            jwk: junkValue,
            kid: junkValue,
          },
          { requiredKeys: ['alg'] },
        )
        .map(b64json),
      junkValue.map(b64json),
      base64urlish(40),
    ),
    fc.oneof(junkValue.map(b64json), base64urlish(80)),
    fc.oneof(base64urlBytes(64), base64urlish(90), fc.constant('')),
    fc.constantFrom('.', '..', '.'),
  )
  .map(([header, payload, signature, dot]) => [header, payload, signature].join(dot));

const arbitraryToken = fc.oneof(
  fc.string(),
  nastyString,
  base64urlish(200),
  fc.string({ minLength: 8000, maxLength: 9000 }),
  fc.constantFrom('', '.', '..', 'a.b.c', 'a.b.c.d.e', 'eyJ.eyJ.'),
  jwtShaped,
);

const runTimeout = fuzzTimeout(20_000);

describe('fuzz: tokens', () => {
  let signingKey: CryptoKey;
  let attackerKey: CryptoKey;
  let es256Key: CryptoKey;
  let verifier: TokenVerifier;
  let issuer: TokenIssuer;

  beforeAll(async () => {
    const pair = await generateKeyPair('EdDSA');
    signingKey = pair.privateKey;
    attackerKey = (await generateKeyPair('EdDSA')).privateKey;
    es256Key = (await generateKeyPair('ES256')).privateKey;
    verifier = createTokenVerifier({ nodeId: NODE, issuer: ISSUER, keys: pair.publicKey });
    issuer = createTokenIssuer({ issuer: ISSUER, privateKey: signingKey });
  });

  async function sign(
    { header, claims }: SignedClaims,
    key: 'trusted' | 'attacker' | 'es256',
    typ: string,
  ): Promise<string> {
    const alg = key === 'es256' ? 'ES256' : 'EdDSA';
    const protectedHeader = { typ, ...header, alg };
    return signRaw(
      claims,
      protectedHeader,
      key === 'trusted' ? signingKey : key === 'attacker' ? attackerKey : es256Key,
    );
  }

  /** verifyGrant: well-formed claims or a grant code; never a malformed grant. */
  async function checkGrant(token: string, context: string, signedClaims?: Record<string, unknown>): Promise<boolean> {
    const outcome = await typedOutcome(() => verifier.verifyGrant(token), 5_000, `verifyGrant(${context})`);
    assertNoEcho(outcome, token, context);
    if (!outcome.ok) {
      expectCode(outcome.code, GRANT_CODES, `verifyGrant(${context})`);
      return false;
    }
    const returned = outcome.value as unknown as Record<string, unknown>;
    const problems = grantProblems(returned);
    if (problems.length > 0) {
      throw new Error(`verifyGrant ACCEPTED a malformed grant (${problems.join('; ')}): ${preview(returned, 400)}`);
    }
    if (signedClaims && (returned.sub !== signedClaims.sub || returned.jti !== signedClaims.jti)) {
      throw new Error(`verifyGrant returned claims other than the signed ones: ${preview(returned)}`);
    }
    return true;
  }

  async function checkService(token: string, context: string): Promise<boolean> {
    const outcome = await typedOutcome(
      () => verifier.verifyServiceToken(token),
      5_000,
      `verifyServiceToken(${context})`,
    );
    assertNoEcho(outcome, token, context);
    if (!outcome.ok) {
      expectCode(outcome.code, SERVICE_CODES, `verifyServiceToken(${context})`);
      return false;
    }
    const problems = serviceProblems(outcome.value as unknown as Record<string, unknown>);
    if (problems.length > 0) {
      throw new Error(
        `verifyServiceToken ACCEPTED a malformed token (${problems.join('; ')}): ${preview(outcome.value, 400)}`,
      );
    }
    return true;
  }

  it(
    'arbitrary and JWT-shaped strings are refused by both verifiers with their codes',
    async () => {
      await fc.assert(
        fc.asyncProperty(arbitraryToken, async (token) => {
          const context = preview(token, 160);
          const grant = await typedOutcome(() => verifier.verifyGrant(token), 5_000, `verifyGrant(${context})`);
          const service = await typedOutcome(
            () => verifier.verifyServiceToken(token),
            5_000,
            `verifyService(${context})`,
          );
          if (grant.ok || service.ok) throw new Error(`an unsigned or randomly signed token was accepted: ${context}`);
          expectCode(grant.code, GRANT_CODES, `verifyGrant(${context})`);
          expectCode(service.code, SERVICE_CODES, `verifyServiceToken(${context})`);
          assertNoEcho(grant, token, context);
          assertNoEcho(service, token, context);
        }),
        fuzzParams(),
      );
    },
    runTimeout,
  );

  it(
    'validly signed grants with arbitrary claims: accepted only when the claims are well-formed',
    async () => {
      let accepted = 0;
      await fc.assert(
        fc.asyncProperty(grantClaims(), async (signed) => {
          const typ = typeof signed.header.typ === 'string' ? signed.header.typ : GRANT_TYP;
          const token = await sign(signed, 'trusted', typ);
          if (await checkGrant(token, `grant ${preview(signed, 300)}`, signed.claims)) accepted++;
          // The same claims as a service token: typ decides, claims must still be well-formed.
          await checkService(token, `grant-as-service ${preview(signed, 300)}`);
        }),
        fuzzParams(),
      );
      // Not vacuous: some of the mutated grants are well-formed and accepted.
      expect(accepted).toBeGreaterThan(0);
    },
    runTimeout,
  );

  it(
    'validly signed service tokens with arbitrary claims: accepted only when the claims are well-formed',
    async () => {
      let accepted = 0;
      await fc.assert(
        fc.asyncProperty(serviceClaims(), async (signed) => {
          const typ = typeof signed.header.typ === 'string' ? signed.header.typ : SERVICE_TOKEN_TYP;
          const token = await sign(signed, 'trusted', typ);
          if (await checkService(token, `service ${preview(signed, 300)}`)) accepted++;
          await checkGrant(token, `service-as-grant ${preview(signed, 300)}`);
        }),
        fuzzParams(),
      );
      expect(accepted).toBeGreaterThan(0);
    },
    runTimeout,
  );

  it(
    'tokens signed with any other key (another Ed25519 key, ES256) are never accepted',
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(grantClaims(), serviceClaims()),
          fc.constantFrom<'attacker' | 'es256'>('attacker', 'es256'),
          async (signed, key) => {
            const token = await sign(signed, key, GRANT_TYP);
            const grant = await typedOutcome(() => verifier.verifyGrant(token));
            const service = await typedOutcome(() => verifier.verifyServiceToken(token));
            if (grant.ok || service.ok) throw new Error(`a token signed with the ${key} key was accepted`);
            expectCode(grant.code, GRANT_CODES, 'verifyGrant');
            expectCode(service.code, SERVICE_CODES, 'verifyServiceToken');
          },
        ),
        fuzzParams(0.5),
      );
    },
    runTimeout,
  );

  it(
    'validly signed tokens whose payload is not a claims object (array, string, number, null) are refused',
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            junkValue.filter((value) => !isPlainObject(value)),
            fc.array(junkValue, { maxLength: 3 }),
          ),
          fc.constantFrom(GRANT_TYP, SERVICE_TOKEN_TYP),
          async (payload, typ) => {
            const token = await signRaw(payload, { alg: 'EdDSA', typ }, signingKey);
            const grant = await typedOutcome(() => verifier.verifyGrant(token));
            const service = await typedOutcome(() => verifier.verifyServiceToken(token));
            if (grant.ok || service.ok) throw new Error(`a token with payload ${preview(payload)} was accepted`);
            expectCode(grant.code, GRANT_CODES, 'verifyGrant');
            expectCode(service.code, SERVICE_CODES, 'verifyServiceToken');
          },
        ),
        fuzzParams(0.5),
      );
    },
    runTimeout,
  );

  it('real grants and service tokens from the issuer are accepted (the properties are not vacuous)', async () => {
    const grant = await issuer.issueGrant({
      clientId: 'client-1',
      kid: 'orders',
      version: 2,
      setId: 'set1',
      shares: { [NODE]: 'set1.1', 'node-2': 'set1.2' },
    });
    await checkGrant(grant.token, 'issued grant');
    expect((await verifier.verifyGrant(grant.token)).shr[NODE]).toBe('set1.1');
    await checkService((await issuer.issueServiceToken(NODE)).token, 'issued service token');
  });

  describe('regressions (shrunk counterexamples kept as named cases)', () => {
    const base = () => ({
      iss: ISSUER,
      aud: [NODE],
      sub: 'client-1',
      iat: now(),
      exp: now() + 30,
      jti: 'AAAAAAAAAAAAAAAAAAAAAA',
      key: 'orders',
      ver: 1,
      set: 'set1',
      shr: { [NODE]: 'set1.1' },
    });

    it.each([
      ['aud with non-string entries', { aud: [NODE, 0] }],
      ['shr that is an array', { shr: ['set1.1'] }],
      ['shr that is empty', { shr: {} }],
      ['ver beyond 2^32-1', { ver: 2 ** 32 }],
      ['cnf.jkt that is not a thumbprint', { cnf: { jkt: '' } }],
    ] as const)('verifyGrant refuses a validly signed grant with %s', async (_what, change) => {
      const token = await sign({ header: {}, claims: { ...base(), ...change } }, 'trusted', GRANT_TYP);
      const outcome = await typedOutcome(() => verifier.verifyGrant(token));
      expect(outcome.ok ? 'accepted' : outcome.code).toBe('ERR_GRANT_INVALID');
    });

    it('verifyServiceToken refuses a validly signed service token whose aud holds junk', async () => {
      const { iss, iat, exp, jti: id } = base();
      const token = await sign(
        { header: {}, claims: { iss, sub: 'kos', iat, exp, jti: id, aud: [NODE, null] } },
        'trusted',
        SERVICE_TOKEN_TYP,
      );
      const outcome = await typedOutcome(() => verifier.verifyServiceToken(token));
      expect(outcome.ok ? 'accepted' : outcome.code).toBe('ERR_SERVICE_TOKEN_INVALID');
    });
  });
});

describe('fuzz: DPoP proofs', () => {
  let holder: { privateKey: CryptoKey; publicJwk: JWK; jkt: string };
  let other: { privateKey: CryptoKey; publicJwk: JWK };
  const url = 'https://kms.test/node-1/v1/shares/set1.1';
  const grant = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjIn0.c2ln';

  beforeAll(async () => {
    const pair = await generateKeyPair('EdDSA', { extractable: true });
    const publicJwk = await exportJWK(pair.publicKey);
    holder = { privateKey: pair.privateKey, publicJwk, jkt: await jwkThumbprint(publicJwk) };
    const second = await generateKeyPair('ES256', { extractable: true });
    other = { privateKey: second.privateKey, publicJwk: await exportJWK(second.publicKey) };
  });

  /** A proof signed by the holder (or another key) with arbitrary header parameters and claims. */
  interface ProofShape {
    signer: 'holder' | 'other';
    typ: unknown;
    jwk: string;
    htm: unknown;
    htu: unknown;
    ath: unknown;
    iat: unknown;
    jti: unknown;
  }

  /** A proof signed by the holder, then up to three parts made wrong (or junk, or removed). */
  const signedProof = (): fc.Arbitrary<ProofShape> => {
    const wrongs: Record<keyof ProofShape, fc.Arbitrary<unknown>> = {
      signer: fc.constant('other'),
      typ: fc.oneof(fc.constantFrom('JWT', 'DPOP+JWT', 'application/dpop+jwt', GRANT_TYP, undefined), junkValue),
      jwk: fc.constantFrom('other', 'private', 'junk', 'none'),
      htm: fc.oneof(fc.constantFrom('get', 'POST', 'GET ', '', undefined), junkValue),
      htu: fc.oneof(
        fc.constantFrom(`${url}?x=1`, `${url}/`, url.toUpperCase(), 'https://kms.test/node-2/v1/shares/set1.1', ''),
        junkValue,
      ),
      ath: fc.oneof(base64urlBytes(32, 32), fc.constantFrom('', accessTokenHash(`${grant}x`), undefined), junkValue),
      iat: fc.oneof(wrongTime, fc.constant(undefined)),
      jti: fc.oneof(fc.string({ maxLength: 15 }), fc.integer(), fc.constant(undefined), junkValue),
    };
    const names = Object.keys(wrongs) as (keyof ProofShape)[];
    const mutation = fc.constantFrom(...names).chain((name) => wrongs[name].map((value) => [name, value] as const));
    return fc
      .record({
        iatOffset: fc.integer({ min: -4, max: 2 }),
        jti: base64urlBytes(24, 12),
        mutations: fc.uniqueArray(mutation, { selector: ([name]) => name, maxLength: 3 }),
      })
      .map(({ iatOffset, jti: id, mutations }) => {
        const proof: ProofShape = {
          signer: 'holder',
          typ: 'dpop+jwt',
          jwk: 'own',
          htm: 'GET',
          htu: url,
          ath: accessTokenHash(grant),
          iat: now() + iatOffset,
          jti: id,
        };
        for (const [name, value] of mutations) (proof as unknown as Record<string, unknown>)[name] = value;
        return proof;
      });
  };

  /** Whether RFC 9449 §4.3 says the proof is good for GET `url` with `grant`, holder key. */
  function proofIsGood(proof: ProofShape): boolean {
    const typ = typeof proof.typ === 'string' ? proof.typ.toLowerCase().replace(/^application\//, '') : undefined;
    const age = typeof proof.iat === 'number' ? now() - proof.iat : Number.NaN;
    return (
      proof.signer === 'holder' &&
      proof.jwk === 'own' &&
      typ === 'dpop+jwt' &&
      proof.htm === 'GET' &&
      proof.htu === dpopTargetUri(url) &&
      proof.ath === accessTokenHash(grant) &&
      typeof proof.jti === 'string' &&
      proof.jti.length >= 16 &&
      age >= -6 &&
      age <= 66
    );
  }

  async function signProof(proof: ProofShape): Promise<string> {
    const { signer, typ, jwk, ...claims } = proof;
    const key = signer === 'holder' ? holder : other;
    const embedded =
      jwk === 'own'
        ? key.publicJwk
        : jwk === 'other'
          ? (signer === 'holder' ? other : holder).publicJwk
          : jwk === 'private'
            ? { ...key.publicJwk, d: 'AAAA' }
            : jwk === 'junk'
              ? { kty: 'OKP', crv: 'Ed25519', x: 'AAAA' }
              : undefined;
    const body: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(claims)) if (value !== undefined) body[name] = value;
    return signRaw(
      body,
      {
        alg: signer === 'holder' ? 'EdDSA' : 'ES256',
        ...(typeof typ === 'string' ? { typ } : {}),
        ...(embedded ? { jwk: embedded } : {}),
      },
      key.privateKey,
    );
  }

  async function checkProof(proof: string | undefined, method: string, target: string, context: string) {
    const outcome = await typedOutcome(
      () => verifyDpopProof({ proof, method, url: target, accessToken: grant, expectedJkt: holder.jkt }),
      5_000,
      `verifyDpopProof(${context})`,
    );
    if (!outcome.ok) {
      expectCode(outcome.code, DPOP_CODES, `verifyDpopProof(${context})`);
      return outcome;
    }
    if (typeof outcome.value.jti !== 'string' || outcome.value.jti.length < 16) {
      throw new Error(`${context}: accepted a proof without a usable jti`);
    }
    return outcome;
  }

  it(
    'arbitrary and JWT-shaped proofs are refused with a DPoP code',
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.oneof(arbitraryToken, fc.constant(undefined)), async (proof) => {
          const outcome = await checkProof(proof, 'GET', url, preview(proof, 160));
          if (outcome.ok) throw new Error(`a junk proof was accepted: ${preview(proof)}`);
        }),
        fuzzParams(),
      );
    },
    runTimeout,
  );

  it(
    'validly signed proofs with arbitrary header and claims: accepted only when everything matches',
    async () => {
      let accepted = 0;
      await fc.assert(
        fc.asyncProperty(signedProof(), async (proof) => {
          const token = await signProof(proof);
          const outcome = await checkProof(token, 'GET', url, preview(proof, 300));
          if (!outcome.ok) return;
          accepted++;
          if (!proofIsGood(proof)) throw new Error(`a mismatching proof was accepted: ${preview(proof, 300)}`);
        }),
        fuzzParams(),
      );
      expect(accepted).toBeGreaterThan(0);
    },
    runTimeout,
  );

  it(
    'a valid proof checked against arbitrary request methods and URLs gives a DPoP code, never a crash',
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(fc.constantFrom('GET', 'get', 'PUT', ''), nastyString),
          fc.oneof(
            fc.constantFrom(
              url,
              `${url}?q=1#f`,
              'https://kms.test',
              '/v1/shares/set1.1',
              'not a url',
              '',
              'http://[::1',
            ),
            nastyString,
            nastyString.map((path) => `https://kms.test/${path}`),
          ),
          async (method, target) => {
            const proof = await createDpopProof({
              privateKey: holder.privateKey,
              publicJwk: holder.publicJwk,
              method: 'GET',
              url,
              accessToken: grant,
            });
            await checkProof(proof, method, target, `method ${preview(method, 40)}, url ${preview(target, 80)}`);
          },
        ),
        fuzzParams(0.5),
      );
    },
    runTimeout,
  );

  describe('regressions (shrunk counterexamples kept as named cases)', () => {
    it('a valid proof checked against a request URL that does not parse gives ERR_DPOP_INVALID', async () => {
      // dpop.ts verifyDpopProof calls dpopTargetUri(check.url) → new URL() after the signature
      // check: an unparsable URL throws a TypeError instead of a DPoP code.
      const proof = await createDpopProof({
        privateKey: holder.privateKey,
        publicJwk: holder.publicJwk,
        method: 'GET',
        url,
        accessToken: grant,
      });
      const outcome = await typedOutcome(() =>
        verifyDpopProof({ proof, method: 'GET', url: 'not a url', accessToken: grant, expectedJkt: holder.jkt }),
      );
      expect(outcome.ok ? 'accepted' : outcome.code).toBe('ERR_DPOP_INVALID');
    });
  });
});

describe('fuzz: identity tokens (createJwtIdentity)', () => {
  let idKey: CryptoKey;
  let identity: IdentitySource;

  beforeAll(async () => {
    const pair = await generateKeyPair('EdDSA');
    idKey = pair.privateKey;
    identity = createJwtIdentity({
      key: pair.publicKey,
      algorithms: ['EdDSA'],
      issuer: ID_ISSUER,
      audience: ID_AUDIENCE,
    });
  });

  /** A returned identity: a valid client id, a finite score in 0–100, a public JWK or none. */
  function identityProblems(value: unknown): string[] {
    const problems: string[] = [];
    const id = value as { clientId?: unknown; score?: unknown; publicJwk?: unknown };
    if (!isValidId(id.clientId)) problems.push('clientId');
    if (!finite(id.score) || id.score < 0 || id.score > 100) problems.push('score');
    const jwk = id.publicJwk as Record<string, unknown> | undefined;
    if (jwk !== undefined && !(isPlainObject(jwk) && typeof jwk.kty === 'string' && jwk.d === undefined)) {
      problems.push('publicJwk');
    }
    return problems;
  }

  const authorizationHeader = fc.oneof(
    fc.constant(undefined),
    fc.string(),
    nastyString,
    arbitraryToken.map((token) => `Bearer ${token}`),
    fc
      .tuple(
        fc.constantFrom('Bearer', 'bearer', 'BEARER', 'Basic', 'DPoP', 'KOS-Service', ''),
        fc.constantFrom(' ', '  ', '\t', ''),
      )
      .chain(([scheme, space]) => base64urlish(120).map((token) => `${scheme}${space}${token}`)),
    fc.array(fc.string(), { maxLength: 3 }),
  );

  it(
    'arbitrary Authorization headers (and spoofed score headers) never identify anyone',
    async () => {
      await fc.assert(
        fc.asyncProperty(
          authorizationHeader,
          fc.dictionary(
            fc.constantFrom('x-trust-score', 'trust_score', 'cookie', 'Authorization'),
            fc.oneof(fc.string(), fc.constant('99')),
          ),
          async (authorization, extra) => {
            const headers = { ...extra, ...(authorization === undefined ? {} : { authorization }) } as Record<
              string,
              string
            >;
            const context = `headers ${preview(headers, 200)}`;
            const outcome = await typedOutcome(
              () => identity.identify({ method: 'GET', url: 'https://app.test/records?trust_score=99', headers }),
              5_000,
              `identify(${context})`,
            );
            if (outcome.ok) throw new Error(`${context}: identified ${preview(outcome.value)} without a signed token`);
            expectCode(outcome.code, IDENTITY_CODES, `identify(${context})`);
          },
        ),
        fuzzParams(),
      );
    },
    runTimeout,
  );

  it(
    'validly signed identity tokens with arbitrary sub / trust_score / cnf: a valid identity or a typed code',
    async () => {
      let identified = 0;
      const scoreValue = fc.oneof(
        fc.integer({ min: 0, max: 100 }),
        fc.double({ min: 0, max: 100, noNaN: true }),
        fc.constantFrom(-0, 49.999, 50, 80, 80.0001, 100, 100.0000001, -1e-9, 101, 1e308, -1e308),
        fc.constantFrom('90', '', null, true, [90], { value: 90 }, '1e2'),
        junkValue,
      );
      await fc.assert(
        fc.asyncProperty(
          fc.record(
            {
              sub: claim(validId, fc.oneof(nastyString, fc.constantFrom('', '../a', 'a'.repeat(129), 42, null))),
              trust_score: scoreValue,
              cnf: fc.oneof(
                fc.constantFrom({ jwk: { kty: 'OKP', crv: 'Ed25519', x: 'AAAA' } }, { jwk: { kty: 'oct', k: 'AAAA' } }),
                fc.constantFrom({ jwk: { kty: 'EC', d: 'x' } }, { jwk: null }, { jwk: [] }, null, 'x', {
                  jwk: { kty: 42 },
                }),
                fc.record({ jwk: junkValue }),
              ),
              iss: claim(fc.constant(ID_ISSUER), fc.constantFrom('https://evil.test', '')),
              aud: claim(fc.constant(ID_AUDIENCE), fc.constantFrom(['x', ID_AUDIENCE], 'other', [])),
              times,
            },
            { requiredKeys: ['sub', 'trust_score', 'iss', 'aud', 'times'] },
          ),
          fc.dictionary(fc.constantFrom('x-trust-score', 'cookie'), fc.constant('100')),
          async ({ times: t, ...named }, spoofed) => {
            const claims = build(t, named);
            const token = await signRaw(claims, { alg: 'EdDSA' }, idKey);
            const context = `claims ${preview(claims, 300)}`;
            const outcome = await typedOutcome(
              () =>
                identity.identify({
                  method: 'GET',
                  url: '/x',
                  headers: { ...spoofed, authorization: `Bearer ${token}` },
                }),
              5_000,
              `identify(${context})`,
            );
            if (!outcome.ok) {
              expectCode(outcome.code, IDENTITY_CODES, `identify(${context})`);
              return;
            }
            const problems = identityProblems(outcome.value);
            if (problems.length > 0) {
              throw new Error(`${context}: malformed identity (${problems.join(', ')}): ${preview(outcome.value)}`);
            }
            if (outcome.value.score !== claims.trust_score || outcome.value.clientId !== claims.sub) {
              throw new Error(`${context}: identity differs from the signed claims: ${preview(outcome.value)}`);
            }
            identified++;
          },
        ),
        fuzzParams(),
      );
      expect(identified).toBeGreaterThan(0);
    },
    runTimeout,
  );
});
