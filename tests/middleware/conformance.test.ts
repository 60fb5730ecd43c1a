import { createAccessControl, decodeEnvelope, encodeEnvelope, KosError, utf8 } from '@kos/core';
import { createKosRuntime, createMemoryMetadataStore, type KosRuntime } from '@kos/kms-adapters';
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildApp,
  FRAMEWORKS,
  type Framework,
  type NodeListener,
  type TestRoute,
} from '../../test-support/frameworks.js';
import { type HostileNode, hostileNodes } from '../support/nodes.js';

const ISSUER = 'https://idp.test';
const AUDIENCE = 'records-api';

/**
 * One suite, three frameworks: every case runs against Express, Hono and Koa with the same
 * KOS runtime, and the responses must be the same (medium-tier grants differ only in their
 * random ids and times, which are normalised before comparing). It runs twice: with access
 * records read on every request, and remembered (AccessControl `cacheMs`), where a request
 * whose caches are warm (the second and third framework of a case, mostly) is answered without
 * waiting (`decideNow` / `deliverNow`) and must still match the first.
 */
describe.each([
  ['access read on every request', 0],
  ['access records remembered, warm requests answered without waiting', 60_000],
])('kosMiddleware conformance (Express, Hono, Koa), %s', (_name, accessCacheMs) => {
  let runtime: KosRuntime;
  let nodes: HostileNode[];
  let identityKey: CryptoKey;
  let apps: Record<Framework, NodeListener>;
  const handlerRuns: Record<string, number> = {};
  const db = new Map<string, unknown>();
  const elsewhere = new Map<string, unknown>();
  let binary: Uint8Array;

  async function token(clientId: string, score: unknown, options: { exp?: number; key?: CryptoKey } = {}) {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ trust_score: score })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject(clientId)
      .setIssuedAt(now)
      .setExpirationTime(options.exp ?? now + 300)
      .sign(options.key ?? identityKey);
  }

  const routes: TestRoute[] = [
    {
      method: 'POST',
      path: '/records',
      handle: async ({ body, seal }) => {
        handlerRuns.post = (handlerRuns.post ?? 0) + 1;
        const id = `r${db.size + 1}`;
        db.set(id, { id, data: await seal('records', body, { dataId: id }) });
        return { status: 201, json: { id } };
      },
    },
    {
      method: 'GET',
      path: '/records/:id',
      handle: ({ params }) => {
        handlerRuns.get = (handlerRuns.get ?? 0) + 1;
        const record = db.get(params.id as string);
        return record ? { json: record } : { status: 404, json: { error: 'not found' } };
      },
    },
    { method: 'GET', path: '/records', handle: () => ({ json: [...db.values()] }) },
    {
      method: 'GET',
      path: '/nested',
      handle: () => ({
        json: { page: 1, items: [{ meta: { deep: [{ secret: (db.get('r1') as { data: unknown }).data }] } }] },
      }),
    },
    { method: 'GET', path: '/blob', handle: () => ({ bytes: binary, type: 'application/vnd.kos.envelope' }) },
    { method: 'GET', path: '/plain', handle: () => ({ json: { hello: 'world', n: 1 } }) },
    {
      method: 'GET',
      path: '/cached',
      handle: () => ({
        json: db.get('r1'),
        headers: { 'cache-control': 'public, max-age=600', vary: 'Origin', 'x-route': 'kept' },
      }),
    },
    {
      method: 'GET',
      path: '/with-cookies',
      handle: () => ({ json: db.get('r1'), cookies: ['a=1; Path=/', 'b=2; Path=/; HttpOnly'] }),
    },
    { method: 'GET', path: '/other-key', handle: () => ({ json: elsewhere.get('other') }) },
    { method: 'GET', path: '/echo-decision', handle: ({ decision }) => ({ json: { decision } }) },
    { method: 'POST', path: '/echo-decision', handle: ({ decision }) => ({ json: { decision } }) },
  ];

  beforeAll(async () => {
    const pair = await generateKeyPair('EdDSA', { extractable: true });
    identityKey = pair.privateKey;
    const signing = await generateKeyPair('EdDSA', { extractable: true });
    const metadata = createMemoryMetadataStore();
    nodes = hostileNodes(5);
    const access = createAccessControl({ metadata, defaultDeny: true, cacheMs: accessCacheMs });
    for (const client of ['alice', 'bob', 'carol']) await access.grant(client, 'records');
    runtime = await createKosRuntime({
      config: {
        issuer: 'https://kos.test',
        signingKey: signing.privateKey,
        identity: { key: await exportJWK(pair.publicKey), algorithms: ['EdDSA'], issuer: ISSUER, audience: AUDIENCE },
        metadata,
        nodes: nodes.map((store) => ({ nodeId: store.nodeId, store, publicUrl: `https://kms.test/${store.nodeId}` })),
        access,
        tiers: { denyBelow: 10 },
        autoCreateKeys: true,
      },
    });
    apps = {
      express: buildApp('express', runtime, routes),
      hono: buildApp('hono', runtime, routes),
      koa: buildApp('koa', runtime, routes),
    };
    // Seed through the Express app (any adapter would do; the conformance cases below read).
    const created = await request(apps.express)
      .post('/records')
      .set('authorization', `Bearer ${await token('alice', 95)}`)
      .send({ diagnosis: 'flu', n: 1 });
    expect(created.status).toBe(201);
    await request(apps.hono)
      .post('/records')
      .set('authorization', `Bearer ${await token('alice', 95)}`)
      .send({ diagnosis: 'cold', n: 2 });
    await runtime.kos.keys.createKey('other');
    elsewhere.set('other', { id: 'other', data: await runtime.kos.seal('other', { x: 1 }, { dataId: 'other' }) });
    binary = encodeEnvelope(await runtime.kos.keys.seal('records', utf8('raw bytes'), { dataId: 'blob-1' }), 'binary');
  });

  afterAll(async () => {
    await runtime?.close();
  });

  /** Runs one request against all three apps and returns the responses, keyed by framework. */
  async function everywhere(send: (app: NodeListener) => request.Test) {
    const out = {} as Record<Framework, request.Response>;
    for (const framework of FRAMEWORKS) out[framework] = await send(apps[framework]);
    return out;
  }

  function comparable(response: request.Response) {
    const body = JSON.parse(JSON.stringify(response.body ?? null), (key, value) =>
      ['grant', 'expiresAt'].includes(key) ? `<${key}>` : value,
    );
    return {
      status: response.status,
      // The media type: a route's own (pass-through) JSON differs in its charset parameter by framework.
      type: String(response.headers['content-type']).split(';')[0],
      tier: response.headers['kos-tier'],
      vary: response.headers.vary,
      cache: response.headers['cache-control'],
      body: Buffer.isBuffer(response.body) ? response.body.toString('base64') : body,
    };
  }

  function expectSame(responses: Record<Framework, request.Response>) {
    const express = comparable(responses.express);
    expect(comparable(responses.hono)).toEqual(express);
    expect(comparable(responses.koa)).toEqual(express);
    return responses.express;
  }

  const get = (path: string, bearer?: string) => (app: NodeListener) => {
    const test = request(app).get(path);
    return bearer ? test.set('authorization', `Bearer ${bearer}`) : test;
  };

  it.each([
    [30, 'low'],
    [49, 'low'],
    [50, 'medium'],
    [80, 'medium'],
    [81, 'high'],
    [95, 'high'],
  ] as const)('score %d is delivered as %s, identically in all three frameworks', async (score, tier) => {
    const res = expectSame(await everywhere(get('/records/r1', await token('alice', score))));
    expect(res.status).toBe(200);
    expect(res.headers['kos-tier']).toBe(tier);
    expect(res.headers.vary).toMatch(/Authorization/);
    if (tier === 'low') {
      expect(res.body).toEqual({ id: 'r1', data: { diagnosis: 'flu', n: 1 } });
      expect(res.text).not.toMatch(/"kos":1|"dek"|"grant"|"value"/);
      return;
    }
    expect(res.headers['cache-control']).toBe('no-store');
    // The record's JSON, quoted as it would be sent: a bare /flu/ also matches the random
    // base64url of grants, ids and digests now and then (it failed about one run in ten).
    expect(res.text).not.toMatch(/"diagnosis"|"flu"/);
    if (tier === 'high') {
      expect(res.body.data).toMatchObject({ kosTier: 'high', envelope: { kos: 1, kid: 'records' } });
      expect(res.body.data.dek).toMatch(/^[A-Za-z0-9_-]{43}$/);
    } else {
      const key = res.body.data.key;
      expect(res.body.data).toMatchObject({ kosTier: 'medium', envelope: { kos: 1, kid: 'records' } });
      expect(key).toMatchObject({ kid: 'records', ver: 1, k: score === 50 ? 4 : 3 });
      expect(key.shares).toHaveLength(5);
      for (const share of key.shares) {
        expect(share.url).toMatch(/^https:\/\/kms\.test\/node-\d\/v1\/shares\//);
        expect(share.digest).toMatch(/^[A-Za-z0-9_-]{43}$/);
      }
      expect(key.grant.split('.')).toHaveLength(3);
    }
  });

  it.each([
    ['no token', async () => undefined, 'ERR_UNAUTHENTICATED'],
    [
      'an expired token',
      async () => token('alice', 90, { exp: Math.floor(Date.now() / 1000) - 60 }),
      'ERR_TOKEN_EXPIRED',
    ],
    [
      'a forged token',
      async () => token('alice', 90, { key: (await generateKeyPair('EdDSA')).privateKey }),
      'ERR_TOKEN_INVALID',
    ],
    ['a score outside 0–100', async () => token('alice', 140), 'ERR_SCORE_INVALID'],
    ['a non-numeric score', async () => token('alice', 'high'), 'ERR_SCORE_INVALID'],
    ['a score below the deny floor', async () => token('alice', 5), 'ERR_SCORE_BELOW_FLOOR'],
  ])('%s is refused before the route runs, with one error body', async (_what, makeToken, code) => {
    const before = handlerRuns.get ?? 0;
    const res = expectSame(await everywhere(get('/records/r1', await makeToken())));
    expect(res.body).toEqual({ error: { code, message: expect.any(String) } });
    expect([401, 403]).toContain(res.status);
    expect(handlerRuns.get ?? 0).toBe(before);
  });

  it('ignores a score sent by the client in a header, the query or the body', async () => {
    const low = await token('alice', 20);
    const res = expectSame(
      await everywhere((app) =>
        request(app)
          .get('/records/r1?trust_score=99&score=99')
          .set('authorization', `Bearer ${low}`)
          .set('x-trust-score', '99'),
      ),
    );
    expect(res.headers['kos-tier']).toBe('low');
    const posted = expectSame(
      await everywhere((app) =>
        request(app).post('/echo-decision').set('authorization', `Bearer ${low}`).send({ trust_score: 99 }),
      ),
    );
    expect(posted.body.decision).toMatchObject({ tier: 'low', score: 20 });
  });

  it('refuses a client without access to the key (403) and one without access to any key', async () => {
    const res = expectSame(await everywhere(get('/other-key', await token('alice', 90))));
    expect(res.status).toBe(403);
    expect(res.body).toEqual({ error: { code: 'ERR_ACCESS_DENIED', message: expect.any(String) } });
    const stranger = expectSame(await everywhere(get('/records/r1', await token('mallory', 20))));
    expect(stranger.body.error.code).toBe('ERR_ACCESS_DENIED');
    expect(stranger.text).not.toMatch(/flu/);
  });

  it('delivers every record of a list, and envelopes nested at any depth', async () => {
    const list = expectSame(await everywhere(get('/records', await token('bob', 10 + 30))));
    expect(list.body).toEqual([
      { id: 'r1', data: { diagnosis: 'flu', n: 1 } },
      { id: 'r2', data: { diagnosis: 'cold', n: 2 } },
    ]);
    const nested = expectSame(await everywhere(get('/nested', await token('bob', 90))));
    expect(nested.body.items[0].meta.deep[0].secret).toMatchObject({ kosTier: 'high' });
    const nestedLow = expectSame(await everywhere(get('/nested', await token('bob', 40))));
    expect(nestedLow.body).toEqual({ page: 1, items: [{ meta: { deep: [{ secret: { diagnosis: 'flu', n: 1 } }] } }] });
  });

  it('records sharing a key cost one key fetch: one medium reference per key version per response', async () => {
    const res = await request(apps.express)
      .get('/records')
      .set('authorization', `Bearer ${await token('carol', 70)}`);
    const [a, b] = res.body;
    expect(a.data.key.grant).toBe(b.data.key.grant);
    expect(a.data.key.setId).toBe(b.data.key.setId);
  });

  it('delivers binary envelope bodies: bytes for low, a JSON item for high', async () => {
    const lowToken = await token('alice', 30);
    const lowTier = await everywhere((app) => get('/blob', lowToken)(app).buffer(true).parse(binaryParser));
    for (const framework of FRAMEWORKS) {
      expect(lowTier[framework].status).toBe(200);
      expect(Buffer.from(lowTier[framework].body).toString('utf8')).toBe('raw bytes');
      expect(lowTier[framework].headers['kos-tier']).toBe('low');
    }
    const high = expectSame(await everywhere(get('/blob', await token('alice', 90))));
    expect(high.body.kosTier).toBe('high');
    expect(decodeEnvelope(high.body.envelope).header.did).toBe('blob-1');
  });

  it('passes non-envelope responses through untouched, with the tier header', async () => {
    const res = expectSame(await everywhere(get('/plain', await token('alice', 90))));
    expect(res.body).toEqual({ hello: 'world', n: 1 });
    expect(res.headers['kos-tier']).toBe('high');
  });

  it('never lets a route make key material cacheable: no-store wins, Vary keeps Origin and adds Authorization', async () => {
    const high = await everywhere(get('/cached', await token('alice', 90)));
    for (const framework of FRAMEWORKS) {
      const res = high[framework];
      expect(res.body.data.kosTier, framework).toBe('high');
      expect(res.headers['cache-control'], framework).toBe('no-store');
      expect(res.headers.vary, framework).toMatch(/Origin/);
      expect(res.headers.vary, framework).toMatch(/Authorization/);
      expect(res.headers['x-route'], framework).toBe('kept');
    }
  });

  it('keeps every cookie the route set while delivering its body', async () => {
    const low = await everywhere(get('/with-cookies', await token('alice', 30)));
    for (const framework of FRAMEWORKS) {
      const res = low[framework];
      expect(res.body.data, framework).toEqual({ diagnosis: 'flu', n: 1 });
      expect(res.headers['set-cookie'], framework).toEqual(['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
    }
  });

  it('exposes the decision to the route the framework way', async () => {
    const res = expectSame(await everywhere(get('/echo-decision', await token('alice', 65))));
    expect(res.body.decision).toEqual({
      clientId: 'alice',
      tier: 'medium',
      score: 65,
      band: 'medium:65-80',
      n: 5,
      k: 3,
    });
  });

  it('answers 503 with a code when too few KMS nodes are up', async () => {
    runtime.kos.keys.clearCache();
    for (const node of nodes.slice(0, 3)) node.behaviour = { kind: 'down' };
    try {
      const res = expectSame(await everywhere(get('/records/r1', await token('alice', 30))));
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ error: { code: 'ERR_SHARES_INSUFFICIENT', message: expect.any(String) } });
      expect(res.text).not.toMatch(/flu/);
    } finally {
      for (const node of nodes) node.behaviour = { kind: 'honest' };
    }
  });
});

describe('kosMiddleware when KOS cannot start (Express, Hono, Koa)', () => {
  it('answers every request with the start-up error code, never runs the route, and rejects `ready`', async () => {
    let routeRuns = 0;
    const failing = Promise.reject(new KosError('ERR_STORE_IO', 'metadata store is unreachable'));
    failing.catch(() => undefined);
    const routes: TestRoute[] = [
      {
        method: 'GET',
        path: '/records/:id',
        handle: () => {
          routeRuns += 1;
          return { json: { ok: true } };
        },
      },
    ];
    for (const framework of FRAMEWORKS) {
      const app = buildApp(framework, failing as unknown as KosRuntime, routes);
      // Twice: the first request may find start-up still pending, the second finds it failed.
      for (let i = 0; i < 2; i++) {
        const res = await request(app).get('/records/r1').set('authorization', 'Bearer x');
        expect(res.status, framework).toBe(503);
        expect(res.body, framework).toEqual({ error: { code: 'ERR_STORE_IO', message: 'KOS failed to start' } });
        expect(res.headers['cache-control'], framework).toBe('no-store');
      }
    }
    expect(routeRuns).toBe(0);
  });
});

function binaryParser(res: request.Response, callback: (error: Error | null, body: Buffer) => void) {
  const stream = res as unknown as NodeJS.ReadableStream;
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  stream.on('end', () => callback(null, Buffer.concat(chunks)));
}
