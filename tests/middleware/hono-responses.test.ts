import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { createAccessControl } from '@kos/core';
import { kosMiddleware } from '@kos/hono';
import { createKosRuntime, createMemoryMetadataStore, type KosRuntime } from '@kos/kms-adapters';
import { Hono } from 'hono';
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryNodes } from '../support/nodes.js';

// Hono-only response shapes the cross-framework conformance suite cannot express: responses
// the route builds itself (not through c.json), including ones whose headers are immutable.

const ISSUER = 'https://idp.test';
const AUDIENCE = 'records-api';

describe('@kos/hono with responses the route builds itself', () => {
  let runtime: KosRuntime;
  let identityKey: CryptoKey;
  let listener: ReturnType<typeof getRequestListener>;
  let upstream: Server;

  const token = (score: number) =>
    new SignJWT({ trust_score: score })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('alice')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(identityKey);

  beforeAll(async () => {
    const pair = await generateKeyPair('EdDSA', { extractable: true });
    identityKey = pair.privateKey;
    const metadata = createMemoryMetadataStore();
    const access = createAccessControl({ metadata, defaultDeny: true });
    await access.grant('alice', 'records');
    const nodes = memoryNodes(5);
    runtime = await createKosRuntime({
      config: {
        issuer: 'https://kos.test',
        signingKey: (await generateKeyPair('EdDSA', { extractable: true })).privateKey,
        identity: { key: await exportJWK(pair.publicKey), algorithms: ['EdDSA'], issuer: ISSUER, audience: AUDIENCE },
        metadata,
        nodes: nodes.map((store) => ({ nodeId: store.nodeId, store, publicUrl: `https://kms.test/${store.nodeId}` })),
        access,
        autoCreateKeys: true,
      },
    });
    const sealed = { id: 'r1', data: await runtime.kos.seal('records', { diagnosis: 'flu' }, { dataId: 'r1' }) };
    // An upstream the route proxies: a fetched response has immutable headers.
    upstream = createServer((_req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.setHeader('x-upstream', 'yes');
      res.end('from upstream');
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/`;
    const app = new Hono();
    app.use(kosMiddleware({ runtime }));
    app.get('/proxied', () => fetch(upstreamUrl));
    app.get('/redirect', () => Response.redirect('https://example.test/elsewhere', 302));
    app.get('/built', () => new Response(JSON.stringify(sealed), { headers: { 'content-type': 'application/json' } }));
    app.get('/text', (c) => c.text('hello', 200, { 'x-route': 'kept' }));
    listener = getRequestListener(app.fetch);
  });

  afterAll(async () => {
    await runtime?.close();
    await new Promise((resolve) => upstream?.close(resolve));
  });

  it('passes a proxied (fetched, immutable-headers) response through with the tier header added', async () => {
    const res = await request(listener)
      .get('/proxied')
      .set('authorization', `Bearer ${await token(30)}`);
    expect(res.status).toBe(200);
    expect(res.text).toBe('from upstream');
    expect(res.headers['x-upstream']).toBe('yes');
    expect(res.headers['kos-tier']).toBe('low');
    expect(res.headers.vary).toMatch(/Authorization/);
  });

  it('passes a redirect through with the tier header added', async () => {
    const res = await request(listener)
      .get('/redirect')
      .set('authorization', `Bearer ${await token(30)}`);
    expect(res.status).toBe(302);
    expect(res.headers.location).toBe('https://example.test/elsewhere');
    expect(res.headers['kos-tier']).toBe('low');
    expect(res.headers.vary).toMatch(/Authorization/);
  });

  it('delivers envelopes in a JSON response built without c.json', async () => {
    const res = await request(listener)
      .get('/built')
      .set('authorization', `Bearer ${await token(30)}`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ id: 'r1', data: { diagnosis: 'flu' } });
  });

  it('passes a text response through untouched, keeping its headers', async () => {
    const res = await request(listener)
      .get('/text')
      .set('authorization', `Bearer ${await token(90)}`);
    expect(res.text).toBe('hello');
    expect(res.headers['x-route']).toBe('kept');
    expect(res.headers['kos-tier']).toBe('high');
  });
});
