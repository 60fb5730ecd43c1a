import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisCluster,
  startRedisCluster,
} from '../../../test-support/redis-server.js';
import { createRedisMetadataStore, createRedisShareStore } from '../src/index.js';
import {
  makeKeyRecord,
  makeShare,
  makeShareSet,
  runMetadataStoreConformance,
  runShareStoreConformance,
} from '../src/testing/index.js';

const binary = findRedisServerBinary();
if (binary === undefined) console.warn(REDIS_SKIP_WARNING);
const describeRedis = binary === undefined ? describe.skip : describe;

const openClients = new Set<Cluster>();

async function connectCluster(cluster: RedisCluster): Promise<Cluster> {
  const client = new Cluster([...cluster.startupNodes], {
    lazyConnect: true,
    enableOfflineQueue: false,
    redisOptions: { maxRetriesPerRequest: 1 },
  });
  openClients.add(client);
  client.on('error', () => {});
  await client.connect();
  return client;
}

function closeClient(client: Cluster): void {
  openClients.delete(client);
  client.disconnect();
}

afterAll(() => {
  for (const client of openClients) client.disconnect();
});

let prefixCounter = 0;
function nextPrefix(): string {
  prefixCounter += 1;
  return `c${prefixCounter}-${process.pid}:`;
}

/** Keys of one prefix on every master, deleted one by one (multi-key commands must stay in one slot). */
async function deleteKeysWithPrefix(client: Cluster, prefix: string): Promise<void> {
  for (const node of client.nodes('master')) {
    for (const key of await node.keys(`${prefix}*`)) await client.unlink(key);
  }
}

describeRedis('Redis stores on a 3-master Redis Cluster', () => {
  let cluster: RedisCluster;

  beforeAll(async () => {
    cluster = (await startRedisCluster({ masters: 3 }))!;
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  runShareStoreConformance('redis cluster', async () => {
    const client = await connectCluster(cluster);
    const keyPrefix = nextPrefix();
    return {
      store: createRedisShareStore({ nodeId: 'node-1', redis: client, keyPrefix, requirePersistence: 'refuse' }),
      cleanup: async () => {
        await deleteKeysWithPrefix(client, keyPrefix);
        closeClient(client);
      },
    };
  });

  runMetadataStoreConformance('redis cluster', async () => {
    const client = await connectCluster(cluster);
    const keyPrefix = nextPrefix();
    return {
      store: createRedisMetadataStore({ redis: client, keyPrefix, requirePersistence: 'refuse' }),
      cleanup: async () => {
        await deleteKeysWithPrefix(client, keyPrefix);
        closeClient(client);
      },
    };
  });

  it('checks persistence on every master', async () => {
    const client = await connectCluster(cluster);
    const meta = createRedisMetadataStore({ redis: client, requirePersistence: 'refuse' });
    const status = await meta.checkPersistence();
    expect(status.state).toBe('on');
    expect(status.servers).toHaveLength(3);
    expect(status.servers.every((server) => server.appendonly === 'yes')).toBe(true);
    closeClient(client);
  });

  it('spreads different nodes and counters over slots while each script stays in one slot', async () => {
    const client = await connectCluster(cluster);
    const keyPrefix = nextPrefix();
    const meta = createRedisMetadataStore({ redis: client, keyPrefix, requirePersistence: 'refuse' });
    for (let n = 0; n < 6; n++) {
      await createRedisShareStore({ nodeId: `node-${n}`, redis: client, keyPrefix }).put(makeShare('share-1'));
    }
    await meta.putShareSet(makeShareSet('set-1', 'k1', 1, 'client-1'));
    await meta.putShareSet(makeShareSet('set-1', 'k2', 1, 'client-2'));
    expect(await meta.listShareSets({ kid: 'k2', owner: 'client-2' })).toEqual([
      makeShareSet('set-1', 'k2', 1, 'client-2'),
    ]);
    const holding = await Promise.all(
      client.nodes('master').map(async (node) => (await node.keys(`${keyPrefix}{node:*`)).length),
    );
    expect(holding.filter((count) => count > 0).length).toBeGreaterThan(1);
    await deleteKeysWithPrefix(client, keyPrefix);
    closeClient(client);
  });

  it('two cluster clients racing putKey from the same revision: exactly one wins', async () => {
    const clientA = await connectCluster(cluster);
    const clientB = await connectCluster(cluster);
    const keyPrefix = nextPrefix();
    const metaA = createRedisMetadataStore({ redis: clientA, keyPrefix });
    const metaB = createRedisMetadataStore({ redis: clientB, keyPrefix });
    await metaA.putKey(makeKeyRecord('k1', 0), null);
    for (let round = 1; round <= 10; round++) {
      const outcomes = await Promise.allSettled([
        metaA.putKey(makeKeyRecord('k1', round * 10 + 1), round),
        metaB.putKey(makeKeyRecord('k1', round * 10 + 2), round),
      ]);
      expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
    }
    const markers = await Promise.all(
      Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? metaA : metaB).markOnce('grants', 'jti-1', 60)),
    );
    expect(markers.filter((first) => first)).toHaveLength(1);
    await deleteKeysWithPrefix(clientA, keyPrefix);
    closeClient(clientA);
    closeClient(clientB);
  });
});
