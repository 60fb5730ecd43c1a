import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isKosError, type KosError } from '@kos/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertRuntimeOptions, createKosRuntime, loadKosConfigFile } from '../src/index.js';
import { redisConnectionFromFlags } from '../src/kms-node/serve-command.js';
import { checkRedisConnectionConfig, describeRedisConnection } from '../src/redis/redis-connection.js';
import { checkRuntimeConfig, type KosRuntimeConfig } from '../src/runtime/runtime-config.js';

const SENTINELS = [{ host: '127.0.0.1', port: 26379 }];

/** The KosError `call` throws, checked to have `code`. */
function expectKosError(call: () => unknown, code: string): KosError {
  let thrown: unknown;
  try {
    call();
  } catch (error) {
    thrown = error;
  }
  expect(isKosError(thrown) ? thrown.code : thrown).toBe(code);
  return thrown as KosError;
}

describe('Redis connections in configuration', () => {
  it('accepts one server, a Sentinel master and a Cluster', () => {
    expect(checkRedisConnectionConfig({ url: 'rediss://kos:pw@redis.internal:6380/2' }, 'metadata')).toEqual({
      url: 'rediss://kos:pw@redis.internal:6380/2',
    });
    expect(
      checkRedisConnectionConfig(
        {
          kind: 'redis',
          sentinels: SENTINELS,
          name: 'kos-meta',
          username: 'kos',
          password: 'pw',
          sentinelPassword: 'spw',
          db: 1,
          tls: { caFile: 'ca.pem' },
          sentinelTls: true,
          connectTimeoutMs: 2000,
          commandTimeoutMs: 1000,
        },
        'metadata',
        ['kind'],
      ),
    ).toMatchObject({ sentinels: SENTINELS, name: 'kos-meta', db: 1 });
    expect(checkRedisConnectionConfig({ cluster: [{ host: 'redis-1', port: 6379 }], tls: true }, 'metadata')).toEqual({
      cluster: [{ host: 'redis-1', port: 6379 }],
      tls: true,
    });
  });

  const refused: Array<[string, unknown, string]> = [
    ['no address at all', { username: 'kos' }, 'metadata'],
    ['url and sentinels together', { url: 'redis://a:1', sentinels: SENTINELS, name: 'm' }, 'metadata'],
    ['sentinels without a master name', { sentinels: SENTINELS }, 'metadata.name'],
    ['a master name with a space', { sentinels: SENTINELS, name: 'my master' }, 'metadata.name'],
    ['an empty sentinel list', { sentinels: [], name: 'm' }, 'metadata.sentinels'],
    [
      'a sentinel port out of range',
      { sentinels: [{ host: 'a', port: 70000 }], name: 'm' },
      'metadata.sentinels[0].port',
    ],
    [
      'a sentinel port as a string',
      { sentinels: [{ host: 'a', port: '26379' }], name: 'm' },
      'metadata.sentinels[0].port',
    ],
    ['a sentinel without a host', { sentinels: [{ port: 26379 }], name: 'm' }, 'metadata.sentinels[0].host'],
    ['a misspelt field', { sentinals: SENTINELS, name: 'm' }, 'metadata.sentinals'],
    ['a url that is not redis', { url: 'http://redis:6379' }, 'metadata.url'],
    ['a password beside a url', { url: 'redis://a:1', password: 'x' }, 'metadata.password'],
    ['a database on a cluster', { cluster: [{ host: 'a', port: 1 }], db: 1 }, 'metadata.db'],
    ['a master name on a cluster', { cluster: [{ host: 'a', port: 1 }], name: 'm' }, 'metadata.name'],
    [
      'an unknown TLS field',
      { url: 'rediss://a:1', tls: { rejectUnauthorized: false } },
      'metadata.tls.rejectUnauthorized',
    ],
    ['a negative connect timeout', { url: 'redis://a:1', connectTimeoutMs: -1 }, 'metadata.connectTimeoutMs'],
    ['a fractional command timeout', { url: 'redis://a:1', commandTimeoutMs: 1.5 }, 'metadata.commandTimeoutMs'],
  ];
  it.each(refused)('refuses %s (ERR_INVALID_OPTIONS naming the field)', (_name, value, option) => {
    const error = expectKosError(() => checkRedisConnectionConfig(value, 'metadata'), 'ERR_INVALID_OPTIONS');
    expect(error.details?.option).toBe(option);
  });

  it('describes a connection without its password', () => {
    expect(describeRedisConnection({ url: 'rediss://kos:s3cret@redis.internal:6380' })).toBe(
      'rediss://redis.internal:6380',
    );
    expect(describeRedisConnection({ sentinels: SENTINELS, name: 'm', password: 's3cret' })).toBe(
      'sentinel master m via 127.0.0.1:26379',
    );
  });
});

describe('kos-kms Redis flags', () => {
  const fail = (message: string): never => {
    throw new Error(message);
  };

  it('builds a Sentinel connection, passwords from the environment only', () => {
    expect(
      redisConnectionFromFlags(
        { redisSentinel: SENTINELS, redisMasterName: 'kos-node-1', redisUsername: 'kms', redisCa: '/etc/ca.pem' },
        { KOS_REDIS_PASSWORD: 'pw', KOS_REDIS_SENTINEL_PASSWORD: 'spw' },
        fail,
      ),
    ).toEqual({
      sentinels: SENTINELS,
      name: 'kos-node-1',
      username: 'kms',
      password: 'pw',
      sentinelPassword: 'spw',
      tls: { caFile: '/etc/ca.pem' },
      sentinelTls: { caFile: '/etc/ca.pem' },
    });
    expect(redisConnectionFromFlags({ redisCluster: SENTINELS, redisTls: true }, {}, fail)).toEqual({
      cluster: SENTINELS,
      tls: true,
    });
    // A URL without a password takes KOS_REDIS_PASSWORD.
    expect(
      redisConnectionFromFlags({ redisUrl: 'redis://127.0.0.1:6379' }, { KOS_REDIS_PASSWORD: 'pw' }, fail),
    ).toEqual({ url: 'redis://default:pw@127.0.0.1:6379' });
  });

  it('refuses a missing or doubled address and a sentinel list without a master name', () => {
    expect(() => redisConnectionFromFlags({}, {}, fail)).toThrow(/--redis-url, --redis-sentinel/);
    expect(() => redisConnectionFromFlags({ redisUrl: 'redis://a:1', redisCluster: SENTINELS }, {}, fail)).toThrow(
      /only one of --redis-url, --redis-cluster/,
    );
    expect(() => redisConnectionFromFlags({ redisSentinel: SENTINELS }, {}, fail)).toThrow(/--redis-master-name/);
    expect(() => redisConnectionFromFlags({ redisUrl: 'redis://a:1', redisMasterName: 'm' }, {}, fail)).toThrow(
      /goes with --redis-sentinel/,
    );
  });
});

describe('the runtime configuration', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-config-check-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const base = {
    issuer: 'https://kos.test',
    signingKeyFile: 'kos-signing.jwk.json',
    identity: { issuer: 'https://idp.test', audience: 'a', algorithms: ['EdDSA'], jwksFile: 'idp.jwks.json' },
    metadata: { kind: 'memory' },
    nodes: [1, 2, 3, 4, 5].map((i) => ({ nodeId: `node-${i}`, kind: 'file', dir: `nodes/node-${i}` })),
  };

  async function load(config: object) {
    const path = join(dir, `config-${Math.random().toString(36).slice(2)}.json`);
    await writeFile(path, JSON.stringify(config));
    return () => loadKosConfigFile(path);
  }

  it('takes rotationPeriodMs and rotationCheckIntervalMs', async () => {
    const config = (await load({ ...base, rotationPeriodMs: 7_776_000_000, rotationCheckIntervalMs: 60_000 }))();
    expect(config.rotationPeriodMs).toBe(7_776_000_000);
    expect(config.rotationCheckIntervalMs).toBe(60_000);
  });

  const badRotation: Array<[string, object, string]> = [
    ['a negative period', { rotationPeriodMs: -1 }, 'rotationPeriodMs'],
    ['a period as text', { rotationPeriodMs: '90d' }, 'rotationPeriodMs'],
    ['a fractional period', { rotationPeriodMs: 1000.5 }, 'rotationPeriodMs'],
    ['a period under a second', { rotationPeriodMs: 10 }, 'rotationPeriodMs'],
    ['a zero check interval', { rotationCheckIntervalMs: 0 }, 'rotationCheckIntervalMs'],
    ['a check interval over a day', { rotationCheckIntervalMs: 86_400_001 }, 'rotationCheckIntervalMs'],
  ];
  it.each(badRotation)('refuses %s', async (_name, extra, option) => {
    const read = await load({ ...base, ...extra });
    expect(expectKosError(read, 'ERR_INVALID_OPTIONS').details?.option).toBe(option);
  });

  it('refuses an unknown top-level field in a JSON file (a typo must not pass silently), but allows $comments', async () => {
    const typo = await load({ ...base, rotationPeriodMS: 1000 });
    expect(expectKosError(typo, 'ERR_INVALID_OPTIONS').message).toMatch(/rotationPeriodMS is not a known field/);
    expect((await load({ ...base, $comment: 'rotated quarterly' }))().issuer).toBe('https://kos.test');
  });

  it('refuses a bad Redis connection in metadata or a node, naming it', async () => {
    const metadata = await load({ ...base, metadata: { kind: 'redis', sentinels: SENTINELS } });
    expect(expectKosError(metadata, 'ERR_INVALID_OPTIONS').details?.option).toBe('metadata.name');
    const nodes = [...base.nodes];
    nodes[2] = { nodeId: 'node-3', kind: 'redis', cluster: [] } as never;
    const node = await load({ ...base, nodes });
    expect(expectKosError(node, 'ERR_INVALID_OPTIONS').details?.option).toBe('nodes[2].cluster');
  });

  it('resolves a Redis caFile against the configuration file', async () => {
    const config = (
      await load({
        ...base,
        metadata: { kind: 'redis', sentinels: SENTINELS, name: 'm', tls: { caFile: 'tls/ca.pem' } },
      })
    )();
    expect((config.metadata as { tls: { caFile: string } }).tls.caFile).toBe(join(dir, 'tls/ca.pem'));
  });

  it('createKosRuntime and kosMiddleware options refuse a bad configuration before connecting anywhere', async () => {
    const config = {
      ...base,
      metadata: { kind: 'redis', sentinels: [{ host: '127.0.0.1', port: 1 }], name: 'm', sentinal: true },
    } as unknown as KosRuntimeConfig;
    await expect(createKosRuntime({ config, env: {} })).rejects.toMatchObject({
      code: 'ERR_INVALID_OPTIONS',
      details: { option: 'metadata.sentinal' },
    });
    expectKosError(() => assertRuntimeOptions({ config }), 'ERR_INVALID_OPTIONS');
    expectKosError(
      () => assertRuntimeOptions({ config: { rotationPeriodMs: Number.NaN } as KosRuntimeConfig }),
      'ERR_INVALID_OPTIONS',
    );
    expect(() => checkRuntimeConfig({ rotationPeriodMs: 3_600_000 })).not.toThrow();
  });
});
