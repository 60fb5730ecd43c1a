import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createHttpShareStore } from '@kos/kms-adapters';
import { makeShare } from '@kos/kms-adapters/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KmsNodeProcess, startKmsProcess } from '../../test-support/kms-process.js';
import { createKosIdentity, type TestKosIdentity } from '../../test-support/kos-keys.js';
import { type RedisSentinelSetup, startRedisSentinel } from '../../test-support/redis-sentinel.js';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisCluster,
  startRedisCluster,
} from '../../test-support/redis-server.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const KMS_CLI = join(root, 'packages/kms-adapters/src/kms-node/cli.ts');
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
  it.each(refusals)('refuses %s at start, with exit code 1 and the reason', async (_name, flags, reason) => {
    const outcome = await execute(
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
      { cwd: root, timeout: 30_000 },
    ).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    expect(outcome.code).toBe(1);
    expect(outcome.stderr).toMatch(reason);
  });

  it('a Sentinel that does not answer: a fatal ERR_STORE_IO line naming the master, not a hang', {
    timeout: 30_000,
  }, async () => {
    const outcome = await execute(
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
        '--store',
        'redis',
        '--redis-sentinel',
        '127.0.0.1:1',
        '--redis-master-name',
        'nobody',
        '--redis-connect-timeout',
        '1000',
      ],
      { cwd: root, timeout: 25_000, env: { ...process.env, KOS_REDIS_SENTINEL_PASSWORD: 'not-shown' } },
    ).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    expect(outcome.code).toBe(1);
    const fatal = JSON.parse(outcome.stderr.trim().split('\n').at(-1) as string);
    expect(fatal).toMatchObject({ event: 'fatal', code: 'ERR_STORE_IO' });
    expect(fatal.message).toMatch(/sentinel master nobody/);
    expect(outcome.stderr).not.toContain('not-shown');
  });
});
