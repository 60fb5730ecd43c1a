/**
 * Fuzzing the KMS node API (issue 5, item 4; DESIGN invariants 10, 12–14): the handler
 * `createKmsHandler` called directly, and the real HTTP server `createKmsNodeServer` on
 * loopback (well-formed HTTP with arbitrary content, and raw bytes on a socket).
 *
 * Requests: arbitrary methods, URLs and paths (encoded traversal, very long, unicode,
 * unparsable), Authorization with random schemes and tokens (and real service tokens,
 * grants, key-bound grants with real or junk DPoP proofs), junk DPoP / Origin headers, bodies
 * of random bytes, JSON of junk shapes and real share bodies.
 * Every answer: a status from the core ERROR_STATUS table or 200/201/204; a JSON body, for
 * errors exactly `{ error: { code, message } }` with a typed code (never ERR_INTERNAL, i.e. an
 * untyped exception) and the status of that code; share bytes only in a 200 to a GET that
 * carried a valid credential for that share; no token echoed. The server never answers 500
 * without a code and survives everything.
 *
 * Fixed seed and 200 runs per property by default; a long run:
 *
 *   FUZZ_RUNS=20000 npx vitest run tests/fuzz/kms-api.fuzz.test.ts
 *   FUZZ_RUNS=5000 FUZZ_SEED=7 npx vitest run tests/fuzz/kms-api.fuzz.test.ts
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { Agent as HttpAgent, request as httpRequest, METHODS } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  accessTokenHash,
  createDpopProof,
  createTokenIssuer,
  createTokenVerifier,
  dpopTargetUri,
  encodeShareBody,
  HEALTH_PATH,
  jwkThumbprint,
  SHARES_PATH,
  type ShareStore,
  type StoredShare,
  type TokenIssuer,
  utf8,
} from '@kos/core';
import {
  createFileMetadataStore,
  createKmsHandler,
  createKmsNodeServer,
  createMemoryMetadataStore,
  createMemoryShareStore,
  type KmsNodeServer,
  type KmsRequest,
  type KmsResponse,
} from '@kos/kms-adapters';
import fc from 'fast-check';
import { CompactSign, type CryptoKey, exportJWK, generateKeyPair, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ALLOWED_STATUSES,
  assertErrorBody,
  assertNoSecret,
  base64urlBytes,
  base64urlish,
  fuzzParams,
  fuzzTimeout,
  junkValue,
  nastyString,
  percentEncode,
  preview,
  secretForms,
  sometimes,
  validId,
  within,
} from './fuzz-support.js';

const ISSUER = 'https://kos.test';
const NODE = 'node-1';
const ORIGIN = 'https://app.test';

/** Seeded shares: three sets, owners, versions. Values are what must never leak. */
const SHARES: readonly StoredShare[] = [
  { shareId: 'setA.1', kid: 'orders', version: 1, setId: 'setA', owner: 'client-a', x: 1 },
  { shareId: 'setA.2', kid: 'orders', version: 1, setId: 'setA', owner: 'client-a', x: 2 },
  { shareId: 'setB.7', kid: 'orders', version: 2, setId: 'setB', owner: 'system', x: 7 },
  { shareId: 'setC.3', kid: 'notes', version: 1, setId: 'setC', owner: 'client-b', x: 3 },
].map((share) => {
  const value = new Uint8Array(33);
  globalThis.crypto.getRandomValues(value);
  value[32] = share.x;
  return { ...share, value };
});

const SHARE_SECRETS = new Map(SHARES.map((share) => [share.shareId, secretForms(share.value)]));

/** What a request carried, so the oracle knows which shares it may be given. */
type Credential =
  | { kind: 'none' }
  | { kind: 'junk' }
  | { kind: 'service' }
  | { kind: 'grant'; shareId: string }
  | { kind: 'bound-grant'; shareId: string; proof: 'valid' | 'junk-jti' | 'wrong' | 'none' };

interface FuzzRequest {
  readonly method: string;
  readonly url: string;
  readonly path: string | undefined;
  /** The path asked for (also when `path` is not handed to the handler). */
  readonly target: string;
  readonly headers: Record<string, string | undefined>;
  readonly body: Uint8Array | undefined;
  readonly credential: Credential;
  /** Token strings sent (must never be echoed). */
  readonly tokens: readonly string[];
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

const shareIdLike = fc.oneof(
  { arbitrary: fc.constantFrom(...SHARES.map((s) => s.shareId)), weight: 4 },
  { arbitrary: validId, weight: 2 },
  {
    arbitrary: fc.constantFrom(
      '..',
      '%2e%2e',
      '%2E%2E%2Fetc%2Fpasswd',
      '..%2F..%2Fshares',
      '%2F',
      'a%2Fb',
      '%00',
      'setA.1%00',
      '%',
      '%zz',
      'setA.1/',
      'setA.1/../setB.7',
      '.hidden',
      '-x',
      '%C0%AE%C0%AE',
      'setA.1?x=1',
      'setA.1#frag',
      'x'.repeat(129),
      'x'.repeat(10_000),
    ),
    weight: 2,
  },
  { arbitrary: nastyString.map(percentEncode), weight: 1 },
  { arbitrary: nastyString, weight: 1 },
);

const pathLike = fc.oneof(
  { arbitrary: shareIdLike.map((id) => `${SHARES_PATH}${id}`), weight: 8 },
  {
    arbitrary: fc.constantFrom(
      HEALTH_PATH,
      `${HEALTH_PATH}/`,
      '/V1/health',
      '/v1/shares',
      '/v1/shares/',
      '/v1/shares//setA.1',
      '//v1/shares/setA.1',
      '/v1/./shares/setA.1',
      '/v1/shares/../health',
      '/',
      '',
      '*',
    ),
    weight: 2,
  },
  { arbitrary: nastyString.map((s) => `/${s}`), weight: 1 },
);

const schemes = fc.constantFrom('Bearer', 'DPoP', 'KOS-Service', 'Basic', 'bearer', 'kos-service', 'Digest', 'X');

const junkAuthorization = fc.oneof(
  fc.string(),
  nastyString,
  fc.tuple(schemes, base64urlish(200)).map(([scheme, token]) => `${scheme} ${token}`),
  fc
    .tuple(schemes, fc.constantFrom('  ', '\t', ' x ', ''), base64urlish(40))
    .map(([scheme, gap, token]) => `${scheme}${gap}${token}`),
  fc
    .tuple(schemes, base64urlBytes(60), base64urlBytes(80), base64urlBytes(64))
    .map(([scheme, a, b, c]) => `${scheme} ${a}.${b}.${c}`),
);

const body = fc.oneof(
  fc.constant(undefined),
  fc.uint8Array({ maxLength: 300 }),
  fc.uint8Array({ minLength: 16 * 1024 - 2, maxLength: 16 * 1024 + 2 }),
  junkValue.map((value) => utf8(JSON.stringify(value) ?? 'null')),
  fc.record({ share: junkValue }).map((value) => utf8(JSON.stringify(value))),
  fc.constantFrom(new Uint8Array([0xff, 0xfe, 0x7b]), utf8('{"share":'), utf8('null'), utf8('[]'), utf8('"x"')),
  // A well-formed share body (for another id, or a different value for a seeded id).
  fc
    .tuple(fc.constantFrom(...SHARES), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.boolean())
    .map(([share, y, sameId]) => {
      const value = new Uint8Array([...y, share.x]);
      const stored = { ...share, shareId: sameId ? share.shareId : `${share.setId}.99`, value };
      return utf8(JSON.stringify({ share: encodeShareBody(stored) }));
    }),
);

const method = fc.oneof(
  { arbitrary: fc.constantFrom('GET', 'PUT', 'DELETE', 'OPTIONS'), weight: 6 },
  { arbitrary: fc.constantFrom('POST', 'HEAD', 'PATCH', 'get', 'TRACE', 'CONNECT', 'PROPFIND', ''), weight: 2 },
  { arbitrary: nastyString, weight: 1 },
);

const credentialChoice = fc.oneof(
  { arbitrary: fc.constant<Credential>({ kind: 'none' }), weight: 1 },
  { arbitrary: fc.constant<Credential>({ kind: 'junk' }), weight: 3 },
  { arbitrary: fc.constant<Credential>({ kind: 'service' }), weight: 2 },
  {
    arbitrary: fc.constantFrom(...SHARES).map((share): Credential => ({ kind: 'grant', shareId: share.shareId })),
    weight: 2,
  },
  {
    arbitrary: fc
      .tuple(
        fc.constantFrom(...SHARES),
        fc.constantFrom('valid', 'valid', 'junk-jti', 'wrong', 'none') as fc.Arbitrary<
          'valid' | 'junk-jti' | 'wrong' | 'none'
        >,
      )
      .map(([share, proof]): Credential => ({ kind: 'bound-grant', shareId: share.shareId, proof })),
    weight: 2,
  },
);

const jtiValue = fc.oneof(
  base64urlBytes(24, 12),
  fc.constantFrom('', 'short'),
  nastyString,
  fc.string({ minLength: 16, maxLength: 64 }),
);

/** Anything: most of these are refused early (route, id, method, authorization). */
const wideShape = fc.record({
  method,
  path: pathLike,
  urlKind: fc.constantFrom('absolute', 'absolute', 'absolute', 'with-query', 'junk'),
  junkUrl: fc.oneof(fc.constantFrom('not a url', '', 'http://[::1', 'https://', 'kms.test/v1/health'), nastyString),
  givePath: fc.boolean(),
  credential: credentialChoice,
  junkAuthorization,
  /** Scheme used with a real token (a wrong one on purpose, sometimes). */
  schemeOverride: sometimes(schemes, 5),
  dpopHeader: sometimes(fc.oneof(fc.string(), base64urlish(300), nastyString), 3),
  origin: sometimes(fc.oneof(fc.constant(ORIGIN), fc.constant('null'), nastyString), 2),
  extraHeaders: fc.dictionary(
    fc.constantFrom('content-type', 'content-length', 'x-forwarded-for', 'host', 'cookie', 'x-trust-score'),
    fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('application/json', '-1', '99999999999', '100')),
    { maxKeys: 3 },
  ),
  body,
  jti: jtiValue,
  matchShare: fc.constant<boolean>(false),
});

/** Close to a legitimate call (a real credential for a real share), one or two things off. */
const nearValidFields = {
  method: fc.oneof({ arbitrary: fc.constant('GET'), weight: 8 }, fc.constantFrom('PUT', 'DELETE', 'OPTIONS', 'HEAD')),
  path: fc.oneof(
    { arbitrary: fc.constantFrom(...SHARES.map((share) => `${SHARES_PATH}${share.shareId}`)), weight: 6 },
    { arbitrary: pathLike, weight: 1 },
  ),
  urlKind: fc.constantFrom('absolute', 'absolute', 'absolute', 'with-query', 'junk'),
  // The URL a mounted node is given comes from the Host header (requestFromNode).
  junkUrl: fc.constantFrom('http://[::1/v1/shares/setA.1', 'http://a b/v1/shares/setA.1', 'http://x:99999/'),
  givePath: fc.boolean(),
  credential: credentialChoice.filter((c) => c.kind !== 'none' && c.kind !== 'junk'),
  junkAuthorization,
  schemeOverride: sometimes(schemes, 10),
  dpopHeader: sometimes(fc.oneof(fc.string(), base64urlish(300)), 10),
  origin: sometimes(fc.oneof(fc.constant(ORIGIN), nastyString), 2),
  extraHeaders: fc.dictionary(
    fc.constantFrom('content-type', 'cookie', 'x-trust-score'),
    fc.string({ maxLength: 40 }),
    {
      maxKeys: 1,
    },
  ),
  body,
  jti: jtiValue,
  /** Ask for the share the credential names (else any seeded share). */
  matchShare: fc.constantFrom(true, true, true, false),
};
const nearValidShape = fc.record(nearValidFields);

/** The shape of a request before credentials are filled in. */
const requestShape = fc.oneof(wideShape, nearValidShape);

// ---------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------

/** Which share a request may legitimately receive (undefined: none). */
function releasable(request: FuzzRequest): string | 'any' | undefined {
  if (request.method !== 'GET') return undefined;
  const c = request.credential;
  if (c.kind === 'service') return 'any';
  if (c.kind === 'grant') return c.shareId;
  if (c.kind === 'bound-grant' && c.proof !== 'none' && c.proof !== 'wrong') return c.shareId;
  return undefined;
}

/** Checks one answer of the KMS API (handler or server). */
function checkResponse(
  request: FuzzRequest,
  status: number,
  headers: Record<string, string | undefined>,
  text: string,
) {
  const context = `${preview(request.method, 20)} ${preview(request.url, 120)} [${request.credential.kind}]`;
  if (!ALLOWED_STATUSES.has(status)) throw new Error(`${context}: status ${status} is not allowed`);
  if (status === 204) {
    if (text !== '') throw new Error(`${context}: 204 with a body`);
    return '204';
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`${context}: status ${status} with a body that is not JSON: ${preview(text)}`);
  }
  if (!String(headers['content-type'] ?? '').startsWith('application/json')) {
    throw new Error(`${context}: JSON body without a JSON content type (${headers['content-type']})`);
  }
  // A released share must never be cached (errors of the server's own catch-all omit the header).
  if (status === 200 && headers['cache-control'] !== 'no-store') throw new Error(`${context}: response is cacheable`);
  for (const token of request.tokens) {
    for (const part of token.split('.')) {
      if (part.length >= 16 && text.includes(part)) throw new Error(`${context}: response echoes a token`);
    }
  }
  const allowedShare = status === 200 ? releasable(request) : undefined;
  for (const [shareId, forms] of SHARE_SECRETS) {
    if (allowedShare === 'any' || allowedShare === shareId) continue;
    assertNoSecret(text, forms, `${context}: share ${shareId}`);
  }
  if (status >= 400) return assertErrorBody(status, parsed, context);
  // Success bodies have one shape per route.
  const value = parsed as Record<string, unknown>;
  const keys = Object.keys(value).sort().join();
  if (status === 200 && keys === 'nodeId,status') {
    if (value.status !== 'ok' || value.nodeId !== NODE) throw new Error(`${context}: bad health body`);
    return 'health';
  }
  if (status === 200 && keys === 'share') {
    if (request.method !== 'GET') throw new Error(`${context}: a share released to ${request.method}`);
    const share = value.share as Record<string, unknown>;
    const requested = decodeURIComponent((request.path ?? new URL(request.url).pathname).slice(SHARES_PATH.length));
    if (share.shareId !== requested) throw new Error(`${context}: released share ${String(share.shareId)}`);
    const may = releasable(request);
    if (may === undefined || (may !== 'any' && may !== share.shareId)) {
      throw new Error(`${context}: RELEASED share ${String(share.shareId)} without a valid credential for it`);
    }
    return `released via ${request.credential.kind}`;
  }
  if (status === 201 && keys === 'stored' && request.method === 'PUT' && request.credential.kind === 'service') {
    return 'stored';
  }
  if (status === 200 && keys === 'deleted' && request.method === 'DELETE' && request.credential.kind === 'service') {
    return 'deleted';
  }
  throw new Error(`${context}: unexpected success ${status} ${preview(text)}`);
}

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

type RequestShape = typeof requestShape extends fc.Arbitrary<infer T> ? T : never;

interface Fixture {
  tokens: TokenIssuer;
  publicKey: CryptoKey;
  holder: { privateKey: CryptoKey; publicJwk: JWK; jkt: string };
  store: ShareStore;
  unexpected: unknown[];
  dir: string;
}

async function createFixture(): Promise<Fixture> {
  const pair = await generateKeyPair('EdDSA');
  const holderPair = await generateKeyPair('EdDSA', { extractable: true });
  const publicJwk = await exportJWK(holderPair.publicKey);
  return {
    tokens: createTokenIssuer({ issuer: ISSUER, privateKey: pair.privateKey }),
    publicKey: pair.publicKey,
    holder: { privateKey: holderPair.privateKey, publicJwk, jkt: await jwkThumbprint(publicJwk) },
    store: createMemoryShareStore({ nodeId: NODE }),
    unexpected: [],
    dir: await mkdtemp(join(tmpdir(), 'kos-fuzz-kms-')),
  };
}

async function reseed(store: ShareStore): Promise<void> {
  for (const share of SHARES) await store.put(share);
}

/** Fills in real credentials for a generated request shape. */
async function materialise(fixture: Fixture, shape: RequestShape, base: string): Promise<FuzzRequest> {
  const credentialShare = 'shareId' in shape.credential ? shape.credential.shareId : undefined;
  const path =
    shape.matchShare && credentialShare !== undefined && shape.path.startsWith(SHARES_PATH)
      ? `${SHARES_PATH}${credentialShare}`
      : shape.path;
  let url: string;
  if (shape.urlKind === 'junk') url = shape.junkUrl;
  else url = `${base}${path}${shape.urlKind === 'with-query' ? '?q=1&x=%2e%2e' : ''}`;
  const headers: Record<string, string | undefined> = { ...shape.extraHeaders };
  const tokens: string[] = [];
  const credential = shape.credential;
  const share = 'shareId' in credential ? SHARES.find((s) => s.shareId === credential.shareId) : undefined;
  const scheme = (natural: string) => shape.schemeOverride ?? natural;
  switch (credential.kind) {
    case 'none':
      break;
    case 'junk':
      headers.authorization = shape.junkAuthorization;
      break;
    case 'service': {
      const token = (await fixture.tokens.issueServiceToken(NODE)).token;
      tokens.push(token);
      headers.authorization = `${scheme('KOS-Service')} ${token}`;
      break;
    }
    case 'grant':
    case 'bound-grant': {
      const s = share as StoredShare;
      const bound = credential.kind === 'bound-grant';
      const grant = await fixture.tokens.issueGrant({
        clientId: s.owner,
        kid: s.kid,
        version: s.version,
        setId: s.setId,
        shares: { [NODE]: s.shareId, 'node-2': `${s.setId}.2` },
        ...(bound ? { dpopJkt: fixture.holder.jkt } : {}),
      });
      tokens.push(grant.token);
      headers.authorization = `${scheme(bound ? 'DPoP' : 'Bearer')} ${grant.token}`;
      if (credential.kind === 'bound-grant' && credential.proof !== 'none') {
        const target = shape.urlKind === 'junk' ? `${base}${path}` : url;
        let proof: string;
        if (credential.proof === 'junk-jti') {
          proof = await new CompactSign(
            utf8(
              JSON.stringify({
                htm: shape.method,
                htu: safeTarget(target),
                ath: accessTokenHash(grant.token),
                iat: Math.floor(Date.now() / 1000),
                jti: shape.jti,
              }),
            ),
          )
            .setProtectedHeader({ alg: 'EdDSA', typ: 'dpop+jwt', jwk: fixture.holder.publicJwk })
            .sign(fixture.holder.privateKey);
        } else {
          proof = await createDpopProof({
            privateKey: fixture.holder.privateKey,
            publicJwk: fixture.holder.publicJwk,
            method: credential.proof === 'wrong' ? 'PUT' : shape.method || 'GET',
            url: safeTarget(target),
            accessToken: grant.token,
          });
        }
        tokens.push(proof);
        headers.dpop = proof;
      }
      break;
    }
  }
  if (shape.dpopHeader !== null && headers.dpop === undefined) headers.dpop = shape.dpopHeader;
  if (shape.origin !== null) headers.origin = shape.origin;
  return {
    method: shape.method,
    url,
    path: shape.givePath ? path : undefined,
    target: path,
    headers,
    body: shape.body,
    credential,
    tokens,
  };
}

function safeTarget(url: string): string {
  try {
    return dpopTargetUri(url);
  } catch {
    return 'https://invalid.test/';
  }
}

const runTimeout = fuzzTimeout(30_000);

describe('fuzz: KMS node handler (direct calls)', () => {
  let fixture: Fixture;
  let handlers: { name: string; base: string; handle: (request: KmsRequest) => Promise<KmsResponse> }[];

  beforeAll(async () => {
    fixture = await createFixture();
    const verifier = createTokenVerifier({ nodeId: NODE, issuer: ISSUER, keys: fixture.publicKey });
    const common = {
      nodeId: NODE,
      store: fixture.store,
      verifier,
      corsOrigins: [ORIGIN],
      onError: (error: unknown) => fixture.unexpected.push(error),
    };
    handlers = [
      {
        name: 'memory replay, URL from the request',
        base: 'https://kms.test',
        handle: createKmsHandler({ ...common, replay: createMemoryMetadataStore() }),
      },
      {
        name: 'file replay, mounted with publicUrl',
        base: 'https://kms.test/node-1',
        handle: createKmsHandler({
          ...common,
          replay: createFileMetadataStore({ dir: join(fixture.dir, 'replay') }),
          publicUrl: 'https://kms.test/node-1/',
        }),
      },
    ];
    await reseed(fixture.store);
  });

  afterAll(async () => {
    await rm(fixture.dir, { recursive: true, force: true });
  });

  it(
    'every answer is typed, JSON, well-shaped, and releases a share only to a valid credential',
    async () => {
      const tally = new Map<string, number>();
      await fc.assert(
        fc.asyncProperty(requestShape, fc.nat(1), async (shape, which) => {
          const { handle, base } = handlers[which] as (typeof handlers)[0];
          await reseed(fixture.store);
          const request = await materialise(fixture, shape, base);
          const kmsRequest: KmsRequest = {
            method: request.method,
            url: request.url,
            ...(request.path === undefined ? {} : { path: request.path }),
            headers: request.headers,
            body: request.body,
          };
          const response = await within(handle(kmsRequest), 5_000, `handler ${preview(request.url, 80)}`);
          if (fixture.unexpected.length > 0) {
            const error = fixture.unexpected.splice(0)[0];
            throw new Error(`the handler hit an untyped error: ${String(error)}`, { cause: error });
          }
          const outcome = checkResponse(request, response.status, response.headers, response.body);
          tally.set(outcome, (tally.get(outcome) ?? 0) + 1);
        }),
        fuzzParams(1, 20_000),
      );
      console.info('KMS handler outcomes:', Object.fromEntries([...tally].sort()));
      // Not vacuous: valid credentials did get shares, and refusals were typed.
      expect([...tally.keys()].some((k) => k.startsWith('released'))).toBe(true);
    },
    runTimeout,
  );

  it(
    'mounted in an app (path given, URL built from the Host header): typed answers whatever the URL',
    async () => {
      // How the middleware mounts nodes: `path` is the route, `url` is `${protocol}://${Host}${path}`
      // (requestFromNode), so a client chooses the URL; DPoP proofs are checked against it.
      const handle = (handlers[0] as (typeof handlers)[0]).handle;
      const mounted = fc.record({
        ...nearValidFields,
        urlKind: fc.constant('junk' as const),
        junkUrl: fc.oneof(
          fc.constantFrom(
            'http://[::1/v1/shares/setA.1',
            'http://a b/v1/shares/setA.1',
            'http://x:99999/',
            'http://%/',
          ),
          nastyString.map((host) => `http://${host}/v1/shares/setA.1`),
        ),
        givePath: fc.constant(true),
      });
      await fc.assert(
        fc.asyncProperty(mounted, async (shape) => {
          await reseed(fixture.store);
          const request = await materialise(fixture, shape, 'https://kms.test');
          const response = await within(
            handle({
              method: request.method,
              url: request.url,
              path: request.path as string,
              headers: request.headers,
              body: request.body,
            }),
            5_000,
            'mounted handler',
          );
          if (fixture.unexpected.length > 0) {
            const error = fixture.unexpected.splice(0)[0];
            throw new Error(`the handler hit an untyped error: ${String(error)} (url ${preview(request.url, 80)})`, {
              cause: error,
            });
          }
          checkResponse(request, response.status, response.headers, response.body);
        }),
        fuzzParams(0.5, 20_000),
      );
    },
    runTimeout,
  );

  describe('regressions (shrunk counterexamples kept as named cases)', () => {
    it('a key-bound grant with a valid proof, on a mounted node whose request URL does not parse, gets a DPoP code', async () => {
      // kms-handler.ts retrieve(): with `path` given and no publicUrl, `url = request.url`;
      // verifyDpopProof → dpopTargetUri(url) → new URL() throws a TypeError → ERR_INTERNAL 500.
      // Reachable through a mounted node (Express passes path, the URL comes from the Host header).
      const share = SHARES[0] as StoredShare;
      const grant = await fixture.tokens.issueGrant({
        clientId: share.owner,
        kid: share.kid,
        version: share.version,
        setId: share.setId,
        shares: { [NODE]: share.shareId },
        dpopJkt: fixture.holder.jkt,
      });
      const proof = await createDpopProof({
        privateKey: fixture.holder.privateKey,
        publicJwk: fixture.holder.publicJwk,
        method: 'GET',
        url: `https://kms.test${SHARES_PATH}${share.shareId}`,
        accessToken: grant.token,
      });
      const response = await (handlers[0] as (typeof handlers)[0]).handle({
        method: 'GET',
        url: `http://[::1${SHARES_PATH}${share.shareId}`,
        path: `${SHARES_PATH}${share.shareId}`,
        headers: { authorization: `DPoP ${grant.token}`, dpop: proof },
      });
      fixture.unexpected.splice(0);
      expect(JSON.parse(response.body)).toEqual({ error: { code: 'ERR_DPOP_INVALID', message: expect.any(String) } });
      expect(response.status).toBe(401);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Over real HTTP
// ---------------------------------------------------------------------------------------------

interface HttpAnswer {
  status: number;
  headers: Record<string, string | undefined>;
  text: string;
}

/** A request-target Node's client will send: printable ASCII only (everything else percent-encoded). */
function wirePath(path: string): string {
  const encoded = Array.from(path, (c) => (/^[\x21-\x7e]$/.test(c) ? c : percentEncode(c))).join('');
  // Within Node's 16 KiB header limit (beyond it Node answers 431 itself, as the raw property shows).
  const bounded = encoded.slice(0, 6_000).replace(/%[0-9A-Fa-f]?$/, '');
  return bounded.startsWith('/') || bounded === '*' ? bounded : `/${bounded}`;
}

/** A header value Node's client will send (no CR/LF/NUL, latin1 at most). */
function wireHeader(value: string): string {
  return value.replace(/[^\t\x20-\x7e\x80-\xff]/g, '?').slice(0, 2_000);
}

function send(
  agent: HttpAgent,
  port: number,
  request: { method: string; path: string; headers: Record<string, string>; body: Uint8Array | undefined },
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, method: request.method, path: request.path, headers: request.headers, agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const headers: Record<string, string | undefined> = {};
          for (const [name, value] of Object.entries(res.headers)) {
            headers[name] = Array.isArray(value) ? value.join(', ') : value;
          }
          resolve({ status: res.statusCode ?? 0, headers, text: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (request.body) req.end(Buffer.from(request.body));
    else req.end();
  });
}

describe('fuzz: KMS node server over HTTP', () => {
  let fixture: Fixture;
  let node: KmsNodeServer;
  let port: number;
  let agent: HttpAgent;

  beforeAll(async () => {
    fixture = await createFixture();
    const verifier = createTokenVerifier({ nodeId: NODE, issuer: ISSUER, keys: fixture.publicKey });
    node = createKmsNodeServer({
      nodeId: NODE,
      store: fixture.store,
      verifier,
      replay: createMemoryMetadataStore(),
      corsOrigins: [ORIGIN],
      onError: (error: unknown) => fixture.unexpected.push(error),
    });
    const url = await node.listen(0, '127.0.0.1');
    port = Number(new URL(url).port);
    agent = new HttpAgent({ keepAlive: true, maxSockets: 4 });
    await reseed(fixture.store);
  });

  afterAll(async () => {
    agent?.destroy();
    await node?.close();
    await rm(fixture.dir, { recursive: true, force: true });
  });

  it(
    'well-formed HTTP with arbitrary methods, paths, headers and bodies: typed JSON answers, never a bare 500',
    async () => {
      const tally = new Map<string, number>();
      // Methods Node's parser knows (others get its bare 400: see the raw-socket property).
      // CONNECT is a tunnel request the server does not take.
      const httpMethod = fc.oneof(
        { arbitrary: fc.constantFrom('GET', 'PUT', 'DELETE', 'OPTIONS'), weight: 6 },
        { arbitrary: fc.constantFrom(...METHODS.filter((m) => m !== 'CONNECT')), weight: 3 },
      );
      await fc.assert(
        fc.asyncProperty(
          requestShape,
          httpMethod,
          sometimes(fc.oneof(fc.constantFrom('evil.test', 'a b', '[::1', 'kms.test:99999', ''), nastyString), 4),
          async (shape, method, host) => {
            await reseed(fixture.store);
            const base = `http://127.0.0.1:${port}`;
            const request = await materialise(
              fixture,
              { ...shape, method, urlKind: 'absolute', givePath: false },
              base,
            );
            const headers: Record<string, string> = {};
            for (const [name, value] of Object.entries(request.headers)) {
              // Content-Length is Node's to set; a wrong one is a framing error, not an API input.
              if (value !== undefined && name !== 'content-length') headers[name] = wireHeader(value);
            }
            if (host !== null) headers.host = wireHeader(host);
            // Framed bodies only: a GET body without a length would be read as the next request.
            if (request.body) headers['content-length'] = String(request.body.length);
            const path = wirePath(request.target);
            const answer = await within(
              send(agent, port, { method, path, headers, body: request.body }),
              5_000,
              `${method} ${path}`,
            );
            if (fixture.unexpected.length > 0) {
              const error = fixture.unexpected.splice(0)[0];
              throw new Error(`the server hit an untyped error: ${String(error)}`, { cause: error });
            }
            if (answer.status >= 500 && !answer.text.includes('"code":"ERR_')) {
              throw new Error(`${method} ${path}: ${answer.status} without a code: ${preview(answer.text)}`);
            }
            // The handler sees the URL the server built (Host header + path).
            const seen: FuzzRequest = {
              ...request,
              method,
              url: `http://${headers.host || `127.0.0.1:${port}`}${path}`, // Node sends its own Host for an empty one.
              path: undefined,
            };
            if (method === 'HEAD') {
              // No body to look at: the status alone.
              if (!ALLOWED_STATUSES.has(answer.status) || answer.status === 500) {
                throw new Error(`HEAD ${path}: status ${answer.status}`);
              }
              return;
            }
            const outcome = checkResponse(seen, answer.status, answer.headers, answer.text);
            tally.set(outcome, (tally.get(outcome) ?? 0) + 1);
          },
        ),
        fuzzParams(1.5, 20_000),
      );
      console.info('KMS server outcomes:', Object.fromEntries([...tally].sort()));
      expect([...tally.keys()].some((k) => k.startsWith('released'))).toBe(true);
      const health = await send(agent, port, { method: 'GET', path: HEALTH_PATH, headers: {}, body: undefined });
      expect(health.status).toBe(200);
    },
    runTimeout,
  );

  it(
    'raw bytes on a socket: the server answers (Node parser errors, or typed JSON), never a bare 500, and stays up',
    async () => {
      const requestLine = fc
        .tuple(
          fc.constantFrom('GET', 'PUT', 'DELETE', 'POST', 'G\u00e9T', ''),
          fc.oneof(pathLike, fc.string({ maxLength: 30 })),
          fc.constantFrom('HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 ', '', 'http/1.1'),
        )
        .map(([m, p, v]) => `${m} ${p} ${v}\r\n`);
      const headerLines = fc
        .array(
          fc.oneof(
            fc.tuple(fc.string({ maxLength: 20 }), fc.string({ maxLength: 60 })).map(([n, v]) => `${n}: ${v}\r\n`),
            fc.constantFrom(
              'Host: kms.test\r\n',
              'Content-Length: 5\r\n',
              'Content-Length: -1\r\n',
              'Content-Length: 99999999\r\n',
              'Transfer-Encoding: chunked\r\n',
              'Transfer-Encoding: chunked, identity\r\n',
              'Authorization: Bearer a.b.c\r\n',
              'Expect: 100-continue\r\n',
              ' folded: line\r\n',
            ),
          ),
          { maxLength: 6 },
        )
        .map((lines) => lines.join(''));
      const payload = fc.oneof(
        fc
          .tuple(requestLine, headerLines, fc.constantFrom('\r\n', '\n', ''), fc.string({ maxLength: 40 }))
          .map(([line, hs, end, tail]) => Buffer.from(`${line}${hs}Connection: close\r\n${end}${tail}`, 'latin1')),
        fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
      );
      const statuses = new Map<string, number>();
      const others: string[] = [];
      await fc.assert(
        fc.asyncProperty(payload, async (bytes) => {
          const raw = await within(rawExchange(port, bytes), 5_000, `raw ${preview(bytes.toString('latin1'), 80)}`);
          const match = /^HTTP\/1\.[01] (\d{3})/.exec(raw);
          if (!match) return; // Closed without an answer (e.g. nothing parseable was sent).
          const status = Number(match[1]);
          const bodyStart = raw.indexOf('\r\n\r\n');
          const text = bodyStart === -1 ? '' : raw.slice(bodyStart + 4);
          const kind = text.includes('"error"') ? 'kos' : text.length === 0 ? 'bare' : 'other';
          if (kind === 'other' && !others.length) others.push(raw.slice(0, 200));
          statuses.set(`${status} ${kind}`, (statuses.get(`${status} ${kind}`) ?? 0) + 1);
          if (status >= 500 && !text.includes('"code":"ERR_')) {
            throw new Error(
              `raw ${JSON.stringify(bytes.toString('latin1'))}: ${status} without a code: ${preview(raw)}`,
            );
          }
          if (kind === 'kos') {
            const json = /\{"error":.*\}\s*$/s.exec(text);
            if (!json) throw new Error(`raw: error body is not JSON: ${preview(text)}`);
            assertErrorBody(status, JSON.parse(json[0]), `raw ${preview(bytes.toString('latin1'), 80)}`);
          }
        }),
        fuzzParams(0.5, 10_000),
      );
      const health = await send(agent, port, { method: 'GET', path: HEALTH_PATH, headers: {}, body: undefined });
      expect(health.status).toBe(200);
      // What answered malformed HTTP (reported; Node's own 400s carry no KOS error body).
      console.info('raw socket answers (status kind: count):', Object.fromEntries(statuses), others);
    },
    runTimeout,
  );
});

/** Writes bytes, half-closes, and collects whatever comes back until the server closes. */
function rawExchange(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.setTimeout(2_000, () => socket.destroy());
    socket.on('connect', () => {
      socket.end(bytes);
    });
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNRESET' || error.code === 'EPIPE') return;
      reject(error);
    });
  });
}
