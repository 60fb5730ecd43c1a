import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createOpener } from '@kos/core/client';
import { createApp } from '@kos/example-express';
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KmsNodeProcess, startKmsProcess } from '../../test-support/kms-process.js';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisServer,
  startRedisServer,
} from '../../test-support/redis-server.js';

const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
const describeRedis = haveRedis ? describe : describe.skip;

/**
 * The same example app, unchanged, on three configurations given only as a KOS_CONFIG file:
 * in-process file nodes, in-process Redis nodes with Redis metadata, and remote `kos-kms`
 * processes over HTTP. Swapping adapters needs no code change.
 */
describeRedis('configuration swaps KMS adapters without code changes', () => {
  let dir: string;
  let redis: RedisServer;
  let identityKey: CryptoKey;
  const processes: KmsNodeProcess[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-config-'));
    redis = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
    const identity = await generateKeyPair('EdDSA', { extractable: true });
    identityKey = identity.privateKey;
    await writeFile(
      join(dir, 'idp.jwks.json'),
      JSON.stringify({ keys: [{ ...(await exportJWK(identity.publicKey)), alg: 'EdDSA' }] }),
    );
    const signing = await generateKeyPair('EdDSA', { extractable: true });
    await writeFile(join(dir, 'kos-signing.jwk.json'), JSON.stringify(await exportJWK(signing.privateKey)), {
      mode: 0o600,
    });
    await writeFile(
      join(dir, 'kos-public.jwks.json'),
      JSON.stringify({ keys: [{ ...(await exportJWK(signing.publicKey)), alg: 'EdDSA' }] }),
    );
    for (let i = 1; i <= 5; i++) {
      processes.push(
        await startKmsProcess({
          nodeId: `node-${i}`,
          issuer: 'https://kos.config.test',
          jwksPath: join(dir, 'kos-public.jwks.json'),
          store: 'file',
          dir: join(dir, 'remote', `node-${i}`),
        }),
      );
    }
  }, 60_000);

  afterAll(async () => {
    await Promise.all(processes.map((node) => node.stop()));
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const common = () => ({
    issuer: 'https://kos.config.test',
    signingKeyFile: 'kos-signing.jwk.json',
    identity: { issuer: 'https://idp.test', audience: 'records', algorithms: ['EdDSA'], jwksFile: 'idp.jwks.json' },
    access: { defaultDeny: false },
    autoCreateKeys: true,
  });

  const configs: Array<[string, () => object]> = [
    [
      'in-process file nodes, file metadata',
      () => ({
        ...common(),
        metadata: { kind: 'file', dir: 'meta-file' },
        nodes: [1, 2, 3, 4, 5].map((i) => ({ nodeId: `node-${i}`, kind: 'file', dir: `local/node-${i}` })),
      }),
    ],
    [
      'in-process Redis nodes, Redis metadata',
      () => ({
        ...common(),
        metadata: { kind: 'redis', url: redis.url },
        nodes: [1, 2, 3, 4, 5].map((i) => ({ nodeId: `node-${i}`, kind: 'redis', url: redis.url })),
      }),
    ],
    [
      'remote kos-kms processes over HTTP, file metadata',
      () => ({
        ...common(),
        metadata: { kind: 'file', dir: 'meta-http' },
        nodes: processes.map((node) => ({ nodeId: node.nodeId, kind: 'http', url: node.url })),
      }),
    ],
  ];

  it.each(configs)('%s: all three tiers work', async (name, makeConfig) => {
    const configPath = join(dir, `${name.replace(/\W+/g, '-')}.json`);
    await writeFile(configPath, JSON.stringify(makeConfig()));
    const { app, kos, runtime } = await createApp({ env: { KOS_CONFIG: configPath } });
    expect(runtime.mode).toBe('configured');
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const token = (score: number) =>
      new SignJWT({ trust_score: score })
        .setProtectedHeader({ alg: 'EdDSA' })
        .setIssuer('https://idp.test')
        .setAudience('records')
        .setSubject(`client-${score}`)
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(identityKey);
    try {
      const created = await fetch(`${base}/records`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await token(90)}`, 'content-type': 'application/json' },
        body: JSON.stringify({ config: name }),
      });
      expect(created.status).toBe(201);
      const { id } = (await created.json()) as { id: string };
      for (const [score, tier] of [
        [30, 'low'],
        [65, 'medium'],
        [90, 'high'],
      ] as const) {
        const response = await fetch(`${base}/records/${id}`, {
          headers: { authorization: `Bearer ${await token(score)}` },
        });
        expect(response.headers.get('kos-tier')).toBe(tier);
        const opened = (await createOpener().openBody(await response.json())) as { data: unknown };
        expect(opened.data).toEqual({ config: name });
      }
    } finally {
      server.close();
      await kos.close();
    }
  });
});
