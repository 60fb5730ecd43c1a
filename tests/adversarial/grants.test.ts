import { join } from 'node:path';
import { createDpopProof, createOpener } from '@kos/core/client';
import { verifyAuditLog } from '@kos/kms-adapters';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { KOS_ISSUER, OTHER_KID, RECORDS_KID } from '../../test-support/deployment.js';
import { FRAMEWORKS } from '../../test-support/frameworks.js';
import { describeDeployment, expectRefused, useDeployment } from './harness.js';
import { claimsOf, getShare, hmacKeysFromPublicJwk, mediumItem, unsignedJwt } from './harness-items.js';

const bearer = (token: string) => `Bearer ${token}`;

/**
 * Attacks on medium-tier grants, against the real `kos-kms` processes of a deployment (three
 * file-backed, two Redis-backed nodes). References are obtained the honest way, through the
 * apps; the attacker then misuses them, or forges grants. Every refusal has its code; the
 * harness scans every answer, stderr and audit file for key, share and token bytes.
 */
describeDeployment('adversarial: grants at the KMS nodes', () => {
  const env = useDeployment();
  const RECORD = '/records/g1';

  beforeAll(async () => {
    await env.d.seed('g1', { diagnosis: 'flu', note: 'grant attacks' });
    await env.d.seed('g-other', { x: 1 }, OTHER_KID);
    await env.d.captureSecrets();
  });

  describe('a medium-tier client fishing for shares it has no right to', () => {
    it("another client's shares with its own grant: ERR_GRANT_WRONG_SHARE", async () => {
      const { d } = env;
      const alice = await mediumItem(d, 'express', 'alice', 70, RECORD);
      const mallory = await mediumItem(d, 'hono', 'mallory', 70, RECORD);
      expect(mallory.key.setId).not.toBe(alice.key.setId);
      for (const share of alice.key.shares) {
        expectRefused(await getShare(d, share.url, bearer(mallory.key.grant)), 403, 'ERR_GRANT_WRONG_SHARE');
      }
    });

    it("the system set's shares with its own grant: ERR_GRANT_WRONG_SHARE", async () => {
      const { d } = env;
      const mallory = await mediumItem(d, 'koa', 'mallory', 70, RECORD);
      const [system] = await d.shareSets({ kid: RECORDS_KID, version: mallory.key.ver, owner: 'system' });
      for (const placement of system!.placements) {
        const url = `${d.node(placement.nodeId).url}/v1/shares/${placement.shareId}`;
        expectRefused(await getShare(d, url, bearer(mallory.key.grant)), 403, 'ERR_GRANT_WRONG_SHARE');
      }
    });

    it('a key it may not read: no reference at all (ERR_ACCESS_DENIED), and no set is made', async () => {
      const { d } = env;
      const answer = await d.call('express', '/records/g-other', {
        token: await d.mintIdentity({ clientId: 'mallory', score: 70 }),
      });
      expectRefused(answer, 403, 'ERR_ACCESS_DENIED');
      expect(await d.shareSets({ kid: OTHER_KID, owner: 'mallory' })).toEqual([]);
    });

    it('grants forged with the KOS key for other clients, keys, versions and sets: ERR_GRANT_WRONG_*', async () => {
      const { d } = env;
      const alice = await mediumItem(d, 'express', 'alice', 70, RECORD);
      const [target] = alice.key.shares;
      const base = {
        clientId: 'mallory',
        kid: RECORDS_KID,
        version: alice.key.ver,
        setId: alice.key.setId,
        shares: { [target!.nodeId]: target!.shareId },
      };
      const cases = [
        [{ ...base }, 'ERR_GRANT_WRONG_CLIENT'],
        [{ ...base, clientId: 'alice', kid: OTHER_KID }, 'ERR_GRANT_WRONG_KEY'],
        [{ ...base, clientId: 'alice', version: alice.key.ver + 1 }, 'ERR_GRANT_WRONG_VERSION'],
        [{ ...base, clientId: 'alice', setId: 'sForgedSetId0000000000' }, 'ERR_GRANT_WRONG_SHARE'],
      ] as const;
      for (const [request, code] of cases) {
        expectRefused(await getShare(d, target!.url, bearer(await d.grant(request))), 403, code);
      }
      // The system set's shares: owned by `system`, never by a client.
      const [system] = await d.shareSets({ kid: RECORDS_KID, version: alice.key.ver, owner: 'system' });
      const placement = system!.placements[0]!;
      const grant = await d.grant({
        clientId: 'mallory',
        kid: RECORDS_KID,
        version: alice.key.ver,
        setId: system!.setId,
        shares: { [placement.nodeId]: placement.shareId },
      });
      const url = `${d.node(placement.nodeId).url}/v1/shares/${placement.shareId}`;
      expectRefused(await getShare(d, url, bearer(grant)), 403, 'ERR_GRANT_WRONG_CLIENT');
    });

    it('a client named "system" gets no grant for the system set (ERR_INVALID_ID)', async () => {
      const { d } = env;
      const answer = await d.call('express', RECORD, {
        token: await d.mintIdentity({ clientId: 'system', score: 70 }),
      });
      expectRefused(answer, 400, 'ERR_INVALID_ID');
    });

    it('a share id that walks out of the store: ERR_INVALID_ID', async () => {
      const { d } = env;
      const alice = await mediumItem(d, 'hono', 'alice', 70, RECORD);
      for (const node of d.nodes) {
        for (const id of ['..%2F..%2Fkeys%2Fkos-signing.jwk', '..%2Fshares', '.hidden', 'a%00b']) {
          expectRefused(
            await getShare(d, `${node.url}/v1/shares/${id}`, bearer(alice.key.grant)),
            400,
            'ERR_INVALID_ID',
          );
        }
      }
    });
  });

  describe('grant replay and reuse across nodes', () => {
    it('a grant is good once per node: a replay is ERR_GRANT_REPLAYED, by any path', async () => {
      const { d } = env;
      const item = await mediumItem(d, 'express', 'bob', 70, RECORD);
      for (const share of item.key.shares) {
        const node = d.node(share.nodeId);
        expect((await getShare(d, share.url, bearer(item.key.grant))).status).toBe(200);
        expectRefused(await getShare(d, share.url, bearer(item.key.grant)), 409, 'ERR_GRANT_REPLAYED');
        // The node's own address (bypassing the front), and the id percent-encoded.
        const direct = `${node.directUrl}/v1/shares/${share.shareId}`;
        expectRefused(await getShare(d, direct, bearer(item.key.grant)), 409, 'ERR_GRANT_REPLAYED');
        const encoded = `${node.directUrl}/v1/shares/${share.shareId.replace('.', '%2E')}`;
        expectRefused(await getShare(d, encoded, bearer(item.key.grant)), 409, 'ERR_GRANT_REPLAYED');
      }
    });

    it('a used grant stays refused after a file-backed and a Redis-backed node restart', async () => {
      const { d } = env;
      const item = await mediumItem(d, 'koa', 'bob', 70, RECORD);
      const file = item.key.shares.find((s) => d.node(s.nodeId).store === 'file')!;
      const redis = item.key.shares.find((s) => d.node(s.nodeId).store === 'redis')!;
      for (const share of [file, redis]) {
        expect((await getShare(d, share.url, bearer(item.key.grant))).status).toBe(200);
        await d.restartNode(share.nodeId);
        expectRefused(await getShare(d, share.url, bearer(item.key.grant)), 409, 'ERR_GRANT_REPLAYED');
      }
    });

    it('a grant for node A presented to node B: ERR_GRANT_WRONG_SHARE (B in the grant) or ERR_GRANT_WRONG_AUDIENCE', async () => {
      const { d } = env;
      // Score 70: n = 5, every node is in the grant; the path names A's share at B.
      const wide = await mediumItem(d, 'express', 'carol', 70, RECORD);
      const [a, b] = wide.key.shares;
      const onB = `${d.node(b!.nodeId).url}/v1/shares/${a!.shareId}`;
      expectRefused(await getShare(d, onB, bearer(wide.key.grant)), 403, 'ERR_GRANT_WRONG_SHARE');
      // Score 55: n = 3, two nodes are not in the grant at all.
      const narrow = await mediumItem(d, 'hono', 'dave', 55, RECORD);
      expect(narrow.key.shares).toHaveLength(3);
      expect(claimsOf(narrow.key.grant).aud).toHaveLength(3);
      const inGrant = new Set(narrow.key.shares.map((s) => s.nodeId));
      const outside = d.nodes.filter((node) => !inGrant.has(node.nodeId));
      expect(outside).toHaveLength(2);
      for (const node of outside) {
        for (const share of narrow.key.shares) {
          const url = `${node.url}/v1/shares/${share.shareId}`;
          expectRefused(await getShare(d, url, bearer(narrow.key.grant)), 403, 'ERR_GRANT_WRONG_AUDIENCE');
        }
      }
      // None of those attempts consumed the grant where it is valid.
      for (const share of narrow.key.shares)
        expect((await getShare(d, share.url, bearer(narrow.key.grant))).status).toBe(200);
    });
  });

  describe('a DPoP-bound grant stolen in transit', () => {
    it('is useless without the holder key: ERR_DPOP_REQUIRED / ERR_DPOP_INVALID, and a captured proof is ERR_DPOP_REPLAYED', async () => {
      const { d } = env;
      await d.access.grant('frank', RECORDS_KID);
      const holder = await generateKeyPair('ES256', { extractable: true });
      const holderJwk = await exportJWK(holder.publicKey);
      const token = await d.mintIdentity({ clientId: 'frank', score: 70, claims: { cnf: { jwk: holderJwk } } });
      const answer = await d.call('hono', RECORD, { token });
      expect(answer.headers.get('kos-tier')).toBe('medium');
      const { key } = answer.body.data as { key: { grant: string; dpop: boolean; shares: Array<{ url: string }> } };
      d.remember('bound grant of frank', key.grant);
      expect(key.dpop).toBe(true);
      const [a, b] = key.shares;
      const proof = async (privateKey: CryptoKey, publicJwk: typeof holderJwk, url: string) => {
        const made = await createDpopProof({
          privateKey,
          publicJwk,
          alg: 'ES256',
          method: 'GET',
          url,
          accessToken: key.grant,
        });
        d.remember(`DPoP proof for ${url}`, made);
        return made;
      };
      const dpop = (url: string, proofText?: string) =>
        d.fetch(url, { headers: { authorization: `DPoP ${key.grant}`, ...(proofText ? { dpop: proofText } : {}) } });
      expectRefused(await getShare(d, a!.url, bearer(key.grant)), 401, 'ERR_DPOP_REQUIRED');
      expectRefused(await dpop(a!.url), 401, 'ERR_DPOP_REQUIRED');
      const thief = await generateKeyPair('ES256', { extractable: true });
      const thiefProof = await proof(thief.privateKey, await exportJWK(thief.publicKey), a!.url);
      expectRefused(await dpop(a!.url, thiefProof), 401, 'ERR_DPOP_INVALID');
      // The holder's proof for another share (another URL), captured and replayed here.
      expectRefused(await dpop(a!.url, await proof(holder.privateKey, holderJwk, b!.url)), 401, 'ERR_DPOP_INVALID');
      // A proof captured on its way to the node: the holder's use wins, the copy is a replay.
      const captured = await proof(holder.privateKey, holderJwk, a!.url);
      expect((await dpop(a!.url, captured)).status).toBe(200);
      expectRefused(await dpop(a!.url, captured), 409, 'ERR_DPOP_REPLAYED');
    });
  });

  describe('grant forgery', () => {
    it('forged, unsigned, HMAC-with-public-key, self-keyed, tampered, expired and overlong grants: ERR_GRANT_INVALID / _EXPIRED', async () => {
      const { d } = env;
      const item = await mediumItem(d, 'koa', 'eve', 70, RECORD);
      const share = item.key.shares[0]!;
      const claims = claimsOf(item.key.grant);
      const now = Math.floor(Date.now() / 1000);
      const attacker = await generateKeyPair('EdDSA', { extractable: true });
      const sign = (payload: Record<string, unknown>, header: Record<string, unknown>, key: CryptoKey | Uint8Array) =>
        new SignJWT(payload).setProtectedHeader({ alg: 'EdDSA', typ: 'kos-grant+jwt', ...header }).sign(key);
      const forged: Array<[string, string, number, string]> = [
        ['signed by another key', await sign(claims, {}, attacker.privateKey), 401, 'ERR_GRANT_INVALID'],
        [
          'signed by another key that the header names',
          await sign(claims, { jwk: await exportJWK(attacker.publicKey) }, attacker.privateKey),
          401,
          'ERR_GRANT_INVALID',
        ],
        ['alg: none', unsignedJwt({ typ: 'kos-grant+jwt' }, claims), 401, 'ERR_GRANT_INVALID'],
        [
          'another issuer (KOS key)',
          await sign({ ...claims, iss: 'https://evil.test', jti: `${claims.jti}x` }, {}, d.signingKey),
          401,
          'ERR_GRANT_INVALID',
        ],
        [
          'lifetime over 60 s (KOS key)',
          await sign({ ...claims, iat: now, exp: now + 3600, jti: `${claims.jti}y` }, {}, d.signingKey),
          401,
          'ERR_GRANT_INVALID',
        ],
        [
          'tampered payload (sub) under the original signature',
          (() => {
            const [h, , s] = item.key.grant.split('.');
            const p = Buffer.from(JSON.stringify({ ...claims, sub: 'alice' })).toString('base64url');
            return `${h}.${p}.${s}`;
          })(),
          401,
          'ERR_GRANT_INVALID',
        ],
        [
          'expired (KOS key)',
          await d.grant(
            {
              clientId: 'eve',
              kid: RECORDS_KID,
              version: item.key.ver,
              setId: item.key.setId,
              shares: { [share.nodeId]: share.shareId },
            },
            { clock: () => Date.now() - 10 * 60_000 },
          ),
          401,
          'ERR_GRANT_EXPIRED',
        ],
        [
          'an identity token (signed by the identity provider)',
          await d.mintIdentity({ clientId: 'eve', score: 70, claims: { ...claims, iss: KOS_ISSUER } }),
          401,
          'ERR_GRANT_INVALID',
        ],
        ['a service token for this node', await d.serviceToken(share.nodeId), 401, 'ERR_TOKEN_WRONG_TYPE'],
      ];
      for (const secret of hmacKeysFromPublicJwk(d.signingPublicJwk as Record<string, unknown>)) {
        const token = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'kos-grant+jwt' }).sign(secret);
        forged.push(['HS256 keyed with the KOS public key', token, 401, 'ERR_GRANT_INVALID']);
      }
      for (const [what, token, status, code] of forged) {
        d.remember(`attack grant: ${what}`, token);
        const answer = await getShare(d, share.url, bearer(token));
        expect(answer.body?.error?.code, what).toBe(code);
        expectRefused(answer, status, code);
      }
      // A grant offered as a service token, and a bearer grant in the DPoP scheme.
      expectRefused(await getShare(d, share.url, `KOS-Service ${item.key.grant}`), 401, 'ERR_TOKEN_WRONG_TYPE');
      expectRefused(await getShare(d, share.url, `DPoP ${item.key.grant}`), 401, 'ERR_DPOP_INVALID');
      // After all that, the genuine grant still works once: refusals do not consume it.
      expect((await getShare(d, share.url, bearer(item.key.grant))).status).toBe(200);
    });
  });

  it('a destroyed version: no reference (ERR_KEY_VERSION_DESTROYED) and outstanding grants find no share', async () => {
    const { d } = env;
    await d.runtime.kos.keys.createKey('ephemeral');
    await d.access.grant('erin', 'ephemeral');
    await d.seed('e1', { kept: 'until destroyed' }, 'ephemeral');
    const item = await mediumItem(d, 'express', 'erin', 70, '/records/e1');
    await d.captureSecrets();
    await d.runtime.kos.keys.rotate('ephemeral');
    await d.runtime.kos.keys.setMinDecryptVersion('ephemeral', 2);
    const token = await d.mintIdentity({ clientId: 'erin', score: 70 });
    expectRefused(await d.call('koa', '/records/e1', { token }), 410, 'ERR_KEY_VERSION_RETIRED');
    await d.runtime.kos.keys.destroyVersion('ephemeral', 1);
    for (const framework of FRAMEWORKS) {
      expectRefused(await d.call(framework, '/records/e1', { token }), 410, 'ERR_KEY_VERSION_DESTROYED');
    }
    for (const share of item.key.shares) {
      expectRefused(await getShare(d, share.url, bearer(item.key.grant)), 404, 'ERR_SHARE_NOT_FOUND');
    }
    expect(await d.shareSets({ kid: 'ephemeral', version: 1 })).toEqual([]);
    d.db.delete('e1');
  });

  describe.each(FRAMEWORKS)('score drop, band change and revocation (%s)', (framework) => {
    it('a score drop mid-session: outstanding grants then find no share (ERR_SHARE_NOT_FOUND)', async () => {
      const { d } = env;
      const client = `drop-${framework}`;
      await d.access.grant(client, RECORDS_KID);
      const item = await mediumItem(d, framework, client, 70, RECORD);
      await d.captureSecrets();
      const low = await d.call(framework, RECORD, { token: await d.mintIdentity({ clientId: client, score: 30 }) });
      expect(low.status).toBe(200);
      expect(low.headers.get('kos-tier')).toBe('low');
      expect(await d.shareSets({ owner: client })).toEqual([]);
      for (const share of item.key.shares) {
        expectRefused(await getShare(d, share.url, bearer(item.key.grant)), 404, 'ERR_SHARE_NOT_FOUND');
      }
      await expect(createOpener().open(item)).rejects.toMatchObject({ code: 'ERR_SHARES_INSUFFICIENT' });
    });

    /**
     * A low score seen on any decided request drops the client's medium sets — also when no
     * route answers (Express's own 404): the drop happens at the decision, before the route.
     */
    it('a score drop seen on a request no route answers (404): the sets are deleted all the same', async () => {
      const { d } = env;
      const client = `drop404-${framework}`;
      await d.access.grant(client, RECORDS_KID);
      const item = await mediumItem(d, framework, client, 70, RECORD);
      await d.captureSecrets();
      const low = await d.call(framework, '/no-such-route', {
        token: await d.mintIdentity({ clientId: client, score: 30 }),
      });
      expect(low.status).toBe(404);
      expect(low.headers.get('kos-tier')).toBe('low');
      expect(await d.shareSets({ owner: client })).toEqual([]);
      const share = item.key.shares[0]!;
      expectRefused(await getShare(d, share.url, bearer(item.key.grant)), 404, 'ERR_SHARE_NOT_FOUND');
    });

    it("a band change (n, k) re-provisions: the old set's grants find no share, the new set opens", async () => {
      const { d } = env;
      const client = `band-${framework}`;
      await d.access.grant(client, RECORDS_KID);
      const before = await mediumItem(d, framework, client, 70, RECORD);
      await d.captureSecrets();
      const after = await mediumItem(d, framework, client, 55, RECORD);
      expect(after.key.setId).not.toBe(before.key.setId);
      for (const share of before.key.shares) {
        expectRefused(await getShare(d, share.url, bearer(before.key.grant)), 404, 'ERR_SHARE_NOT_FOUND');
      }
      const opened = new TextDecoder().decode(await createOpener().open(after));
      expect(JSON.parse(opened)).toEqual({ diagnosis: 'flu', note: 'grant attacks' });
    });

    it('a revoked client gets 403 ERR_ACCESS_DENIED and its grants stop working', async () => {
      const { d } = env;
      const client = `revoked-${framework}`;
      await d.access.grant(client, RECORDS_KID);
      const item = await mediumItem(d, framework, client, 70, RECORD);
      await d.captureSecrets();
      await d.runtime.kos.revokeClient(client);
      for (const score of [30, 70, 95]) {
        const answer = await d.call(framework, RECORD, { token: await d.mintIdentity({ clientId: client, score }) });
        expectRefused(answer, 403, 'ERR_ACCESS_DENIED');
        expect(answer.text).not.toContain('flu');
      }
      for (const share of item.key.shares) {
        expectRefused(await getShare(d, share.url, bearer(item.key.grant)), 404, 'ERR_SHARE_NOT_FOUND');
      }
      expect(await d.shareSets({ owner: client })).toEqual([]);
    });
  });

  // Last: it reads what every attack above left in the audit trails.
  it('the audit trails recorded the attacks (refusals with their codes, pseudonymised) and verify intact', async () => {
    const { d } = env;
    const codes = new Set<string>();
    for (const node of d.nodes) {
      const records = await d.auditRecords(node.nodeId);
      for (const record of records) if (record.type === 'grant.refused') codes.add(record.code);
      const redeemed = records.filter((record) => record.type === 'grant.redeemed');
      expect(redeemed.length, `${node.nodeId} grant.redeemed`).toBeGreaterThan(0);
      for (const record of redeemed) expect(record.client, JSON.stringify(record)).toMatch(/^[A-Za-z0-9_-]{16,}$/);
      const text = (await d.logs()).find((log) => log.source === `${node.nodeId} audit`)!.text;
      expect(text).not.toMatch(/"(alice|mallory|bob|carol|eve)"/);
      expect(await verifyAuditLog(node.auditLog)).toMatchObject({ ok: true });
    }
    for (const code of [
      'ERR_GRANT_WRONG_SHARE',
      'ERR_GRANT_WRONG_CLIENT',
      'ERR_GRANT_WRONG_AUDIENCE',
      'ERR_GRANT_REPLAYED',
      'ERR_GRANT_INVALID',
      'ERR_DPOP_INVALID',
      'ERR_SHARE_NOT_FOUND',
    ]) {
      expect(codes).toContain(code);
    }
    const kos = await d.auditRecords();
    const refusedReleases = kos.filter((record) => record.type === 'key.released' && record.outcome === 'error');
    expect(refusedReleases.map((record) => record.code)).toEqual(
      expect.arrayContaining(['ERR_ACCESS_DENIED', 'ERR_INVALID_ID', 'ERR_KEY_VERSION_DESTROYED']),
    );
    expect(kos.filter((record) => record.type === 'client.revoked')).toHaveLength(FRAMEWORKS.length);
    const kosLog = join(d.dir, 'audit', 'kos.jsonl');
    expect(await verifyAuditLog(kosLog, { publicKey: d.signingPublicJwk })).toMatchObject({ ok: true });
  });
});
