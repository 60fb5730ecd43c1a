// Where the example apps keep their records: the sealed envelopes `kos.seal` returns. In
// memory by default (one process, gone on restart); in Redis when KOS_EXAMPLE_RECORDS_REDIS_URL
// is set, so that several instances behind a load balancer (`npm run cluster`) serve the same
// records. A real application keeps its sealed envelopes in its own database.
import { type EnvelopeJson, httpStatusFor, isEnvelopeJson, KosError, toErrorBody } from '@kos/core';
import type { Redis } from 'ioredis';

/** The environment variable that turns the Redis store on: `redis://[user:password@]host:port[/db]` or `rediss://…`. */
export const RECORDS_REDIS_URL_ENV = 'KOS_EXAMPLE_RECORDS_REDIS_URL';
/** Optional key prefix for the Redis store (default {@link DEFAULT_RECORDS_KEY_PREFIX}). */
export const RECORDS_REDIS_PREFIX_ENV = 'KOS_EXAMPLE_RECORDS_REDIS_PREFIX';
/** Never under `kos:`, where KOS keeps its metadata and the nodes their shares. */
export const DEFAULT_RECORDS_KEY_PREFIX = 'kos-example:records:';

const PREFIX_PATTERN = /^[A-Za-z0-9._:{}-]{1,128}$/;
const DB_PATTERN = /^(\/(\d{1,5})?)?$/;
const CONNECT_TIMEOUT_MS = 5_000;
const COMMAND_TIMEOUT_MS = 5_000;

/** One record as the routes return it: its id and its sealed envelope (JSON form). */
export interface StoredRecord {
  readonly id: string;
  readonly data: EnvelopeJson;
}

/**
 * The examples' record store. Every failure is a KosError: `ERR_STORE_IO` (503) when the
 * store cannot be reached, `ERR_STORE_CORRUPT` (500) when what it holds is not a sealed
 * envelope (never handed to the KOS middleware, which would pass a non-envelope through as is).
 */
export interface RecordStore {
  readonly kind: 'memory' | 'redis';
  /** Where the records are, safe to print (no password). */
  readonly description: string;
  /** Stores (or replaces, keeping its place in the list) the record `id`. */
  put(id: string, data: EnvelopeJson): Promise<void>;
  get(id: string): Promise<StoredRecord | undefined>;
  /** Every record, oldest first. */
  list(): Promise<StoredRecord[]>;
  /** Closes the connection (the memory store has none). */
  close(): Promise<void>;
}

/** A store in this process's memory: what `npm start` uses. */
export function createMemoryRecordStore(): RecordStore {
  const records = new Map<string, StoredRecord>();
  return {
    kind: 'memory',
    description: "this process's memory",
    async put(id, data) {
      records.set(id, { id, data });
    },
    async get(id) {
      return records.get(id);
    },
    async list() {
      return [...records.values()];
    },
    async close() {},
  };
}

/** A checked Redis store configuration. */
export interface RedisRecordStoreConfig {
  readonly url: string;
  readonly keyPrefix: string;
}

function invalidOption(name: string, message: string): KosError {
  return new KosError('ERR_INVALID_OPTIONS', `${name} ${message}`, { details: { option: name } });
}

/** `redis://host:port`, without credentials, for messages. */
function describeUrl(url: URL): string {
  return `${url.protocol}//${url.hostname}${url.port ? `:${url.port}` : ''}${url.pathname.length > 1 ? url.pathname : ''}`;
}

/**
 * Checks a Redis URL and key prefix: `redis:` or `rediss:`, a host, at most a database number
 * as path, no query or fragment; a prefix of letters, digits and `. _ : { } -`, not under `kos:`.
 *
 * @throws KosError ERR_INVALID_OPTIONS naming the variable (never echoing the URL: it may hold a password).
 */
export function checkRedisRecordStoreConfig(
  url: string,
  keyPrefix = DEFAULT_RECORDS_KEY_PREFIX,
): RedisRecordStoreConfig {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (
    parsed === undefined ||
    (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') ||
    parsed.hostname === '' ||
    !DB_PATTERN.test(parsed.pathname) ||
    parsed.search !== '' ||
    parsed.hash !== '' ||
    /\s/.test(url)
  ) {
    throw invalidOption(
      RECORDS_REDIS_URL_ENV,
      'must be a redis:// or rediss:// URL with a host and at most a database number (redis://[user:password@]host:port[/db])',
    );
  }
  const port = parsed.port === '' ? 6379 : Number(parsed.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalidOption(RECORDS_REDIS_URL_ENV, 'has a port outside 1–65535');
  }
  if (!PREFIX_PATTERN.test(keyPrefix)) {
    throw invalidOption(RECORDS_REDIS_PREFIX_ENV, 'must be 1–128 letters, digits or . _ : { } -');
  }
  if (keyPrefix.startsWith('kos:')) {
    throw invalidOption(RECORDS_REDIS_PREFIX_ENV, 'must not start with kos: (KOS metadata and node shares live there)');
  }
  return { url, keyPrefix };
}

/**
 * What the environment asks for: undefined (memory) when `KOS_EXAMPLE_RECORDS_REDIS_URL` is
 * unset or empty, else the checked Redis configuration. Called before anything starts.
 *
 * @throws KosError ERR_INVALID_OPTIONS for a malformed URL or prefix, or a prefix without a URL.
 */
export function recordStoreConfigFromEnv(
  env: Readonly<Record<string, string | undefined>> = process.env,
): RedisRecordStoreConfig | undefined {
  const url = env[RECORDS_REDIS_URL_ENV];
  const prefix = env[RECORDS_REDIS_PREFIX_ENV];
  if (url === undefined || url === '') {
    if (prefix !== undefined && prefix !== '') {
      throw invalidOption(RECORDS_REDIS_PREFIX_ENV, `is set but ${RECORDS_REDIS_URL_ENV} is not`);
    }
    return undefined;
  }
  return checkRedisRecordStoreConfig(url, prefix === undefined || prefix === '' ? undefined : prefix);
}

/** The reason of an ioredis error, without the command arguments ioredis appends (they hold record data). */
function safeReason(error: unknown): string {
  const raw = error instanceof Error ? error.message : String(error);
  const cut = raw.split(/,? with args beginning with/i)[0] ?? '';
  return cut.length > 200 ? `${cut.slice(0, 200)}…` : cut;
}

function storeIo(operation: string, error: unknown): KosError {
  if (error instanceof KosError) return error;
  return new KosError('ERR_STORE_IO', `record store unavailable (redis ${operation} failed)`, {
    details: { operation },
    cause: new Error(safeReason(error)),
  });
}

function corrupt(id: string, why: string): KosError {
  return new KosError('ERR_STORE_CORRUPT', `stored record is unreadable (${why})`, { details: { id } });
}

function parseStored(id: string, text: string | null): StoredRecord {
  if (text === null) throw corrupt(id, 'listed but missing');
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw corrupt(id, 'not JSON');
  }
  if (!isEnvelopeJson(data)) throw corrupt(id, 'not a sealed envelope');
  return { id, data };
}

/**
 * Adds the record and, the first time its id is seen, gives it the next sequence number in
 * the order set: one atomic step, so the list is in insertion order on every instance.
 */
const PUT_SCRIPT = `
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
end
return 1
`;

export interface RedisRecordStoreOptions extends RedisRecordStoreConfig {
  /** Told once per outage and when Redis is back (default: console.warn). Never given a password. */
  readonly log?: (message: string) => void;
  /** Connect timeout and per-command timeout (default 5000 ms each). */
  readonly timeoutMs?: number;
}

/**
 * A store in Redis: the envelopes as JSON strings in the hash `<prefix>data` (field = id),
 * their order in the sorted set `<prefix>order` (score from the counter `<prefix>seq`).
 * Connects before it resolves; nothing is queued while Redis is away (every call fails at
 * once with ERR_STORE_IO) and ioredis reconnects on its own.
 *
 * @throws KosError ERR_INVALID_OPTIONS for a bad URL or prefix, ERR_STORE_IO when no
 *   connection is made within the timeout.
 */
export async function openRedisRecordStore(options: RedisRecordStoreOptions): Promise<RecordStore> {
  const { url, keyPrefix } = checkRedisRecordStoreConfig(options.url, options.keyPrefix);
  const parsed = new URL(url);
  const where = describeUrl(parsed);
  const log = options.log ?? ((message: string) => console.warn(message));
  const timeout = options.timeoutMs ?? CONNECT_TIMEOUT_MS;
  const { Redis: RedisClass } = await import('ioredis');
  const redis: Redis = new RedisClass(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    autoResendUnfulfilledCommands: false,
    connectTimeout: timeout,
    commandTimeout: options.timeoutMs ?? COMMAND_TIMEOUT_MS,
  });
  // Reported once per outage (ioredis keeps reconnecting; calls fail meanwhile) and when it is over.
  let started = false;
  let up = false;
  const down = (reason: string) => {
    if (!up) return;
    up = false;
    log(`kos example: record store ${where} unreachable (${reason})`);
  };
  redis.on('error', (error: unknown) => down(safeReason(error)));
  redis.on('close', () => down('connection closed'));
  redis.on('ready', () => {
    if (up || !started) return;
    up = true;
    log(`kos example: record store ${where} is back`);
  });
  let timer: NodeJS.Timeout | undefined;
  const connecting = redis.connect();
  connecting.catch(() => undefined); // when the deadline wins, a later rejection is expected
  try {
    await Promise.race([
      connecting,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no connection within ${timeout} ms`)), timeout);
      }),
    ]);
    await redis.ping();
  } catch (error) {
    redis.disconnect();
    throw new KosError('ERR_STORE_IO', `record store: cannot connect to redis ${where} (${safeReason(error)})`, {
      details: { operation: 'connect' },
    });
  } finally {
    clearTimeout(timer);
  }
  started = true;
  up = true;
  const keys = { data: `${keyPrefix}data`, order: `${keyPrefix}order`, seq: `${keyPrefix}seq` };

  return {
    kind: 'redis',
    description: `redis ${where}, keys ${keyPrefix}*`,
    async put(id, data) {
      const text = JSON.stringify(data);
      try {
        await redis.eval(PUT_SCRIPT, 3, keys.data, keys.order, keys.seq, id, text);
      } catch (error) {
        throw storeIo('put', error);
      }
    },
    async get(id) {
      let text: string | null;
      try {
        text = await redis.hget(keys.data, id);
      } catch (error) {
        throw storeIo('get', error);
      }
      return text === null ? undefined : parseStored(id, text);
    },
    async list() {
      let ids: string[];
      let texts: (string | null)[];
      try {
        ids = await redis.zrange(keys.order, 0, -1);
        texts = ids.length === 0 ? [] : await redis.hmget(keys.data, ...ids);
      } catch (error) {
        throw storeIo('list', error);
      }
      return ids.map((id, i) => parseStored(id, texts[i] ?? null));
    },
    async close() {
      started = false;
      up = false;
      try {
        await redis.quit();
      } catch {
        redis.disconnect();
      }
    },
  };
}

/**
 * The store the environment asks for, in two steps: this call checks the variables (so a bad
 * URL stops the app before anything starts); the function it returns opens the store —
 * Redis when `KOS_EXAMPLE_RECORDS_REDIS_URL` is set (connected before it resolves), else memory.
 *
 * @throws KosError ERR_INVALID_OPTIONS for bad variables; the opener rejects with ERR_STORE_IO
 *   when Redis cannot be reached.
 */
export function recordStoreFromEnv(
  env: Readonly<Record<string, string | undefined>> = process.env,
  options: Pick<RedisRecordStoreOptions, 'log' | 'timeoutMs'> = {},
): () => Promise<RecordStore> {
  const config = recordStoreConfigFromEnv(env);
  return async () =>
    config === undefined ? createMemoryRecordStore() : openRedisRecordStore({ ...config, ...options });
}

/**
 * Starts an example's KOS middleware and its record store, in the order every example needs: a
 * malformed KOS_EXAMPLE_RECORDS_REDIS_URL is refused before KOS starts, the store opens once KOS
 * is ready, and KOS is closed again if the store cannot open. `given` replaces the store from
 * `env`.
 */
export async function startWithRecords<Kos extends { readonly ready: Promise<unknown>; close(): Promise<void> }>(
  given: RecordStore | undefined,
  env: Readonly<Record<string, string | undefined>>,
  startKos: () => Kos,
): Promise<{ kos: Kos; runtime: Awaited<Kos['ready']>; records: RecordStore }> {
  const openRecords = given ? async () => given : recordStoreFromEnv(env);
  const kos = startKos();
  const runtime = (await kos.ready) as Awaited<Kos['ready']>;
  const records = await openRecords().catch(async (error: unknown) => {
    await kos.close();
    throw error;
  });
  return { kos, runtime, records };
}

/**
 * The JSON error a route answers when a store call fails: the KosError's status and
 * `{ error: { code, message } }` (anything else: 500 ERR_INTERNAL).
 */
export function recordStoreFailure(error: unknown): {
  status: number;
  body: { error: { code: string; message: string } };
} {
  const body = toErrorBody(error);
  return { status: httpStatusFor(body.error.code), body };
}
