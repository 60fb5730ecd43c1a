import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createHttpShareStore, createKosRuntime, type KosRuntime, loadKosConfigFile } from '@kos/kms-adapters';
import { makeShare } from '@kos/kms-adapters/testing';
import { exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type KmsNodeProcess, startKmsProcess } from '../../test-support/kms-process.js';
import { createKosIdentity, type TestKosIdentity } from '../../test-support/kos-keys.js';
import { type RedisSentinelSetup, startRedisSentinel } from '../../test-support/redis-sentinel.js';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisCluster,
  type RedisServer,
  startRedisCluster,
  startRedisServer,
} from '../../test-support/redis-server.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const KMS_CLI = join(root, 'packages/kms-adapters/src/kms-node/cli.ts');
const KOS_CLI = join(root, 'packages/kms-adapters/src/cli/kos.ts');
const NODE_ARGS = ['--conditions=kos-source', '--import', 'tsx'];
const execute = promisify(execFile);

const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
const describeRedis = haveRedis ? describe : describe.skip;

/** Stores, reads and deletes a share at a running node with a service token. */
async function shareRoundTrip(identity: TestKosIdentity, node: KmsNodeProcess, shareId: string): Promise<void> {
  const store = createHttpShareStore({ nodeId: node.nodeId, baseUrl: node.url, tokens: identity.tokens });
  try {
    await store.put(makeShare(shareId));
    expect((await store.get(shareId))?.shareId).toBe(shareId);
    expect(await store.delete(shareId)).toBe(true);
    expect(await store.get(shareId)).toBeUndefined();
  } finally {
    await store.close?.();
  }
}

describeRedis('kos-kms on Redis Sentinel and Redis Cluster, from its flags', () => {
  let dir: string;
  let identity: TestKosIdentity;
  let sentinel: RedisSentinelSetup;
  let cluster: RedisCluster;
  const nodes: KmsNodeProcess[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-kms-redis-'));
    identity = await createKosIdentity(dir);
    sentinel = (await startRedisSentinel({ sentinels: 1 })) as RedisSentinelSetup;
    cluster = (await startRedisCluster({ masters: 3 })) as RedisCluster;
  }, 90_000);

  afterAll(async () => {
    await Promise.all(nodes.map((node) => node.stop()));
    await sentinel?.stop();
    await cluster?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const start = async (nodeId: string, extraArgs: string[]) => {
    const node = await startKmsProcess({
      nodeId,
      issuer: identity.issuer,
      jwksPath: identity.jwksPath,
      store: 'redis',
      extraArgs,
    });
    nodes.push(node);
    return node;
  };

  it('--redis-sentinel with --redis-master-name: shares are stored on the master the Sentinel names', async () => {
    const node = await start('node-s', [
      '--redis-sentinel',
      ...sentinel.sentinelEndpoints.map((e) => `${e.host}:${e.port}`),
      '--redis-master-name',
      sentinel.masterName,
    ]);
    await shareRoundTrip(identity, node, 'sentinel-share');
    const health = await fetch(`${node.url}/v1/health`);
    expect(health.status).toBe(200);
    expect(node.stderr.join('\n')).not.toMatch(/error|fatal/);
  });

  it('--redis-cluster: shares are stored on the Cluster', async () => {
    const node = await start('node-c', ['--redis-cluster', ...cluster.startupNodes.map((e) => `${e.host}:${e.port}`)]);
    await shareRoundTrip(identity, node, 'cluster-share');
  });

  const refusals: Array<[string, string[], RegExp]> = [
    [
      'a Sentinel list without a master name',
      ['--store', 'redis', '--redis-sentinel', '127.0.0.1:26379'],
      /--redis-master-name/,
    ],
    [
      'two Redis addresses',
      ['--store', 'redis', '--redis-url', 'redis://127.0.0.1:1', '--redis-cluster', '127.0.0.1:7000'],
      /only one of/,
    ],
    ['a Sentinel address without a port', ['--store', 'redis', '--redis-sentinel', '127.0.0.1'], /host:port/],
    ['Redis flags without --store redis', ['--store', 'memory', '--redis-cluster', '127.0.0.1:7000'], /--store redis/],
  ];
  /** Runs `kos-kms` as node-x with `flags` until it exits: its exit code (0 if it did not fail) and stderr. */
  function runKmsNode(
    flags: readonly string[],
    options: { timeout: number; env?: NodeJS.ProcessEnv },
  ): Promise<{ code: number; stderr: string }> {
    return execute(
      process.execPath,
      [
        ...NODE_ARGS,
        KMS_CLI,
        '--node-id',
        'node-x',
        '--issuer',
        identity.issuer,
        '--trusted-keys',
        identity.jwksPath,
        ...flags,
      ],
      { cwd: root, ...options },
    ).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
  }

  it.each(refusals)('refuses %s at start, with exit code 1 and the reason', async (_name, flags, reason) => {
    const outcome = await runKmsNode(flags, { timeout: 30_000 });
    expect(outcome.code).toBe(1);
    expect(outcome.stderr).toMatch(reason);
  });

  it('a Sentinel that does not answer: a fatal ERR_STORE_IO line naming the master, not a hang', {
    timeout: 30_000,
  }, async () => {
    const outcome = await runKmsNode(
      [
        '--store',
        'redis',
        '--redis-sentinel',
        '127.0.0.1:1',
        '--redis-master-name',
        'nobody',
        '--redis-connect-timeout',
        '1000',
      ],
      { timeout: 25_000, env: { ...process.env, KOS_REDIS_SENTINEL_PASSWORD: 'not-shown' } },
    );
    expect(outcome.code).toBe(1);
    const fatal = JSON.parse(outcome.stderr.trim().split('\n').at(-1) as string);
    expect(fatal).toMatchObject({ event: 'fatal', code: 'ERR_STORE_IO' });
    expect(fatal.message).toMatch(/sentinel master nobody/);
    expect(outcome.stderr).not.toContain('not-shown');
  });
});

describeRedis('health of a Redis-backed node whose Redis stops (GET /v1/health, kos status)', () => {
  let dir: string;
  let identity: TestKosIdentity;
  let redis: RedisServer;
  let config: string;
  let runtime: KosRuntime;
  const nodes: KmsNodeProcess[] = [];

  const kos = async (...args: string[]) =>
    execute(process.execPath, [...NODE_ARGS, KOS_CLI, '--config', config, ...args], {
      cwd: root,
      timeout: 60_000,
    }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code: number; stdout: string; stderr: string }) => error,
    );
  const health = async (node: KmsNodeProcess) => {
    const response = await fetch(`${node.url}/v1/health`);
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  const mountedHealth = async () => {
    const answer = await runtime.handleKms({
      method: 'GET',
      url: 'http://app.test/kos/kms/local-1/v1/health',
      headers: {},
    });
    return { status: answer?.status, body: JSON.parse(answer?.body ?? '{}') as Record<string, unknown> };
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-kms-health-'));
    identity = await createKosIdentity(dir);
    redis = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
    const common = { issuer: identity.issuer, jwksPath: identity.jwksPath };
    nodes.push(
      ...(await Promise.all(
        [1, 2, 3, 4].map((i) => startKmsProcess({ ...common, nodeId: `node-${i}`, store: 'memory' })),
      )),
      await startKmsProcess({ ...common, nodeId: 'node-5', store: 'redis', redisUrl: redis.url }),
    );
    // The KOS side: the signing key the nodes trust, an identity key, file metadata, the five nodes.
    await writeFile(
      join(dir, 'kos-signing.jwk.json'),
      JSON.stringify({ ...(await exportJWK(identity.privateKey)), kid: 'kos-test-1' }),
      { mode: 0o600 },
    );
    const idp = await generateKeyPair('EdDSA', { extractable: true });
    await writeFile(
      join(dir, 'idp.jwks.json'),
      JSON.stringify({ keys: [{ ...(await exportJWK(idp.publicKey)), alg: 'EdDSA' }] }),
    );
    const base = {
      issuer: identity.issuer,
      signingKeyFile: 'kos-signing.jwk.json',
      identity: { issuer: 'https://idp.test', audience: 'a', algorithms: ['EdDSA'], jwksFile: 'idp.jwks.json' },
    };
    config = join(dir, 'kos.config.json');
    await writeFile(
      config,
      JSON.stringify({
        ...base,
        metadata: { kind: 'file', dir: 'metadata' },
        nodes: nodes.map((node) => ({ nodeId: node.nodeId, kind: 'http', url: node.url })),
      }),
    );
    // In-process nodes on the same Redis, mounted on an app: the same health check.
    const local = join(dir, 'local.json');
    await writeFile(
      local,
      JSON.stringify({
        ...base,
        metadata: { kind: 'memory' },
        nodes: [1, 2, 3, 4, 5].map((i) => ({ nodeId: `local-${i}`, kind: 'redis', url: redis.url })),
      }),
    );
    runtime = await createKosRuntime({ config: loadKosConfigFile(local), env: {} });
  }, 90_000);

  afterAll(async () => {
    await runtime?.close();
    await Promise.all(nodes.map((node) => node.stop()));
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('answers 200 and kos status is clean while Redis is up', async () => {
    expect(await health(nodes[4] as KmsNodeProcess)).toEqual({ status: 200, body: { status: 'ok', nodeId: 'node-5' } });
    expect(await mountedHealth()).toEqual({ status: 200, body: { status: 'ok', nodeId: 'local-1' } });
    const status = await kos('--json', 'status');
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout).nodes.every((node: { healthy: boolean }) => node.healthy)).toBe(true);
  });

  it('answers 503 ERR_STORE_IO once Redis is gone, logs it once, and kos status names the node and the cause (exit 2)', {
    timeout: 60_000,
  }, async () => {
    await redis.kill('SIGTERM');
    const node = nodes[4] as KmsNodeProcess;
    await vi.waitFor(async () => expect((await health(node)).status).toBe(503), { timeout: 15_000, interval: 200 });
    const down = await health(node);
    expect(down.body).toEqual({
      error: { code: 'ERR_STORE_IO', message: 'node node-5: its share store is unavailable' },
    });
    // The other nodes are not affected.
    expect((await health(nodes[0] as KmsNodeProcess)).status).toBe(200);
    await vi.waitFor(async () => expect((await mountedHealth()).status).toBe(503), { timeout: 15_000, interval: 200 });
    expect((await mountedHealth()).body).toMatchObject({ error: { code: 'ERR_STORE_IO' } });

    // The node's log says why, once (not per health request).
    await health(node);
    const events = node.stderr.map((line) => JSON.parse(line) as { event?: string; code?: string; nodeId?: string });
    const unhealthy = events.filter((event) => event.event === 'store.unhealthy');
    expect(unhealthy).toHaveLength(1);
    expect(unhealthy[0]).toMatchObject({ nodeId: 'node-5', code: 'ERR_STORE_IO' });

    const json = await kos('--json', 'status');
    expect(json.code).toBe(2);
    const down5 = JSON.parse(json.stdout).nodes.find((entry: { nodeId: string }) => entry.nodeId === 'node-5');
    expect(down5).toMatchObject({ healthy: false, code: 'ERR_KMS_BAD_STATUS', nodeCode: 'ERR_STORE_IO' });
    const text = await kos('status');
    expect(text.code).toBe(2);
    expect(text.stdout).toMatch(
      /node-5 +http +DOWN \(ERR_STORE_IO at the node \(ERR_KMS_BAD_STATUS\): its share store is unreachable\)/,
    );
    expect(text.stdout).toMatch(/node-1 +http +healthy/);
  });

  it('is healthy again once Redis is back (ioredis reconnects), and says so in its log', {
    timeout: 60_000,
  }, async () => {
    await redis.restart();
    const node = nodes[4] as KmsNodeProcess;
    await vi.waitFor(async () => expect((await health(node)).status).toBe(200), { timeout: 20_000, interval: 200 });
    await vi.waitFor(async () => expect((await mountedHealth()).status).toBe(200), { timeout: 20_000, interval: 200 });
    expect(node.stderr.some((line) => line.includes('"event":"store.healthy"'))).toBe(true);
    // The connection itself: lost once, back once, named by host and port only.
    const redisEvents = node.stderr.filter((line) => line.includes('"event":"redis.'));
    expect(redisEvents.map((line) => (JSON.parse(line) as { event: string }).event)).toEqual([
      'redis.down',
      'redis.up',
    ]);
    expect(redisEvents[0]).toContain(`redis://127.0.0.1:${redis.port} unreachable`);
    expect((await kos('--json', 'status')).code).toBe(0);
  });
});
