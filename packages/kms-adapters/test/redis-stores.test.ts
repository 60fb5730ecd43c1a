import { inspect } from 'node:util';
import { isKosError, type KosError, toBase64url } from '@kos/core';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisServer,
  startRedisServer,
} from '../../../test-support/redis-server.js';
import { createRedisMetadataStore, createRedisShareStore, PERSISTENCE_OFF_MESSAGE } from '../src/index.js';
import {
  delay,
  expectKosError,
  makeKeyRecord,
  makeShare,
  makeShareSet,
  runMetadataStoreConformance,
  runShareStoreConformance,
} from '../src/testing/index.js';

const binary = findRedisServerBinary();
if (binary === undefined) console.warn(REDIS_SKIP_WARNING);
const describeRedis = binary === undefined ? describe.skip : describe;

/** Client options the README recommends: fail fast instead of queueing while Redis is down. */
const CLIENT_OPTIONS = {
  host: '127.0.0.1',
  lazyConnect: true,
  maxRetriesPerRequest: 1,
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  retryStrategy: () => 50,
} as const;

const openClients = new Set<Redis>();

/** A connected client of `port` (a separate connection: one per simulated KOS instance). */
async function connectClient(port: number): Promise<Redis> {
  const client = new Redis({ ...CLIENT_OPTIONS, port });
  openClients.add(client);
  // Connection errors surface as rejected calls; the event would only be logged.
  client.on('error', () => {});
  await client.connect();
  return client;
}

function closeClient(client: Redis): void {
  openClients.delete(client);
  client.disconnect();
}

afterAll(() => {
  for (const client of openClients) client.disconnect();
});

let prefixCounter = 0;
/** A fresh key prefix, so cases sharing a server never see each other's keys. */
function nextPrefix(): string {
  prefixCounter += 1;
  return `t${prefixCounter}-${process.pid}:`;
}

async function deleteKeysWithPrefix(client: Redis, prefix: string): Promise<void> {
  const keys = await client.keys(`${prefix}*`);
  if (keys.length > 0) await client.unlink(...keys);
}

/** The error a call rejects with (fails the test if it resolves). */
async function rejectionOf(call: () => Promise<unknown>): Promise<KosError> {
  const outcome = await call().then(
    (value: unknown) => ({ resolved: value }),
    (error: unknown) => error,
  );
  expect(isKosError(outcome)).toBe(true);
  return outcome as KosError;
}

/** Every trace of `bytes` an error could carry: hex, base64url, base64, comma list. */
function byteForms(bytes: Uint8Array): string[] {
  const buffer = Buffer.from(bytes);
  return [buffer.toString('hex'), toBase64url(bytes), buffer.toString('base64'), bytes.join(',')];
}

function fullText(error: unknown): string {
  return `${String(error)} ${JSON.stringify(error)} ${inspect(error, { depth: 10, showHidden: true })}`;
}

describe('Redis store options', () => {
  const redis = new Redis({ lazyConnect: true });
  afterAll(() => redis.disconnect());

  it('refuse a missing or wrong redis client with ERR_INVALID_OPTIONS', async () => {
    for (const bad of [undefined, null, {}, 'redis://127.0.0.1', { get() {}, set() {} }]) {
      await expectKosError(
        async () => createRedisShareStore({ nodeId: 'node-1', redis: bad as never }),
        'ERR_INVALID_OPTIONS',
      );
      await expectKosError(async () => createRedisMetadataStore({ redis: bad as never }), 'ERR_INVALID_OPTIONS');
    }
  });

  it('refuse a bad keyPrefix, requirePersistence or onWarning with ERR_INVALID_OPTIONS', async () => {
    const bad: Record<string, unknown>[] = [
      { keyPrefix: '{x}:' },
      { keyPrefix: 'a b' },
      { keyPrefix: 'x'.repeat(65) },
      { keyPrefix: 7 },
      { requirePersistence: 'yes' },
      { requirePersistence: true },
      { onWarning: 'console' },
    ];
    for (const extra of bad) {
      await expectKosError(
        async () => createRedisShareStore({ nodeId: 'node-1', redis, ...extra } as never),
        'ERR_INVALID_OPTIONS',
      );
      await expectKosError(async () => createRedisMetadataStore({ redis, ...extra } as never), 'ERR_INVALID_OPTIONS');
    }
  });

  it('refuse an invalid nodeId or zone with ERR_INVALID_OPTIONS', async () => {
    await expectKosError(async () => createRedisShareStore({ nodeId: '../n', redis }), 'ERR_INVALID_OPTIONS');
    await expectKosError(async () => createRedisShareStore({ nodeId: 'n{1}', redis }), 'ERR_INVALID_OPTIONS');
    await expectKosError(async () => createRedisShareStore({ nodeId: 'n', zone: 'a/b', redis }), 'ERR_INVALID_OPTIONS');
  });

  it('accept valid options and report the key prefix (default kos:)', () => {
    expect(createRedisShareStore({ nodeId: 'node-1', redis }).keyPrefix).toBe('kos:');
    expect(createRedisMetadataStore({ redis, keyPrefix: '' }).keyPrefix).toBe('');
    expect(createRedisMetadataStore({ redis, keyPrefix: 'app-1.kos:' }).keyPrefix).toBe('app-1.kos:');
  });
});

describeRedis('Redis stores on a private redis-server (AOF)', () => {
  let server: RedisServer;

  beforeAll(async () => {
    server = (await startRedisServer({ persistence: 'aof' }))!;
  });

  afterAll(async () => {
    await server?.stop();
  });

  runShareStoreConformance('redis', async () => {
    const client = await connectClient(server.port);
    const keyPrefix = nextPrefix();
    const store = createRedisShareStore({ nodeId: 'node-1', redis: client, keyPrefix, requirePersistence: 'refuse' });
    return {
      store,
      cleanup: async () => {
        await deleteKeysWithPrefix(client, keyPrefix);
        closeClient(client);
      },
    };
  });

  runMetadataStoreConformance('redis', async () => {
    const client = await connectClient(server.port);
    const keyPrefix = nextPrefix();
    return {
      store: createRedisMetadataStore({ redis: client, keyPrefix, requirePersistence: 'refuse' }),
      cleanup: async () => {
        await deleteKeysWithPrefix(client, keyPrefix);
        closeClient(client);
      },
    };
  });

  describe('share store layout and integrity', () => {
    let client: Redis;
    let keyPrefix: string;

    beforeAll(async () => {
      client = await connectClient(server.port);
    });

    afterEach(async () => {
      await deleteKeysWithPrefix(client, keyPrefix);
    });

    function store(nodeId = 'node-1') {
      return createRedisShareStore({ nodeId, redis: client, keyPrefix, requirePersistence: 'off' });
    }

    it('keeps each share in one key <prefix>{node:<id>}:share:<shareId>, in the integrity wrapper', async () => {
      keyPrefix = nextPrefix();
      const share = makeShare('share-1', { x: 3 });
      await store().put(share);
      expect(await client.keys(`${keyPrefix}*`)).toEqual([`${keyPrefix}{node:node-1}:share:share-1`]);
      const stored = JSON.parse((await client.get(`${keyPrefix}{node:node-1}:share:share-1`))!) as {
        v: number;
        body: Record<string, unknown>;
        sha256: string;
      };
      expect(stored.v).toBe(1);
      expect(stored.sha256).toMatch(/^[0-9a-f]{64}$/);
      expect(stored.body).toEqual({
        nodeId: 'node-1',
        shareId: 'share-1',
        kid: share.kid,
        version: share.version,
        setId: share.setId,
        owner: share.owner,
        x: 3,
        value: toBase64url(share.value),
      });
    });

    it('keeps the shares of two nodes on one prefix apart', async () => {
      keyPrefix = nextPrefix();
      const one = makeShare('share-1', { x: 1, seed: 1 });
      await store('node-1').put(one);
      expect(await store('node-2').get('share-1')).toBeUndefined();
      expect(await store('node-2').delete('share-1')).toBe(false);
      expect(await store('node-1').get('share-1')).toEqual(one);
    });

    it('reads a damaged or foreign value as ERR_STORE_CORRUPT without quoting it', async () => {
      keyPrefix = nextPrefix();
      const share = makeShare('share-1', { x: 5, seed: 42 });
      await store().put(share);
      const key = (nodeId: string, shareId: string) => `${keyPrefix}{node:${nodeId}}:share:${shareId}`;
      const good = (await client.get(key('node-1', 'share-1')))!;

      await client.set(key('node-1', 'share-1'), good.replace('"x":5', '"x":6'));
      const flipped = await rejectionOf(() => store().get('share-1'));
      expect(flipped.code).toBe('ERR_STORE_CORRUPT');
      for (const form of byteForms(share.value)) expect(fullText(flipped)).not.toContain(form);

      await client.set(key('node-1', 'share-1'), good.slice(0, good.length - 9));
      expect((await rejectionOf(() => store().get('share-1'))).code).toBe('ERR_STORE_CORRUPT');

      await client.set(key('node-1', 'share-2'), good);
      expect((await rejectionOf(() => store().get('share-2'))).code).toBe('ERR_STORE_CORRUPT');

      await client.set(key('node-2', 'share-1'), good);
      expect((await rejectionOf(() => store('node-2').get('share-1'))).code).toBe('ERR_STORE_CORRUPT');
    });

    it('never puts share bytes in an ERR_STORE_IO, even though ioredis attaches the command arguments', async () => {
      keyPrefix = nextPrefix();
      const share = makeShare('share-oom', { x: 9, seed: 77 });
      await client.config('SET', 'maxmemory-policy', 'noeviction');
      await client.config('SET', 'maxmemory', '1');
      let raw: unknown;
      let error: KosError;
      try {
        raw = await client.set(`${keyPrefix}probe`, toBase64url(share.value)).catch((caught: unknown) => caught);
        error = await rejectionOf(() => store().put(share));
      } finally {
        await client.config('SET', 'maxmemory', '0');
      }
      // The hazard is real: the ioredis error of a refused SET carries its arguments.
      expect(inspect(raw, { depth: 10 })).toContain(toBase64url(share.value));
      expect(error.code).toBe('ERR_STORE_IO');
      expect(error.message).toContain('OOM');
      for (const form of byteForms(share.value)) expect(fullText(error)).not.toContain(form);
      expect(await store().get('share-oom')).toBeUndefined();
    });

    it('rejects with ERR_STORE_IO as soon as the signal aborts while a command waits', async () => {
      keyPrefix = nextPrefix();
      const admin = await connectClient(server.port);
      await admin.call('CLIENT', 'PAUSE', '2000', 'WRITE');
      try {
        const started = Date.now();
        const error = await rejectionOf(() => store().put(makeShare('share-1'), { signal: AbortSignal.timeout(100) }));
        expect(error.code).toBe('ERR_STORE_IO');
        expect(Date.now() - started).toBeLessThan(1500);
      } finally {
        await admin.call('CLIENT', 'UNPAUSE');
        closeClient(admin);
      }
    });

    it('close() makes calls reject with ERR_STORE_IO and leaves the caller’s client open', async () => {
      keyPrefix = nextPrefix();
      const closing = store();
      await closing.put(makeShare('share-1'));
      await closing.close();
      expect((await rejectionOf(() => closing.get('share-1'))).code).toBe('ERR_STORE_IO');
      expect((await rejectionOf(() => closing.put(makeShare('share-2')))).code).toBe('ERR_STORE_IO');
      expect(client.status).toBe('ready');
      expect(await client.ping()).toBe('PONG');
      expect(await store().get('share-1')).toEqual(makeShare('share-1'));
    });
  });

  describe('two KOS instances (two separate clients) on one Redis', () => {
    let clientA: Redis;
    let clientB: Redis;
    let keyPrefix: string;
    let metaA: ReturnType<typeof createRedisMetadataStore>;
    let metaB: ReturnType<typeof createRedisMetadataStore>;

    beforeAll(async () => {
      clientA = await connectClient(server.port);
      clientB = await connectClient(server.port);
      keyPrefix = nextPrefix();
      metaA = createRedisMetadataStore({ redis: clientA, keyPrefix, requirePersistence: 'refuse' });
      metaB = createRedisMetadataStore({ redis: clientB, keyPrefix, requirePersistence: 'refuse' });
    });

    afterAll(async () => {
      await deleteKeysWithPrefix(clientA, keyPrefix);
    });

    it('racing putKey compare-and-set from the same revision: exactly one wins, every round', async () => {
      expect(await metaA.putKey(makeKeyRecord('race-key', 0), null)).toBe(1);
      for (let round = 1; round <= 20; round++) {
        const outcomes = await Promise.allSettled([
          metaA.putKey(makeKeyRecord('race-key', round * 10 + 1), round),
          metaB.putKey(makeKeyRecord('race-key', round * 10 + 2), round),
        ]);
        const winners = outcomes.flatMap((outcome, i) => (outcome.status === 'fulfilled' ? [i] : []));
        expect(winners).toHaveLength(1);
        const loser = outcomes.find((outcome) => outcome.status === 'rejected');
        expect((loser as PromiseRejectedResult).reason.code).toBe('ERR_STORE_CONFLICT');
        const winner = winners[0]!;
        expect(await (winner === 0 ? metaB : metaA).getKey('race-key')).toEqual({
          value: makeKeyRecord('race-key', round * 10 + 1 + winner),
          revision: round + 1,
        });
      }
    });

    it('racing creations (null revision) from both instances: exactly one wins', async () => {
      for (let i = 0; i < 10; i++) {
        const outcomes = await Promise.allSettled([
          metaA.putKey(makeKeyRecord(`new-key-${i}`, 1), null),
          metaB.putKey(makeKeyRecord(`new-key-${i}`, 2), null),
        ]);
        expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
      }
      expect((await metaB.listKeys()).filter((kid) => kid.startsWith('new-key-'))).toHaveLength(10);
    });

    it('50 concurrent markOnce of one id over both instances: exactly one is true, for each of 5 ids', async () => {
      for (let id = 0; id < 5; id++) {
        const calls = Array.from({ length: 50 }, (_, i) =>
          (i % 2 === 0 ? metaA : metaB).markOnce('grants', `jti-${id}`, 60),
        );
        const results = await Promise.all(calls);
        expect(results.filter((result) => result)).toHaveLength(1);
      }
      expect(await metaA.markOnce('grants', 'jti-fresh', 60)).toBe(true);
    });

    it('a lock held by one instance is refused to the other until released', async () => {
      expect(await metaA.acquireLock('rotate-k1', 'instance-a', 10_000)).toBe(true);
      expect(await metaB.acquireLock('rotate-k1', 'instance-b', 10_000)).toBe(false);
      expect(await metaB.releaseLock('rotate-k1', 'instance-b')).toBe(false);
      expect(await metaB.acquireLock('rotate-k1', 'instance-b', 10_000)).toBe(false);
      expect(await metaA.releaseLock('rotate-k1', 'instance-a')).toBe(true);
      expect(await metaB.acquireLock('rotate-k1', 'instance-b', 10_000)).toBe(true);
      expect(await metaA.acquireLock('rotate-k1', 'instance-a', 10_000)).toBe(false);
    });

    it('a lock whose TTL ran out can be taken by the other instance; the old holder cannot release it', async () => {
      expect(await metaA.acquireLock('rotate-k2', 'instance-a', 150)).toBe(true);
      expect(await metaB.acquireLock('rotate-k2', 'instance-b', 10_000)).toBe(false);
      await delay(300);
      expect(await metaB.acquireLock('rotate-k2', 'instance-b', 10_000)).toBe(true);
      expect(await metaA.releaseLock('rotate-k2', 'instance-a')).toBe(false);
      expect(await metaA.acquireLock('rotate-k2', 'instance-a', 10_000)).toBe(false);
    });

    it('20 owners racing for a free lock over both instances: exactly one gets it', async () => {
      const calls = Array.from({ length: 20 }, (_, i) =>
        (i % 2 === 0 ? metaA : metaB).acquireLock('rotate-k3', `owner-${i}`, 10_000),
      );
      expect((await Promise.all(calls)).filter((got) => got)).toHaveLength(1);
    });

    it('counters stay exact when both instances add concurrently', async () => {
      const calls = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? metaA : metaB).addOps('kc', 1, i + 1));
      const totals = await Promise.all(calls);
      expect(await metaB.getOps('kc', 1)).toBe(820);
      expect(new Set(totals).size).toBe(40);
    });

    it('a share set replaced under another kid and owner moves between index sets', async () => {
      await metaA.putShareSet(makeShareSet('set-move', 'ka', 1, 'client-1'));
      expect((await metaB.listShareSets({ kid: 'ka' })).map((set) => set.setId)).toEqual(['set-move']);
      await metaB.putShareSet(makeShareSet('set-move', 'kb', 1, 'client-2'));
      expect(await metaA.listShareSets({ kid: 'ka' })).toEqual([]);
      expect(await metaA.listShareSets({ owner: 'client-1' })).toEqual([]);
      expect(await metaA.listShareSets({ kid: 'kb', owner: 'client-2' })).toEqual([
        makeShareSet('set-move', 'kb', 1, 'client-2'),
      ]);
      expect(await clientA.smembers(`${keyPrefix}{meta:sets}:by-kid:ka`)).toEqual([]);
      expect(await clientA.smembers(`${keyPrefix}{meta:sets}:by-kid:kb`)).toEqual(['set-move']);
    });

    it('concurrent replacements of one share set leave it in exactly the index sets of the stored record', async () => {
      const variants = Array.from({ length: 30 }, (_, i) =>
        makeShareSet('set-churn', `kid-${i % 3}`, 1 + (i % 2), `owner-${i % 5}`),
      );
      await Promise.all(variants.map((set, i) => (i % 2 === 0 ? metaA : metaB).putShareSet(set)));
      const stored = (await metaA.getShareSet('set-churn'))!;
      const members = (index: string) => clientA.smembers(`${keyPrefix}{meta:sets}:${index}`);
      for (let k = 0; k < 3; k++) {
        expect(await members(`by-kid:kid-${k}`)).toEqual(stored.kid === `kid-${k}` ? ['set-churn'] : []);
      }
      for (let o = 0; o < 5; o++) {
        expect(await members(`by-owner:owner-${o}`)).toEqual(stored.owner === `owner-${o}` ? ['set-churn'] : []);
      }
      for (let k = 0; k < 3; k++) {
        expect(await metaB.listShareSets({ kid: `kid-${k}` })).toEqual(stored.kid === `kid-${k}` ? [stored] : []);
      }
      for (let o = 0; o < 5; o++) {
        expect(await metaB.listShareSets({ owner: `owner-${o}` })).toEqual(
          stored.owner === `owner-${o}` ? [stored] : [],
        );
      }
      expect(await metaA.deleteShareSet('set-churn')).toBe(true);
      expect(await metaB.listShareSets({ kid: stored.kid })).toEqual([]);
    });

    it('listShareSets reads index sets, never SCAN or KEYS', async () => {
      await metaA.putShareSet(makeShareSet('set-listed', 'kl', 1, 'system'));
      const monitor = await clientB.monitor();
      const seen: string[] = [];
      monitor.on('monitor', (_time: string, args: string[]) => seen.push(String(args[0]).toLowerCase()));
      try {
        expect((await metaA.listShareSets({ kid: 'kl' })).map((set) => set.setId)).toEqual(['set-listed']);
        expect((await metaA.listShareSets()).length).toBeGreaterThan(0);
        expect(await metaA.listKeys()).toContain('race-key');
        await clientA.echo('monitor-sentinel');
        await vi.waitFor(() => expect(seen).toContain('echo'));
      } finally {
        monitor.disconnect();
      }
      expect(seen).toContain('smembers');
      expect(seen).not.toContain('scan');
      expect(seen).not.toContain('keys');
    });

    it('records are stored with the integrity wrapper and a damaged one is ERR_STORE_CORRUPT', async () => {
      await metaA.putKey(makeKeyRecord('damaged', 1), null);
      const key = `${keyPrefix}{meta:keys}:key:damaged`;
      const doc = (await clientA.hget(key, 'doc'))!;
      expect(Object.keys(JSON.parse(doc) as object).sort()).toEqual(['body', 'sha256', 'v']);
      await clientA.hset(key, 'doc', doc.replace('"updatedAt":1', '"updatedAt":2'));
      await expectKosError(() => metaB.getKey('damaged'), 'ERR_STORE_CORRUPT');
      await clientA.hset(key, 'doc', doc, 'rev', '7');
      await expectKosError(() => metaB.getKey('damaged'), 'ERR_STORE_CORRUPT');
      await clientA.set(`${keyPrefix}meta:ops:damaged:1`, 'many');
      await expectKosError(() => metaB.getOps('damaged', 1), 'ERR_STORE_CORRUPT');
    });

    it('replay entries expire in Redis (PX), so every instance sees the same TTL', async () => {
      expect(await metaA.markOnce('grants', 'jti-ttl', 0.2)).toBe(true);
      expect(await metaB.markOnce('grants', 'jti-ttl', 60)).toBe(false);
      await delay(300);
      expect(await metaB.markOnce('grants', 'jti-ttl', 60)).toBe(true);
      expect(await metaA.markOnce('grants', 'jti-ttl', 60)).toBe(false);
    });
  });
});

describeRedis('Redis persistence check', () => {
  let server: RedisServer;
  let noConfigServer: RedisServer;
  let client: Redis;

  beforeAll(async () => {
    server = (await startRedisServer({ persistence: 'none' }))!;
    noConfigServer = (await startRedisServer({ persistence: 'none', extraArgs: ['--rename-command', 'CONFIG', ''] }))!;
    client = await connectClient(server.port);
  });

  afterAll(async () => {
    await server?.stop();
    await noConfigServer?.stop();
  });

  afterEach(async () => {
    await client.config('SET', 'appendonly', 'no');
    await client.config('SET', 'save', '');
    await client.flushall();
  });

  it("'refuse' rejects every call with ERR_STORE_IO when appendonly is no and there are no save points, writing nothing", async () => {
    const shares = createRedisShareStore({ nodeId: 'node-1', redis: client, requirePersistence: 'refuse' });
    const meta = createRedisMetadataStore({ redis: client, requirePersistence: 'refuse' });
    const calls: (() => Promise<unknown>)[] = [
      () => shares.put(makeShare('share-1')),
      () => shares.get('share-1'),
      () => shares.delete('share-1'),
      () => meta.putKey(makeKeyRecord('k1'), null),
      () => meta.markOnce('grants', 'jti-1', 60),
      () => meta.acquireLock('rotate', 'owner-a', 1000),
      () => meta.listKeys(),
      () => shares.checkPersistence(),
      () => meta.checkPersistence(),
    ];
    for (const call of calls) {
      const error = await rejectionOf(call);
      expect(error.code).toBe('ERR_STORE_IO');
      expect(error.message).toBe(PERSISTENCE_OFF_MESSAGE);
    }
    expect(await client.dbsize()).toBe(0);
  });

  it("'refuse' works once persistence is on (AOF or save points), and checkPersistence() re-reads the settings", async () => {
    const shares = createRedisShareStore({ nodeId: 'node-1', redis: client, requirePersistence: 'refuse' });
    await expectKosError(() => shares.put(makeShare('share-1')), 'ERR_STORE_IO');
    await client.config('SET', 'appendonly', 'yes');
    await expectKosError(() => shares.put(makeShare('share-1')), 'ERR_STORE_IO');
    expect((await shares.checkPersistence()).state).toBe('on');
    await shares.put(makeShare('share-1'));
    expect(await shares.get('share-1')).toEqual(makeShare('share-1'));

    await client.config('SET', 'appendonly', 'no');
    await client.config('SET', 'save', '3600 1');
    const meta = createRedisMetadataStore({ redis: client, requirePersistence: 'refuse' });
    expect(await meta.markOnce('grants', 'jti-1', 60)).toBe(true);
    expect(await meta.checkPersistence()).toEqual({
      state: 'on',
      servers: [{ state: 'on', appendonly: 'no', save: '3600 1' }],
    });
  });

  it("'warn' calls onWarning exactly once per store and carries on", async () => {
    const onWarning = vi.fn();
    const shares = createRedisShareStore({ nodeId: 'node-1', redis: client, requirePersistence: 'warn', onWarning });
    await Promise.all([shares.put(makeShare('share-1')), shares.get('share-0')]);
    await shares.put(makeShare('share-2'));
    expect(await shares.get('share-1')).toEqual(makeShare('share-1'));
    expect(await shares.delete('share-2')).toBe(true);
    expect((await shares.checkPersistence()).state).toBe('off');
    expect(onWarning).toHaveBeenCalledTimes(1);
    expect(String(onWarning.mock.calls[0]?.[0])).toContain(PERSISTENCE_OFF_MESSAGE);

    const metaWarning = vi.fn();
    const meta = createRedisMetadataStore({ redis: client, onWarning: metaWarning });
    expect(await meta.markOnce('grants', 'jti-1', 60)).toBe(true);
    expect(await meta.putKey(makeKeyRecord('k1'), null)).toBe(1);
    expect(metaWarning).toHaveBeenCalledTimes(1);
  });

  it("'warn' without onWarning emits one process warning (code KOS_REDIS_PERSISTENCE)", async () => {
    const emitWarning = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      const meta = createRedisMetadataStore({ redis: client });
      await meta.markOnce('grants', 'jti-1', 60);
      await meta.markOnce('grants', 'jti-2', 60);
      expect(emitWarning).toHaveBeenCalledTimes(1);
      expect(emitWarning.mock.calls[0]?.[1]).toEqual({ code: 'KOS_REDIS_PERSISTENCE' });
    } finally {
      emitWarning.mockRestore();
    }
  });

  it("'warn' stays silent when persistence is on, and 'off' never warns", async () => {
    const onWarning = vi.fn();
    const off = createRedisMetadataStore({ redis: client, requirePersistence: 'off', onWarning });
    expect(await off.markOnce('grants', 'jti-1', 60)).toBe(true);
    await client.config('SET', 'appendonly', 'yes');
    const on = createRedisMetadataStore({ redis: client, requirePersistence: 'warn', onWarning });
    expect(await on.markOnce('grants', 'jti-2', 60)).toBe(true);
    expect(onWarning).not.toHaveBeenCalled();
  });

  it('treats a server that refuses CONFIG (managed Redis) as unknown: warns once, even in refuse mode', async () => {
    const other = await connectClient(noConfigServer.port);
    const onWarning = vi.fn();
    const shares = createRedisShareStore({ nodeId: 'node-1', redis: other, requirePersistence: 'refuse', onWarning });
    await shares.put(makeShare('share-1'));
    expect(await shares.get('share-1')).toEqual(makeShare('share-1'));
    expect(onWarning).toHaveBeenCalledTimes(1);
    expect(String(onWarning.mock.calls[0]?.[0])).toContain('could not read redis persistence settings');
    const status = await shares.checkPersistence();
    expect(status.state).toBe('unknown');
    expect(status.servers[0]?.reason).toMatch(/unknown command/i);
    expect(onWarning).toHaveBeenCalledTimes(1);
    closeClient(other);
  });
});

describeRedis('Redis durability and outages', () => {
  it('acknowledged shares and replay-cache entries survive SIGKILL of an AOF (appendfsync always) server', async () => {
    const server = (await startRedisServer({ persistence: 'aof' }))!;
    try {
      const before = await connectClient(server.port);
      const shares = createRedisShareStore({ nodeId: 'node-1', redis: before, requirePersistence: 'refuse' });
      const meta = createRedisMetadataStore({ redis: before, requirePersistence: 'refuse' });
      const stored = Array.from({ length: 20 }, (_, i) => makeShare(`share-${i}`, { x: i + 1, seed: i }));
      await Promise.all(stored.map((share) => shares.put(share)));
      for (let i = 0; i < 10; i++) expect(await meta.markOnce('grants', `jti-${i}`, 600)).toBe(true);
      await meta.putKey(makeKeyRecord('k1', 5), null);
      await meta.addOps('k1', 1, 42);
      await meta.putShareSet(makeShareSet('set-1', 'k1', 1, 'client-1'));
      expect(await meta.acquireLock('rotate-k1', 'owner-a', 60_000)).toBe(true);

      await server.kill('SIGKILL');
      closeClient(before);
      await server.restart();

      const after = await connectClient(server.port);
      const sharesAfter = createRedisShareStore({ nodeId: 'node-1', redis: after, requirePersistence: 'refuse' });
      const metaAfter = createRedisMetadataStore({ redis: after, requirePersistence: 'refuse' });
      expect(await Promise.all(stored.map((share) => sharesAfter.get(share.shareId)))).toEqual(stored);
      for (let i = 0; i < 10; i++) expect(await metaAfter.markOnce('grants', `jti-${i}`, 600)).toBe(false);
      expect(await metaAfter.markOnce('grants', 'jti-new', 600)).toBe(true);
      expect(await metaAfter.getKey('k1')).toEqual({ value: makeKeyRecord('k1', 5), revision: 1 });
      expect(await metaAfter.getOps('k1', 1)).toBe(42);
      expect(await metaAfter.listShareSets({ owner: 'client-1' })).toEqual([
        makeShareSet('set-1', 'k1', 1, 'client-1'),
      ]);
      expect(await metaAfter.acquireLock('rotate-k1', 'owner-b', 60_000)).toBe(false);
      closeClient(after);
    } finally {
      await server.stop();
    }
  });

  it('control: the same writes are lost on a server without persistence (so the test above can fail)', async () => {
    const server = (await startRedisServer({ persistence: 'none' }))!;
    try {
      const before = await connectClient(server.port);
      const shares = createRedisShareStore({ nodeId: 'node-1', redis: before, requirePersistence: 'off' });
      const meta = createRedisMetadataStore({ redis: before, requirePersistence: 'off' });
      await shares.put(makeShare('share-1'));
      expect(await meta.markOnce('grants', 'jti-1', 600)).toBe(true);
      await server.kill('SIGKILL');
      closeClient(before);
      await server.restart();
      const after = await connectClient(server.port);
      const sharesAfter = createRedisShareStore({ nodeId: 'node-1', redis: after, requirePersistence: 'off' });
      const metaAfter = createRedisMetadataStore({ redis: after, requirePersistence: 'off' });
      expect(await sharesAfter.get('share-1')).toBeUndefined();
      expect(await metaAfter.markOnce('grants', 'jti-1', 600)).toBe(true);
      closeClient(after);
    } finally {
      await server.stop();
    }
  });

  it('a store whose server is down rejects quickly with ERR_STORE_IO, then recovers when it is back', async () => {
    const server = (await startRedisServer({ persistence: 'aof' }))!;
    try {
      const client = await connectClient(server.port);
      const shares = createRedisShareStore({ nodeId: 'node-1', redis: client, requirePersistence: 'refuse' });
      const meta = createRedisMetadataStore({ redis: client, requirePersistence: 'refuse' });
      await shares.put(makeShare('share-1'));
      await meta.markOnce('grants', 'jti-1', 600);

      await server.kill('SIGKILL');
      const share = makeShare('share-2', { seed: 123 });
      const started = Date.now();
      const errors = [
        await rejectionOf(() => shares.put(share)),
        await rejectionOf(() => shares.get('share-1')),
        await rejectionOf(() => meta.markOnce('grants', 'jti-2', 600)),
        await rejectionOf(() => meta.getKey('k1')),
      ];
      expect(Date.now() - started).toBeLessThan(2000);
      for (const error of errors) expect(error.code).toBe('ERR_STORE_IO');
      for (const form of byteForms(share.value)) expect(fullText(errors[0])).not.toContain(form);

      // A store created while Redis is down fails its persistence check with ERR_STORE_IO and retries it later.
      const late = createRedisMetadataStore({ redis: client, requirePersistence: 'refuse' });
      const lateError = await rejectionOf(() => late.markOnce('grants', 'jti-3', 600));
      expect(lateError.code).toBe('ERR_STORE_IO');
      expect(lateError.message).not.toBe(PERSISTENCE_OFF_MESSAGE);

      await server.restart();
      await vi.waitFor(() => expect(client.status).toBe('ready'), { timeout: 5000, interval: 25 });
      expect(await shares.get('share-1')).toEqual(makeShare('share-1'));
      expect(await meta.markOnce('grants', 'jti-1', 600)).toBe(false);
      expect(await late.markOnce('grants', 'jti-3', 600)).toBe(true);
      closeClient(client);
    } finally {
      await server.stop();
    }
  });

  it('a client that never connected (nothing listening) gives ERR_STORE_IO quickly', async () => {
    const server = (await startRedisServer({ persistence: 'none' }))!;
    const port = server.port;
    await server.stop();
    const client = new Redis({ ...CLIENT_OPTIONS, port });
    openClients.add(client);
    client.on('error', () => {});
    client.connect().catch(() => {});
    const shares = createRedisShareStore({ nodeId: 'node-1', redis: client, requirePersistence: 'off' });
    const started = Date.now();
    await expectKosError(() => shares.put(makeShare('share-1')), 'ERR_STORE_IO');
    await expectKosError(() => shares.get('share-1'), 'ERR_STORE_IO');
    expect(Date.now() - started).toBeLessThan(1000);
    closeClient(client);
  });
});
