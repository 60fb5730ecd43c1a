import { createMediumReference, encodeEnvelope, utf8 } from '@kos/core';
import { createOpener } from '@kos/core/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KmsCluster, startKmsCluster, type Transport } from '../../test-support/kms-cluster.js';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisServer,
  startRedisServer,
} from '../../test-support/redis-server.js';

const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
const describeRedis = haveRedis ? describe : describe.skip;

const record = { id: 'rec-9', diagnosis: 'the medium path works' };

/**
 * The medium tier end to end, with real processes: KOS stores shares on five `kos-kms`
 * processes (three file-backed, two Redis-backed) through the HTTP share store, issues a
 * reference, and a client fetches its own shares from the nodes, verifies, combines and
 * decrypts.
 */
describeRedis.each(['http', 'https', 'mtls'] as Transport[])('medium tier over %s', (transport) => {
  let redis: RedisServer;
  let cluster: KmsCluster;

  beforeAll(async () => {
    redis = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
    cluster = await startKmsCluster({ stores: ['file', 'file', 'file', 'redis', 'redis'], transport, redis });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    await redis?.stop();
  });

  it('a client rebuilds the DEK from k of its own n shares and decrypts', async () => {
    const { keys, identity, directory } = cluster;
    await keys.createKey('records');
    const envelope = encodeEnvelope(
      await keys.seal('records', utf8(JSON.stringify(record)), { dataId: record.id }),
      'json',
    );
    keys.clearCache();
    // KOS itself rebuilds from the system set over the network.
    expect(JSON.parse(new TextDecoder().decode(await keys.open(envelope)))).toEqual(record);

    const reference = await createMediumReference({
      keys,
      tokens: identity.tokens,
      nodes: directory,
      clientId: 'client-m',
      kid: 'records',
      version: envelope.ver,
      n: 5,
      k: 3,
    });
    expect(reference.shares).toHaveLength(5);
    expect(
      reference.shares.every((s) => s.url.startsWith(transport === 'http' ? 'http://127.0.0.1' : 'https://127.0.0.1')),
    ).toBe(true);
    // The reference carries no key material: no DEK, no share bytes.
    expect(JSON.stringify(reference)).not.toMatch(/"value"|"dek"/);

    const opener = createOpener({ fetch: cluster.clientFetch, timeoutMs: 3000 });
    const plaintext = await opener.open({ envelope, key: reference });
    expect(JSON.parse(new TextDecoder().decode(plaintext))).toEqual(record);
    expect(opener.lastFailures).toEqual([]);
    opener.dispose();
  });

  if (transport === 'mtls') {
    it('a KOS without a client certificate is refused by the nodes', async () => {
      const { createHttpShareStore } = await import('@kos/kms-adapters');
      const bare = createHttpShareStore({
        nodeId: 'node-1',
        baseUrl: cluster.nodes[0]!.url,
        tokens: cluster.identity.tokens,
        ca: cluster.pki!.caCert,
        timeoutMs: 2000,
      });
      await expect(bare.get('sAnyShare.1')).rejects.toMatchObject({ code: 'ERR_KMS_UNREACHABLE' });
      await bare.close?.();
    });
  }
});
