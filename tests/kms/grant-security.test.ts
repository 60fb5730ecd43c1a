import {
  createMediumReference,
  createTokenIssuer,
  encodeEnvelope,
  jwkThumbprint,
  type MediumKeyReference,
  utf8,
} from '@kos/core';
import { createDpopProof } from '@kos/core/client';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KmsCluster, startKmsCluster } from '../../test-support/kms-cluster.js';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisServer,
  startRedisServer,
} from '../../test-support/redis-server.js';

const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
const describeRedis = haveRedis ? describe : describe.skip;

interface Answer {
  status: number;
  body: { share?: { value?: string }; error?: { code: string; message: string } };
  text: string;
}

async function call(url: string, headers: Record<string, string>, method = 'GET', body?: string): Promise<Answer> {
  const response = await fetch(url, { method, headers, ...(body ? { body } : {}) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : {}, text };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/**
 * Attacks on the KMS node share API, against real `kos-kms` processes (two Redis-backed, one
 * file-backed). Each is refused with its own code, and no refusal leaks a token or share bytes.
 */
describeRedis('grants at the KMS node', () => {
  let redis: RedisServer;
  let cluster: KmsCluster;
  let reference: MediumKeyReference;
  /** Share of client-a on node-1 (Redis-backed). */
  let target: MediumKeyReference['shares'][number];
  const refusals: Answer[] = [];

  async function freshReference(clientId = 'client-a', version = 1): Promise<MediumKeyReference> {
    return createMediumReference({
      keys: cluster.keys,
      tokens: cluster.identity.tokens,
      nodes: cluster.directory,
      clientId,
      kid: 'records',
      version,
      n: 3,
      k: 2,
    });
  }

  async function refused(answer: Promise<Answer>, status: number, code: string): Promise<void> {
    const result = await answer;
    refusals.push(result);
    expect(result.body.error?.code, result.text).toBe(code);
    expect(result.status).toBe(status);
    expect(Object.keys(result.body)).toEqual(['error']);
  }

  beforeAll(async () => {
    redis = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
    cluster = await startKmsCluster({ stores: ['redis', 'redis', 'file'], redis, systemShares: { n: 3, k: 2 } });
    await cluster.keys.createKey('records');
    await cluster.keys.seal('records', utf8('secret'), { dataId: 'r1' });
    reference = await freshReference();
    target = reference.shares.find((s) => s.nodeId === 'node-1')!;
  }, 60_000);

  afterAll(async () => {
    // Nothing secret in any refusal: no grant text, no share value.
    for (const answer of refusals) {
      expect(answer.text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);
      expect(answer.text).not.toMatch(/"value"/);
    }
    for (const node of cluster?.nodes ?? []) expect(node.stderr.join('\n')).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);
    await cluster?.stop();
    await redis?.stop();
  });

  it('a grant is accepted once per node, then refused as replayed', async () => {
    const ref = await freshReference();
    const share = ref.shares.find((s) => s.nodeId === 'node-1')!;
    const first = await call(share.url, bearer(ref.grant));
    expect(first.status).toBe(200);
    expect(first.body.share?.value).toMatch(/^[A-Za-z0-9_-]{44}$/);
    await refused(call(share.url, bearer(ref.grant)), 409, 'ERR_GRANT_REPLAYED');
    // The same grant still works once at another node it names.
    const other = ref.shares.find((s) => s.nodeId === 'node-2')!;
    expect((await call(other.url, bearer(ref.grant))).status).toBe(200);
  });

  it('50 concurrent uses of one grant: exactly one succeeds', async () => {
    const ref = await freshReference();
    const share = ref.shares.find((s) => s.nodeId === 'node-2')!;
    const answers = await Promise.all(Array.from({ length: 50 }, () => call(share.url, bearer(ref.grant))));
    expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
    const others = answers.filter((a) => a.status !== 200);
    expect(others).toHaveLength(49);
    expect(new Set(others.map((a) => a.body.error?.code))).toEqual(new Set(['ERR_GRANT_REPLAYED']));
  });

  it('a used grant stays refused after the Redis-backed node restarts', async () => {
    const ref = await freshReference();
    const share = ref.shares.find((s) => s.nodeId === 'node-1')!;
    expect((await call(share.url, bearer(ref.grant))).status).toBe(200);
    await cluster.restartNode(0);
    await refused(call(share.url, bearer(ref.grant)), 409, 'ERR_GRANT_REPLAYED');
  });

  it('refuses an expired grant', async () => {
    const past = createTokenIssuer({
      issuer: cluster.identity.issuer,
      privateKey: cluster.identity.privateKey,
      clock: () => Date.now() - 10 * 60_000,
    });
    const grant = await past.issueGrant({
      clientId: 'client-a',
      kid: 'records',
      version: 1,
      setId: reference.setId,
      shares: { 'node-1': target.shareId },
    });
    await refused(call(target.url, bearer(grant.token)), 401, 'ERR_GRANT_EXPIRED');
  });

  it('refuses a grant for another node', async () => {
    const grant = await cluster.identity.tokens.issueGrant({
      clientId: 'client-a',
      kid: 'records',
      version: 1,
      setId: reference.setId,
      shares: { 'node-3': target.shareId },
    });
    await refused(call(target.url, bearer(grant.token)), 403, 'ERR_GRANT_WRONG_AUDIENCE');
  });

  it('refuses a grant for another share', async () => {
    const system = (await cluster.metadata.listShareSets({ kid: 'records', owner: 'system' }))[0]!;
    const systemShare = system.placements.find((p) => p.nodeId === 'node-1')!;
    const ref = await freshReference();
    await refused(
      call(target.url.replace(target.shareId, systemShare.shareId), bearer(ref.grant)),
      403,
      'ERR_GRANT_WRONG_SHARE',
    );
  });

  it('refuses a grant for another version', async () => {
    const grant = await cluster.identity.tokens.issueGrant({
      clientId: 'client-a',
      kid: 'records',
      version: 7,
      setId: reference.setId,
      shares: { 'node-1': target.shareId },
    });
    await refused(call(target.url, bearer(grant.token)), 403, 'ERR_GRANT_WRONG_VERSION');
  });

  it("refuses a grant naming another client's share", async () => {
    const grant = await cluster.identity.tokens.issueGrant({
      clientId: 'mallory',
      kid: 'records',
      version: 1,
      setId: reference.setId,
      shares: { 'node-1': target.shareId },
    });
    await refused(call(target.url, bearer(grant.token)), 403, 'ERR_GRANT_WRONG_CLIENT');
  });

  it('refuses alg none, HS256 signed with the public key, and a header jwk', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: cluster.identity.issuer,
      aud: ['node-1'],
      sub: 'client-a',
      iat: now,
      exp: now + 30,
      jti: 'forged-grant-0000000001',
      key: 'records',
      ver: 1,
      set: reference.setId,
      shr: { 'node-1': target.shareId },
    };
    const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    await refused(
      call(target.url, bearer(`${b64({ alg: 'none', typ: 'kos-grant+jwt' })}.${b64(claims)}.`)),
      401,
      'ERR_GRANT_INVALID',
    );
    const hs = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', typ: 'kos-grant+jwt' })
      .sign(new TextEncoder().encode(JSON.stringify(cluster.identity.publicJwk)));
    await refused(call(target.url, bearer(hs)), 401, 'ERR_GRANT_INVALID');
    const attacker = await generateKeyPair('EdDSA', { extractable: true });
    const withJwk = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'EdDSA', typ: 'kos-grant+jwt', jwk: await exportJWK(attacker.publicKey) })
      .sign(attacker.privateKey);
    await refused(call(target.url, bearer(withJwk)), 401, 'ERR_GRANT_INVALID');
  });

  it('refuses a service token used as a grant, and a grant used as a service token', async () => {
    const service = await cluster.identity.tokens.issueServiceToken('node-1');
    await refused(call(target.url, bearer(service.token)), 401, 'ERR_TOKEN_WRONG_TYPE');
    const ref = await freshReference();
    await refused(
      call(target.url, { authorization: `KOS-Service ${ref.grant}` }, 'DELETE'),
      401,
      'ERR_TOKEN_WRONG_TYPE',
    );
    // The share survived the attempted delete.
    expect((await call(target.url, bearer(ref.grant))).status).toBe(200);
  });

  it('a DPoP-bound grant needs its holder proof, each proof once; the holder may reuse the grant', async () => {
    const holder = await generateKeyPair('EdDSA', { extractable: true });
    const holderJwk = await exportJWK(holder.publicKey);
    const ref = await createMediumReference({
      keys: cluster.keys,
      tokens: cluster.identity.tokens,
      nodes: cluster.directory,
      clientId: 'client-a',
      kid: 'records',
      version: 1,
      n: 3,
      k: 2,
      dpopJkt: await jwkThumbprint(holderJwk),
    });
    const share = ref.shares.find((s) => s.nodeId === 'node-1')!;
    const proof = (key = holder.privateKey, jwk = holderJwk) =>
      createDpopProof({ privateKey: key, publicJwk: jwk, method: 'GET', url: share.url, accessToken: ref.grant });

    await refused(call(share.url, bearer(ref.grant)), 401, 'ERR_DPOP_REQUIRED');
    const thief = await generateKeyPair('EdDSA', { extractable: true });
    const stolen = await proof(thief.privateKey, await exportJWK(thief.publicKey));
    await refused(call(share.url, { authorization: `DPoP ${ref.grant}`, dpop: stolen }), 401, 'ERR_DPOP_INVALID');

    const good = await proof();
    expect((await call(share.url, { authorization: `DPoP ${ref.grant}`, dpop: good })).status).toBe(200);
    await refused(call(share.url, { authorization: `DPoP ${ref.grant}`, dpop: good }), 409, 'ERR_DPOP_REPLAYED');
    expect((await call(share.url, { authorization: `DPoP ${ref.grant}`, dpop: await proof() })).status).toBe(200);
  });

  it('refuses requests without credentials, with bad ids, and oversize bodies with typed errors', async () => {
    await refused(call(target.url, {}), 401, 'ERR_UNAUTHENTICATED');
    await refused(call(`${cluster.directory.get('node-1')}/v1/shares/..%2Fetc`, bearer('x')), 400, 'ERR_INVALID_ID');
    const service = await cluster.identity.tokens.issueServiceToken('node-1');
    await refused(
      call(
        target.url,
        { authorization: `KOS-Service ${service.token}`, 'content-type': 'application/json' },
        'PUT',
        'x'.repeat(64 * 1024),
      ),
      413,
      'ERR_REQUEST_TOO_LARGE',
    );
    await refused(call(`${cluster.directory.get('node-1')}/v1/nothing`, {}), 404, 'ERR_ROUTE_NOT_FOUND');
  });
});

describeRedis('medium-tier provisioning', () => {
  let redis: RedisServer;
  let cluster: KmsCluster;

  beforeAll(async () => {
    redis = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
    cluster = await startKmsCluster({ stores: ['file', 'file', 'redis', 'redis', 'file'], redis });
    await cluster.keys.createKey('records');
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    await redis?.stop();
  });

  const reference = (n: number, k: number) =>
    createMediumReference({
      keys: cluster.keys,
      tokens: cluster.identity.tokens,
      nodes: cluster.directory,
      clientId: 'client-b',
      kid: 'records',
      version: 1,
      n,
      k,
    });

  it('a score change that changes (n, k) re-provisions; the old set and its grants stop working', async () => {
    const first = await reference(5, 4);
    const again = await reference(5, 4);
    expect(again.setId).toBe(first.setId);
    const moved = await reference(4, 3);
    expect(moved.setId).not.toBe(first.setId);
    expect(moved.shares).toHaveLength(4);
    const old = first.shares[0]!;
    const answer = await call(old.url, bearer(first.grant));
    expect(answer.body.error?.code).toBe('ERR_SHARE_NOT_FOUND');
  });

  it('revocation (or a drop out of medium) deletes the client sets: outstanding grants stop working', async () => {
    const live = await reference(3, 2);
    expect(await cluster.keys.deleteClientSets('client-b')).toBeGreaterThanOrEqual(1);
    for (const share of live.shares) {
      expect((await call(share.url, bearer(live.grant))).body.error?.code).toBe('ERR_SHARE_NOT_FOUND');
    }
    const envelope = encodeEnvelope(await cluster.keys.seal('records', utf8('still fine'), { dataId: 'r2' }), 'json');
    cluster.keys.clearCache();
    expect(new TextDecoder().decode(await cluster.keys.open(envelope))).toBe('still fine');
  });
});
