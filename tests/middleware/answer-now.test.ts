import { randomBytes } from 'node:crypto';
import {
  createAccessControl,
  createCallbackSink,
  type EnvelopeJson,
  encodeEnvelope,
  type Kos,
  type KosRouteResponse,
  type RequestLike,
  type ShareStore,
} from '@kos/core';
import { createKosRuntime, createMemoryMetadataStore, type KosRuntime } from '@kos/kms-adapters';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryNodes } from '../support/nodes.js';

const ISSUER = 'https://idp.test';

/** Runtime node entries for share stores, each at its own public URL. */
const nodeConfigs = (stores: readonly ShareStore[]) =>
  stores.map((store) => ({ nodeId: store.nodeId, store, publicUrl: `https://kms.test/${store.nodeId}` }));
const AUDIENCE = 'records-api';

/**
 * `decideNow` / `deliverNow` answer a request without waiting when everything is cached, and
 * must then answer exactly what `decide` / `deliver` answer; whenever anything is not at hand,
 * or would need a write (audit) or an asynchronous step (JWE, grant signing, decryption), they
 * answer undefined and leave the request to the full path.
 */
describe('answering without waiting (decideNow, deliverNow)', () => {
  let identityKey: CryptoKey;
  let runtime: KosRuntime;
  let audited: KosRuntime;
  let kos: Kos;
  let records: EnvelopeJson;
  let orders: EnvelopeJson;
  const auditRecords: unknown[] = [];

  async function token(clientId: string, score: number, cnf?: JWK): Promise<string> {
    return new SignJWT({ trust_score: score, ...(cnf ? { cnf: { jwk: cnf } } : {}) })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject(clientId)
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(identityKey);
  }

  const requestWith = (bearer: string): RequestLike => ({
    method: 'GET',
    url: 'https://api.test/records/r1',
    headers: { authorization: `Bearer ${bearer}` },
  });

  beforeAll(async () => {
    const pair = await generateKeyPair('EdDSA', { extractable: true });
    identityKey = pair.privateKey;
    const identityJwk = await exportJWK(pair.publicKey);
    const signing = await generateKeyPair('EdDSA', { extractable: true });
    const metadata = createMemoryMetadataStore();
    const access = createAccessControl({ metadata, cacheMs: 60_000 });
    for (const client of ['alice', 'bob', 'carol', 'dave', 'erin']) await access.grant(client, '*');
    const stores = memoryNodes(5);
    const config = (audit: boolean) => ({
      issuer: 'https://kos.test',
      signingKey: signing.privateKey,
      identity: { key: identityJwk, algorithms: ['EdDSA'], issuer: ISSUER, audience: AUDIENCE },
      metadata,
      nodes: nodeConfigs(stores),
      access,
      tiers: { denyBelow: 10 },
      autoCreateKeys: true,
      ...(audit
        ? { audit: { salt: randomBytes(16), sinks: [createCallbackSink((r) => void auditRecords.push(r))] } }
        : {}),
    });
    runtime = await createKosRuntime({ config: config(false) });
    kos = runtime.kos;
    records = await kos.seal('records', { diagnosis: 'flu' }, { dataId: 'r1' });
    orders = await kos.seal('orders', { total: 12 }, { dataId: 'o1' });
    audited = await createKosRuntime({ config: config(true) });
  });

  afterAll(async () => {
    await runtime?.close();
    await audited?.close();
  });

  /** Decides and delivers the full way (warming every cache), then again without waiting. */
  async function bothWays(bearer: string, response: KosRouteResponse, on: Kos = kos) {
    const request = requestWith(bearer);
    const admitted = await on.decide(request);
    const full = await on.deliver(request, admitted.identity, admitted.decision, response);
    const now = on.decideNow(request);
    const delivered = now && on.deliverNow(request, now.identity, now.decision, response);
    return { admitted, full, now, delivered, request };
  }

  it('a configuration takes access.cacheMs (default 0: nothing remembered) and refuses a bad one', async () => {
    const configured = async (access: object) =>
      createKosRuntime({
        config: {
          issuer: 'https://kos.test',
          signingKey: (await generateKeyPair('EdDSA', { extractable: true })).privateKey,
          identity: {
            key: await exportJWK((await generateKeyPair('EdDSA')).publicKey),
            algorithms: ['EdDSA'],
            issuer: ISSUER,
            audience: AUDIENCE,
          },
          metadata: createMemoryMetadataStore(),
          nodes: nodeConfigs(memoryNodes(5)),
          access,
        },
      });
    for (const [access, remembered] of [
      [{ defaultDeny: true }, undefined],
      [{ defaultDeny: true, cacheMs: 500 }, true],
    ] as const) {
      const built = await configured(access);
      await built.access.grant('alice', 'records');
      expect(await built.access.isAllowed('alice', 'records')).toBe(true);
      expect(built.access.peekAllowed?.('alice', 'records')).toBe(remembered);
      await built.close();
    }
    await expect(configured({ cacheMs: -1 })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTIONS' });
  });

  it('never throws: a custom identity source or access control that fails is left to the full path', async () => {
    const metadata = createMemoryMetadataStore();
    const access = createAccessControl({ metadata });
    await access.grant('alice', '*');
    const failing = await createKosRuntime({
      config: {
        issuer: 'https://kos.test',
        signingKey: (await generateKeyPair('EdDSA', { extractable: true })).privateKey,
        identity: {
          identify: async () => ({ clientId: 'alice', score: 95 }),
          peek: () => {
            throw new Error('identity store down');
          },
        },
        metadata,
        nodes: nodeConfigs(memoryNodes(5)),
        access: {
          ...access,
          peekAllowed: () => {
            throw new Error('access store down');
          },
        },
        autoCreateKeys: true,
      },
    });
    try {
      const sealed = await failing.kos.seal('records', { n: 1 }, { dataId: 'f1' });
      const request = requestWith('anything');
      expect(failing.kos.decideNow(request)).toBeUndefined();
      const { identity, decision } = await failing.kos.decide(request);
      const response = { status: 200, body: { data: sealed } };
      expect((await failing.kos.deliver(request, identity, decision, response)).status).toBe(200);
      expect(failing.kos.deliverNow(request, identity, decision, response)).toBeUndefined();
    } finally {
      await failing.close();
    }
  });

  it('decideNow knows nothing of a token before it was verified, then answers what decide answered', async () => {
    const bearer = await token('alice', 95);
    expect(kos.decideNow(requestWith(bearer))).toBeUndefined();
    const { admitted, now } = await bothWays(bearer, { status: 200, body: { plain: true } });
    expect(now).toEqual(admitted);
    expect(kos.decideNow({ ...requestWith(bearer), headers: {} })).toBeUndefined();
  });

  it('high tier: the same response as deliver, for one envelope and for a list under two keys', async () => {
    const bearer = await token('alice', 95);
    const one = await bothWays(bearer, { status: 200, body: { id: 'r1', data: records } });
    expect(one.delivered).toEqual(one.full);
    expect(one.full.headers['cache-control']).toBe('no-store');
    expect((one.full.body as { data: { dek: string } }).data.dek).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const list = await bothWays(bearer, {
      status: 200,
      body: [{ data: records }, { data: orders }, { nested: { deeper: records } }],
    });
    expect(list.delivered).toEqual(list.full);
    // The three items carry their own key's DEK (two distinct).
    const deks = (list.full.body as Array<Record<string, { dek?: string; deeper?: { dek: string } }>>).map(
      (item) => item.data?.dek ?? item.nested?.deeper?.dek,
    );
    expect(deks[0]).toBe(deks[2]);
    expect(deks[0]).not.toBe(deks[1]);
  });

  it('medium tier with a key-bound grant: the same references as deliver', async () => {
    const clientKey = await exportJWK((await generateKeyPair('EdDSA')).publicKey);
    const bearer = await token('bob', 70, clientKey);
    const { full, delivered } = await bothWays(bearer, { status: 200, body: { id: 'r1', data: records } });
    expect(full.headers['kos-tier']).toBe('medium');
    expect(delivered).toEqual(full);
  });

  it('a body without envelopes passes through the same way', async () => {
    const { full, delivered } = await bothWays(await token('alice', 95), { status: 201, body: { ok: [1, 2] } });
    expect(full.transformed).toBe(false);
    expect(delivered).toEqual(full);
  });

  it('low tier: the same plaintext values as deliver, for one envelope and for a list under two keys', async () => {
    const bearer = await token('carol', 30);
    const one = await bothWays(bearer, { status: 200, body: { id: 'r1', data: records } });
    expect(one.full.body).toEqual({ id: 'r1', data: { diagnosis: 'flu' } });
    expect(one.delivered).toEqual(one.full);
    const list = await bothWays(bearer, { status: 200, body: [{ data: records }, { data: orders }] });
    expect(list.full.body).toEqual([{ data: { diagnosis: 'flu' } }, { data: { total: 12 } }]);
    expect(list.delivered).toEqual(list.full);
  });

  it('low tier: an envelope whose ciphertext was altered is refused by the full path, with its code', async () => {
    const bearer = await token('carol', 30);
    await bothWays(bearer, { status: 200, body: { data: records } });
    const ct = Buffer.from(records.ct, 'base64url');
    ct[0] = (ct[0] as number) ^ 1;
    const altered = { status: 200, body: { data: { ...records, ct: ct.toString('base64url') } } };
    const { identity, decision } = await kos.decide(requestWith(bearer));
    expect(kos.deliverNow(requestWith(bearer), identity, decision, altered)).toBeUndefined();
    const refused = await kos.deliver(requestWith(bearer), identity, decision, altered);
    expect(refused.body).toMatchObject({ error: { code: 'ERR_DECRYPTION_FAILED' } });
  });

  it('leaves to the full path what needs waiting: a wrapped DEK, a bearer grant, binary bodies', async () => {
    const wrapKey = await exportJWK((await generateKeyPair('ECDH-ES', { crv: 'X25519' })).publicKey);
    const wrapped = await bothWays(await token('dave', 95, wrapKey), { status: 200, body: { data: records } });
    expect((wrapped.full.body as { data: { dekJwe: string } }).data.dekJwe).toMatch(/^ey/);
    expect(wrapped.delivered).toBeUndefined();
    const bearerGrant = await bothWays(await token('erin', 60), { status: 200, body: { data: records } });
    expect(bearerGrant.full.headers['kos-tier']).toBe('medium');
    expect(bearerGrant.delivered).toBeUndefined();
    const binary = await bothWays(await token('alice', 95), {
      status: 200,
      body: encodeEnvelope(kos.keys.decode(records), 'binary'),
    });
    expect(binary.full.transformed).toBe(true);
    expect(binary.delivered).toBeUndefined();
  });

  it('leaves everything to the full path while an audit trail records decisions and releases', async () => {
    const bearer = await token('alice', 95);
    const before = auditRecords.length;
    const { full, now } = await bothWays(bearer, { status: 200, body: { data: records } }, audited.kos);
    expect(full.status).toBe(200);
    expect(full.headers['kos-tier']).toBe('high');
    expect(now).toBeUndefined();
    const admitted = await audited.kos.decide(requestWith(bearer));
    expect(
      audited.kos.deliverNow(requestWith(bearer), admitted.identity, admitted.decision, {
        status: 200,
        body: { data: records },
      }),
    ).toBeUndefined();
    expect(auditRecords.length).toBeGreaterThan(before);
  });

  it('a client that may hold share sets is decided the full way, which drops them when it leaves medium', async () => {
    const high = await token('erin', 95);
    const warm = await bothWays(high, { status: 200, body: { data: records } });
    expect(warm.now?.decision.tier).toBe('high');
    // Medium with a key-bound grant: a share set is provisioned for erin.
    const clientKey = await exportJWK((await generateKeyPair('EdDSA')).publicKey);
    const medium = await bothWays(await token('erin', 70, clientKey), { status: 200, body: { data: records } });
    expect(medium.full.headers['kos-tier']).toBe('medium');
    expect(await runtime.metadata.listShareSets({ owner: 'erin' })).not.toHaveLength(0);
    expect(kos.decideNow(requestWith(high))).toBeUndefined();
    await kos.decide(requestWith(high));
    expect(await runtime.metadata.listShareSets({ owner: 'erin' })).toHaveLength(0);
    expect(kos.decideNow(requestWith(high))?.decision.tier).toBe('high');
  });

  it('a revoked client is refused by the next request, however warm the caches', async () => {
    const bearer = await token('bob', 95);
    const warm = await bothWays(bearer, { status: 200, body: { data: records } });
    expect(warm.delivered).toEqual(warm.full);
    await kos.revokeClient('bob');
    const request = requestWith(bearer);
    const now = kos.decideNow(request);
    const admitted = now ?? (await kos.decide(request));
    const response = { status: 200, body: { data: records } };
    expect(kos.deliverNow(request, admitted.identity, admitted.decision, response)).toBeUndefined();
    const refused = await kos.deliver(request, admitted.identity, admitted.decision, response);
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ error: { code: 'ERR_ACCESS_DENIED' } });
  });

  it('a retired key version is refused by the next request, however warm the caches', async () => {
    const sealed = await kos.seal('retiring', { n: 1 }, { dataId: 'x1' });
    const bearer = await token('alice', 95);
    const warm = await bothWays(bearer, { status: 200, body: { data: sealed } });
    expect(warm.delivered).toEqual(warm.full);
    await kos.keys.rotate('retiring');
    await kos.keys.setMinDecryptVersion('retiring', 2);
    const { identity, decision } = await kos.decide(requestWith(bearer));
    const response = { status: 200, body: { data: sealed } };
    expect(kos.deliverNow(requestWith(bearer), identity, decision, response)).toBeUndefined();
    const refused = await kos.deliver(requestWith(bearer), identity, decision, response);
    expect(refused.body).toMatchObject({ error: { code: 'ERR_KEY_VERSION_RETIRED' } });
  });

  it('a malformed envelope and a score below the floor are answered by the full path, with their codes', async () => {
    const bearer = await token('alice', 95);
    const { identity, decision } = await kos.decide(requestWith(bearer));
    const broken = { status: 200, body: { data: { ...records, ct: `${records.ct}!` } } };
    expect(kos.deliverNow(requestWith(bearer), identity, decision, broken)).toBeUndefined();
    const refused = await kos.deliver(requestWith(bearer), identity, decision, broken);
    expect(refused.body).toMatchObject({ error: { code: 'ERR_RESPONSE_ENVELOPE_INVALID' } });
    const low = await token('carol', 5);
    await kos.decide(requestWith(low)).catch(() => undefined);
    expect(kos.decideNow(requestWith(low))).toBeUndefined();
  });
});
