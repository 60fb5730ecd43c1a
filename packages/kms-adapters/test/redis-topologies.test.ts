import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster, Redis } from 'ioredis';
import { exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RedisSentinelSetup, startRedisSentinel } from '../../../test-support/redis-sentinel.js';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisCluster,
  sendRedisCommand,
  startRedisCluster,
  startRedisServer,
} from '../../../test-support/redis-server.js';
import {
  createKosRuntime,
  createRedisMetadataStore,
  createRedisShareStore,
  type KosRuntime,
  loadKosConfigFile,
  type RedisMetadataStore,
} from '../src/index.js';
import { openRedisConnection, type RedisConnectionConfig } from '../src/redis/redis-connection.js';
import { makeShare, runMetadataStoreConformance, runShareStoreConformance } from '../src/testing/index.js';

const binary = findRedisServerBinary();
if (binary === undefined) console.warn(REDIS_SKIP_WARNING);
const describeRedis = binary === undefined ? describe.skip : describe;

let prefixCounter = 0;
function nextPrefix(): string {
  prefixCounter += 1;
  return `t${prefixCounter}-${process.pid}:`;
}

/** Deletes a test's keys on every master (one by one: a Cluster refuses multi-slot commands). */
async function deleteKeys(client: Redis | Cluster, prefix: string): Promise<void> {
  const masters = 'nodes' in client && typeof client.nodes === 'function' ? client.nodes('master') : [client as Redis];
  for (const node of masters) for (const key of await node.keys(`${prefix}*`)) await client.unlink(key);
}

/** A folder with the key files a JSON configuration names (signing key, identity JWKS). */
async function configFolder(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kos-topology-'));
  const signing = await generateKeyPair('EdDSA', { extractable: true });
  await writeFile(join(dir, 'kos-signing.jwk.json'), JSON.stringify(await exportJWK(signing.privateKey)), {
    mode: 0o600,
  });
  const identity = await generateKeyPair('EdDSA', { extractable: true });
  await writeFile(
    join(dir, 'idp.jwks.json'),
    JSON.stringify({ keys: [{ ...(await exportJWK(identity.publicKey)), alg: 'EdDSA' }] }),
  );
  return dir;
}

/** Writes a KOS_CONFIG file whose metadata and five in-process nodes all use `redis` (a connection). */
async function writeConfig(dir: string, name: string, redis: RedisConnectionConfig, extra: object = {}) {
  const path = join(dir, `${name}.json`);
  await writeFile(
    path,
    JSON.stringify({
      issuer: 'https://kos.topology.test',
      signingKeyFile: 'kos-signing.jwk.json',
      identity: { issuer: 'https://idp.test', audience: 'records', algorithms: ['EdDSA'], jwksFile: 'idp.jwks.json' },
      metadata: { kind: 'redis', ...redis },
      nodes: [1, 2, 3, 4, 5].map((i) => ({ nodeId: `${name}-node-${i}`, kind: 'redis', ...redis })),
      access: { defaultDeny: false },
      autoCreateKeys: true,
      ...extra,
    }),
  );
  return path;
}

/** Seals through the runtime and opens again (a DEK rebuilt from shares on the nodes). */
async function roundTrip(runtime: KosRuntime, dataId: string, value: unknown): Promise<unknown> {
  const envelope = await runtime.kos.seal('records', value, { dataId });
  runtime.kos.keys.clearCache();
  return JSON.parse(new TextDecoder().decode(await runtime.kos.keys.open(envelope, { dataId })));
}

/** Retries `call` until it succeeds (a failover makes calls fail with ERR_STORE_IO for a moment). */
async function eventually<T>(call: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describeRedis('Redis Sentinel from configuration (a real master, replica and sentinel)', () => {
  let setup: RedisSentinelSetup;
  let dir: string;
  const sentinel = (): RedisConnectionConfig => ({ sentinels: [...setup.sentinelEndpoints], name: setup.masterName });

  beforeAll(async () => {
    setup = (await startRedisSentinel({ replicas: 1, sentinels: 1 })) as RedisSentinelSetup;
    dir = await configFolder();
  }, 60_000);

  afterAll(async () => {
    await setup?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  runShareStoreConformance('redis through sentinel', async () => {
    const client = await openRedisConnection(sentinel(), { what: 'test' });
    const keyPrefix = nextPrefix();
    return {
      store: createRedisShareStore({ nodeId: 'node-1', redis: client, keyPrefix, requirePersistence: 'refuse' }),
      cleanup: async () => {
        await deleteKeys(client, keyPrefix);
        await client.quit();
      },
    };
  });

  runMetadataStoreConformance('redis through sentinel', async () => {
    const client = await openRedisConnection(sentinel(), { what: 'test' });
    const keyPrefix = nextPrefix();
    return {
      store: createRedisMetadataStore({ redis: client, keyPrefix, requirePersistence: 'refuse' }),
      cleanup: async () => {
        await deleteKeys(client, keyPrefix);
        await client.quit();
      },
    };
  });

  it('connects to the master the sentinel names, not to the replica', async () => {
    const client = (await openRedisConnection(sentinel(), { what: 'test' })) as Redis;
    try {
      const [, port] = (await client.config('GET', 'port')) as [string, string];
      expect(Number(port)).toBe(await setup.masterPort());
      expect(await client.role()).toEqual(expect.arrayContaining(['master']));
    } finally {
      await client.quit();
    }
  });

  it('a runtime from a KOS_CONFIG file with Sentinel metadata and Sentinel-backed nodes seals and opens, and goes on after a failover', {
    timeout: 90_000,
  }, async () => {
    const path = await writeConfig(dir, 'sentinel', sentinel());
    const runtime = await createKosRuntime({ config: loadKosConfigFile(path), env: {} });
    try {
      expect(runtime.metadataKind).toBe('redis');
      expect(await roundTrip(runtime, 'before-failover', { n: 1 })).toEqual({ n: 1 });
      const sealed = await runtime.kos.seal('records', { kept: true }, { dataId: 'kept' });
      await setup.sync();

      const oldMaster = await setup.masterPort();
      const newMaster = await setup.failover();
      expect(newMaster).not.toBe(oldMaster);

      // Calls fail with ERR_STORE_IO while ioredis asks the sentinel again; then the new master answers.
      runtime.kos.keys.clearCache();
      const opened = await eventually(() => runtime.kos.keys.open(sealed, { dataId: 'kept' }));
      expect(JSON.parse(new TextDecoder().decode(opened))).toEqual({ kept: true });
      expect(await eventually(() => roundTrip(runtime, 'after-failover', { n: 2 }))).toEqual({ n: 2 });
      // The rotation writes (lock, shares, compare-and-set) go to the new master.
      const rotated = await eventually(() => runtime.kos.keys.rotate('records'));
      expect(rotated.version).toBe(2);
    } finally {
      await runtime.close();
    }
  });
});

describeRedis('Redis Cluster from configuration (three real masters)', () => {
  let cluster: RedisCluster;
  let dir: string;

  beforeAll(async () => {
    cluster = (await startRedisCluster({ masters: 3 })) as RedisCluster;
    dir = await configFolder();
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a runtime from a KOS_CONFIG file with Cluster metadata and Cluster-backed nodes seals, opens and rotates', {
    timeout: 60_000,
  }, async () => {
    const path = await writeConfig(
      dir,
      'cluster',
      { cluster: [...cluster.startupNodes] },
      { systemShares: { n: 5, k: 3 } },
    );
    const runtime = await createKosRuntime({ config: loadKosConfigFile(path), env: {} });
    try {
      expect(await roundTrip(runtime, 'c1', { cluster: true })).toEqual({ cluster: true });
      await runtime.kos.keys.rotate('records');
      expect(await roundTrip(runtime, 'c2', { cluster: 2 })).toEqual({ cluster: 2 });
      const status = await (runtime.metadata as RedisMetadataStore).checkPersistence();
      expect(status.servers).toHaveLength(3);
    } finally {
      await runtime.close();
    }
  });

  it('a Cluster connection from configuration runs a share store (shares spread over the masters by node)', async () => {
    const client = await openRedisConnection({ cluster: [...cluster.startupNodes] }, { what: 'test' });
    const keyPrefix = nextPrefix();
    try {
      for (let n = 0; n < 6; n++) {
        const store = createRedisShareStore({
          nodeId: `node-${n}`,
          redis: client,
          keyPrefix,
          requirePersistence: 'refuse',
        });
        await store.put(makeShare('share-1'));
        expect((await store.get('share-1'))?.shareId).toBe('share-1');
      }
    } finally {
      await deleteKeys(client, keyPrefix);
      await client.quit();
    }
  });
});

describeRedis('Redis connections that cannot be made', () => {
  it('a sentinel nobody answers at: ERR_STORE_IO within connectTimeoutMs, nothing left running', async () => {
    const started = Date.now();
    await expect(
      openRedisConnection(
        { sentinels: [{ host: '127.0.0.1', port: 1 }], name: 'nobody', connectTimeoutMs: 500 },
        { what: 'metadata' },
      ),
    ).rejects.toMatchObject({ code: 'ERR_STORE_IO', message: expect.stringContaining('sentinel master nobody') });
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('a password never appears in the error', async () => {
    const error = await openRedisConnection(
      { url: 'redis://kos:s3cret-pass@127.0.0.1:1', connectTimeoutMs: 500 },
      { what: 'metadata' },
    ).catch((caught: unknown) => caught as Error);
    expect((error as { code?: string }).code).toBe('ERR_STORE_IO');
    expect(String((error as Error).message)).not.toContain('s3cret');
    expect(String((error as Error).cause)).not.toContain('s3cret');
  });
});

describeRedis('a runtime that fails to start', () => {
  it('closes the Redis connections it opened before the failing step (metadata up, a node unreachable)', async () => {
    const server = await startRedisServer({ persistence: 'aof' });
    if (!server) throw new Error('redis-server did not start');
    const dir = await mkdtemp(join(tmpdir(), 'kos-startup-'));
    try {
      const signing = await generateKeyPair('EdDSA', { extractable: true });
      const identity = await generateKeyPair('EdDSA', { extractable: true });
      const clients = async () =>
        ((await sendRedisCommand(server.port, ['CLIENT', 'LIST'])) ?? '')
          .split('\n')
          .filter((line) => line.includes('id='));
      const before = (await clients()).length;
      await expect(
        createKosRuntime({
          env: {},
          config: {
            issuer: 'https://kos.test',
            signingKey: signing.privateKey,
            identity: { key: await exportJWK(identity.publicKey), algorithms: ['EdDSA'], issuer: 'i', audience: 'a' },
            metadata: { kind: 'redis', url: server.url },
            nodes: [
              { nodeId: 'node-1', kind: 'file', dir: join(dir, 'n1') },
              { nodeId: 'node-2', kind: 'redis', url: 'redis://127.0.0.1:1', connectTimeoutMs: 500 },
            ],
          },
        }),
      ).rejects.toMatchObject({ code: 'ERR_STORE_IO' });
      // Only this check's own connection is left: the runtime's metadata client was closed.
      await expect.poll(async () => (await clients()).length, { timeout: 3000 }).toBe(before);
    } finally {
      await rm(dir, { recursive: true, force: true });
      await server.stop();
    }
  });
});
