import { mkdtemp, rm, stat } from 'node:fs/promises';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { createOpener } from '@kos/core/client';
import { createApp as createExpressApp } from '@kos/example-express';
import { createApp as createHonoApp } from '@kos/example-hono';
import { createApp as createKoaApp } from '@kos/example-koa';
import {
  createMemoryRecordStore,
  DEFAULT_RECORDS_KEY_PREFIX,
  openRedisRecordStore,
  type RecordStore,
  recordStoreConfigFromEnv,
  recordStoreFromEnv,
} from '@kos/example-shared';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisServer,
  sendRedisCommand,
  startRedisServer,
} from '../../test-support/redis-server.js';

/**
 * The examples' record store (examples/shared/src/record-store.ts): in memory by default, in
 * Redis with KOS_EXAMPLE_RECORDS_REDIS_URL, shared by several stores (instances), in
 * insertion order, and failing with typed errors — never an unhandled rejection — when what
 * Redis holds is not a sealed envelope or Redis is gone. Then the three example apps on it.
 */

const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
const describeRedis = haveRedis ? describe : describe.skip;

/** A well-formed JSON-form envelope (the store checks the shape only). */
function envelope(n: number) {
  return {
    kos: 1,
    alg: 'A256GCM',
    kid: 'records',
    ver: 1,
    did: `record-${n}`,
    kc: 'a2V5LWNvbW1pdG1lbnQ',
    nonce: 'bm9uY2Utbm9uY2U',
    ct: `Y2lwaGVydGV4dC0${n}`,
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  await new Promise((ok) => server.close(ok));
  return port;
}

let prefixes = 0;
const uniquePrefix = () => `test-records-${process.pid}-${++prefixes}:`;

describe('the in-memory record store (npm start)', () => {
  it('keeps records in insertion order; a replaced record keeps its place', async () => {
    const store = createMemoryRecordStore();
    expect(store.kind).toBe('memory');
    await store.put('a', envelope(1) as never);
    await store.put('b', envelope(2) as never);
    await store.put('a', envelope(3) as never);
    expect(await store.get('a')).toEqual({ id: 'a', data: envelope(3) });
    expect(await store.get('missing')).toBeUndefined();
    expect((await store.list()).map((record) => record.id)).toEqual(['a', 'b']);
    await store.close();
  });

  it('is what an environment without KOS_EXAMPLE_RECORDS_REDIS_URL gets', async () => {
    expect(recordStoreConfigFromEnv({})).toBeUndefined();
    expect(recordStoreConfigFromEnv({ KOS_EXAMPLE_RECORDS_REDIS_URL: '' })).toBeUndefined();
    expect((await recordStoreFromEnv({})()).kind).toBe('memory');
  });
});

describe('KOS_EXAMPLE_RECORDS_REDIS_URL is checked at start-up', () => {
  it('accepts redis:// and rediss:// URLs with a host, credentials and a database number', () => {
    for (const url of [
      'redis://127.0.0.1:6379',
      'redis://localhost',
      'rediss://user:secret@redis.internal:6380/2',
      'redis://:secret@[::1]:6379/',
    ]) {
      expect(recordStoreConfigFromEnv({ KOS_EXAMPLE_RECORDS_REDIS_URL: url })).toEqual({
        url,
        keyPrefix: DEFAULT_RECORDS_KEY_PREFIX,
      });
    }
    expect(DEFAULT_RECORDS_KEY_PREFIX.startsWith('kos:')).toBe(false);
    expect(
      recordStoreConfigFromEnv({
        KOS_EXAMPLE_RECORDS_REDIS_URL: 'redis://127.0.0.1:6379',
        KOS_EXAMPLE_RECORDS_REDIS_PREFIX: 'app:{records}:',
      }),
    ).toEqual({ url: 'redis://127.0.0.1:6379', keyPrefix: 'app:{records}:' });
  });

  it.each([
    ['not a URL', 'not a url'],
    ['another scheme', 'http://127.0.0.1:6379'],
    ['no host', 'redis://'],
    ['a path that is not a database number', 'redis://:hunter2@127.0.0.1:6379/records'],
    ['a query', 'redis://127.0.0.1:6379?db=1'],
    ['port 0', 'redis://127.0.0.1:0'],
    ['whitespace', ' redis://127.0.0.1:6379'],
  ])('refuses %s with ERR_INVALID_OPTIONS, without echoing the URL', (_what, url) => {
    let error: unknown;
    try {
      recordStoreConfigFromEnv({ KOS_EXAMPLE_RECORDS_REDIS_URL: url });
    } catch (caught) {
      error = caught;
    }
    expect(error).toMatchObject({ code: 'ERR_INVALID_OPTIONS', details: { option: 'KOS_EXAMPLE_RECORDS_REDIS_URL' } });
    expect((error as Error).message).not.toContain('hunter2');
  });

  it.each([
    ['under kos: (KOS metadata)', 'kos:records:'],
    ['with a space', 'my records:'],
    ['too long', 'x'.repeat(129)],
  ])('refuses a key prefix %s', (_what, prefix) => {
    expect(() =>
      recordStoreConfigFromEnv({
        KOS_EXAMPLE_RECORDS_REDIS_URL: 'redis://127.0.0.1:6379',
        KOS_EXAMPLE_RECORDS_REDIS_PREFIX: prefix,
      }),
    ).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTIONS' }));
  });

  it('refuses a prefix without a URL (instead of silently keeping records in memory)', () => {
    expect(() => recordStoreConfigFromEnv({ KOS_EXAMPLE_RECORDS_REDIS_PREFIX: 'app:' })).toThrow(
      /KOS_EXAMPLE_RECORDS_REDIS_PREFIX is set but KOS_EXAMPLE_RECORDS_REDIS_URL is not/,
    );
  });

  it('an example app refuses a bad URL before KOS starts (nothing is created)', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'kos-records-bad-url-'));
    try {
      const dir = join(parent, '.kos');
      await expect(
        createExpressApp({ dir, env: { KOS_EXAMPLE_RECORDS_REDIS_URL: 'http://127.0.0.1:6379' } }),
      ).rejects.toMatchObject({ code: 'ERR_INVALID_OPTIONS' });
      await expect(stat(dir)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });
});

describeRedis('the Redis record store against a real redis-server', () => {
  let redis: RedisServer;
  const stores: RecordStore[] = [];
  const logs: string[] = [];
  const open = async (keyPrefix: string, url = redis.url) => {
    const store = await openRedisRecordStore({ url, keyPrefix, log: (line) => logs.push(line), timeoutMs: 2000 });
    stores.push(store);
    return store;
  };
  const command = async (...args: string[]) => (await sendRedisCommand(redis.port, args)) ?? '';

  beforeAll(async () => {
    redis = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
  });
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((store) => store.close()));
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('two stores (two instances) share records, listed in insertion order, under their prefix only', async () => {
    const prefix = uniquePrefix();
    const a = await open(prefix);
    const b = await open(prefix);
    expect(a.kind).toBe('redis');
    expect(a.description).toBe(`redis redis://127.0.0.1:${redis.port}, keys ${prefix}*`);
    expect(await b.list()).toEqual([]);
    await a.put('r1', envelope(1) as never);
    await b.put('r2', envelope(2) as never);
    await a.put('r3', envelope(3) as never);
    await b.put('r1', envelope(4) as never); // replaced: keeps its place
    expect(await b.get('r1')).toEqual({ id: 'r1', data: envelope(4) });
    expect(await a.get('r2')).toEqual({ id: 'r2', data: envelope(2) });
    expect(await a.get('nope')).toBeUndefined();
    for (const store of [a, b]) {
      expect(await store.list()).toEqual([
        { id: 'r1', data: envelope(4) },
        { id: 'r2', data: envelope(2) },
        { id: 'r3', data: envelope(3) },
      ]);
    }
    // JSON strings in one hash, the order in a sorted set, a counter; nothing outside the prefix.
    expect(await command('HGET', `${prefix}data`, 'r2')).toContain(JSON.stringify(envelope(2)));
    const keys = await command('KEYS', '*');
    for (const key of ['data', 'order', 'seq']) expect(keys).toContain(`${prefix}${key}`);
    expect(keys.split('\r\n').filter((line) => line.startsWith('kos'))).toEqual([]);
    // Another prefix is another store.
    expect(await (await open(uniquePrefix())).list()).toEqual([]);
  });

  it.each([
    ['not JSON', '{"kos":1,'],
    ['JSON that is not a sealed envelope (e.g. a plaintext record)', JSON.stringify({ patient: 'Ada' })],
    ['an envelope with an extra field', JSON.stringify({ ...envelope(1), extra: true })],
  ])('bad stored data (%s): get and list fail with ERR_STORE_CORRUPT, nothing is served', async (_what, text) => {
    const prefix = uniquePrefix();
    const store = await open(prefix);
    await store.put('good', envelope(1) as never);
    await command('HSET', `${prefix}data`, 'bad', text);
    await command('ZADD', `${prefix}order`, '99', 'bad');
    await expect(store.get('bad')).rejects.toMatchObject({ code: 'ERR_STORE_CORRUPT', status: 500 });
    await expect(store.list()).rejects.toMatchObject({ code: 'ERR_STORE_CORRUPT' });
    expect(await store.get('good')).toEqual({ id: 'good', data: envelope(1) });
  });

  it('an id in the order set without its record is reported, not skipped', async () => {
    const prefix = uniquePrefix();
    const store = await open(prefix);
    await command('ZADD', `${prefix}order`, '1', 'ghost');
    await expect(store.list()).rejects.toMatchObject({
      code: 'ERR_STORE_CORRUPT',
      message: expect.stringContaining('listed but missing'),
    });
  });

  it('an unreachable Redis at start-up: ERR_STORE_IO, no password in the message', async () => {
    const port = await freePort();
    const started = Date.now();
    const error = await open(uniquePrefix(), `redis://:hunter2@127.0.0.1:${port}`).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'ERR_STORE_IO', status: 503 });
    expect((error as Error).message).toContain(`redis://127.0.0.1:${port}`);
    expect((error as Error).message).not.toContain('hunter2');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('Redis gone: every call fails at once with ERR_STORE_IO; back: the store works again', async () => {
    const own = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
    try {
      const store = await open('outage:', own.url);
      await store.put('before', envelope(1) as never);
      await own.kill();
      for (const call of [() => store.get('before'), () => store.list(), () => store.put('x', envelope(2) as never)]) {
        const started = Date.now();
        await expect(call()).rejects.toMatchObject({
          code: 'ERR_STORE_IO',
          status: 503,
          message: expect.stringMatching(/^record store unavailable \(redis (get|list|put) failed\)$/),
        });
        expect(Date.now() - started).toBeLessThan(3000);
      }
      // The outage is logged from the client's 'close'/'error' events, which may come after a
      // call already failed on the dead socket.
      await expect
        .poll(() => logs.some((line) => line.includes(`record store redis://127.0.0.1:${own.port} unreachable`)))
        .toBe(true);
      await own.restart();
      const deadline = Date.now() + 10_000;
      let listed: unknown;
      while (Date.now() < deadline) {
        listed = await store.list().catch(() => undefined);
        if (listed !== undefined) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(listed).toEqual([{ id: 'before', data: envelope(1) }]);
      expect(logs).toContain(`kos example: record store redis://127.0.0.1:${own.port} is back`);
    } finally {
      await own.stop();
    }
  });
});

interface Running {
  base: string;
  mint: (request: { clientId: string; score: number }) => Promise<string>;
  stop(): Promise<void>;
}

async function listen(server: Server): Promise<string> {
  if (!server.listening) await new Promise((r) => server.once('listening', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

type Options = Parameters<typeof createExpressApp>[0];

/** A started example: its base URL, dev-token minting, and a stop that closes the server, KOS and the records. */
async function exampleRunning(
  server: Server,
  started: {
    kos: { close(): Promise<void> };
    runtime: { mintDevToken?: unknown };
    records: { close(): Promise<void> };
  },
): Promise<Running> {
  return {
    base: await listen(server),
    mint: started.runtime.mintDevToken as never,
    stop: async () => {
      server.close();
      await started.kos.close();
      await started.records.close();
    },
  };
}

const starters: Record<string, (options: Options) => Promise<Running>> = {
  express: async (options) => {
    const started = await createExpressApp(options);
    return exampleRunning(started.app.listen(0, '127.0.0.1'), started);
  },
  hono: async (options) => {
    const started = await createHonoApp(options);
    return exampleRunning(
      serve({ fetch: started.app.fetch, port: 0, hostname: '127.0.0.1' }) as unknown as Server,
      started,
    );
  },
  koa: async (options) => {
    const started = await createKoaApp(options);
    return exampleRunning(started.app.listen(0, '127.0.0.1'), started);
  },
};

describeRedis.each(Object.keys(starters))('the %s example with KOS_EXAMPLE_RECORDS_REDIS_URL', (framework) => {
  let redis: RedisServer;
  let dir: string;
  let env: Record<string, string>;
  const start = () => (starters[framework] as (options: Options) => Promise<Running>)({ dir, env });
  const running: Running[] = [];

  beforeAll(async () => {
    redis = (await startRedisServer()) as RedisServer;
    dir = await mkdtemp(join(tmpdir(), `kos-records-${framework}-`));
    env = { KOS_EXAMPLE_RECORDS_REDIS_URL: redis.url, KOS_EXAMPLE_RECORDS_REDIS_PREFIX: `example-${framework}:` };
  });
  afterAll(async () => {
    await Promise.all(running.map((app) => app.stop()));
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('records outlive the process; bad data and a lost Redis answer typed JSON errors', async () => {
    const get = async (app: Running, path: string, score: number) => {
      const token = await app.mint({ clientId: `reader-${score}`, score });
      return fetch(`${app.base}${path}`, { headers: { authorization: `Bearer ${token}` } });
    };
    const post = async (app: Running, body: unknown) =>
      fetch(`${app.base}/records`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${await app.mint({ clientId: 'writer', score: 90 })}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify(body),
      });

    const first = await start();
    running.push(first);
    const record = { patient: 'Ada', diagnosis: 'flu' };
    const created = await post(first, record);
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    const stored = (await sendRedisCommand(redis.port, ['HGET', `example-${framework}:data`, id])) ?? '';
    expect(stored).toContain('"ct":');
    expect(stored).not.toContain('flu');
    await first.stop();
    running.pop();

    // A new process (another instance) serves what the first one stored.
    const app = await start();
    running.push(app);
    const low = await get(app, `/records/${id}`, 30);
    expect(low.status).toBe(200);
    expect(low.headers.get('kos-tier')).toBe('low');
    expect(await low.json()).toEqual({ id, data: record });
    const high = await get(app, `/records/${id}`, 95);
    expect(high.headers.get('kos-tier')).toBe('high');
    expect(((await createOpener().openBody(await high.json())) as { data: unknown }).data).toEqual(record);
    const second = await post(app, { patient: 'Grace' });
    const list = await get(app, '/records', 30);
    expect(await list.json()).toEqual([
      { id, data: record },
      { id: ((await second.json()) as { id: string }).id, data: { patient: 'Grace' } },
    ]);
    expect((await get(app, '/records/none', 30)).status).toBe(404);

    // Something that is not a sealed envelope in the store: refused, never served.
    await sendRedisCommand(redis.port, ['HSET', `example-${framework}:data`, 'planted', '{"patient":"Eve"}']);
    await sendRedisCommand(redis.port, ['ZADD', `example-${framework}:order`, '1000', 'planted']);
    for (const path of ['/records/planted', '/records']) {
      const response = await get(app, path, 30);
      expect(response.status).toBe(500);
      expect(await response.json()).toEqual({
        error: { code: 'ERR_STORE_CORRUPT', message: 'stored record is unreadable (not a sealed envelope)' },
      });
    }

    // Redis gone: 503 ERR_STORE_IO on every route (KOS itself runs on its embedded default).
    await redis.kill();
    for (const response of [
      await get(app, `/records/${id}`, 30),
      await get(app, '/records', 95),
      await post(app, { patient: 'Lost' }),
    ]) {
      expect(response.status).toBe(503);
      expect(await response.json()).toEqual({
        error: { code: 'ERR_STORE_IO', message: expect.stringMatching(/^record store unavailable/) },
      });
    }
  });

  it('an unreachable Redis stops the app at start-up with ERR_STORE_IO', async () => {
    const own = await mkdtemp(join(tmpdir(), `kos-records-${framework}-down-`));
    try {
      const port = await freePort();
      await expect(
        (starters[framework] as (options: Options) => Promise<Running>)({
          dir: own,
          env: { KOS_EXAMPLE_RECORDS_REDIS_URL: `redis://127.0.0.1:${port}` },
        }),
      ).rejects.toMatchObject({ code: 'ERR_STORE_IO' });
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });
});
