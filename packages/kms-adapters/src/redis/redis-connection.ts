import { readFileSync } from 'node:fs';
import { KosError } from '@kos/core';
import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis';
import { type RedisClient, safeRedisReason } from './redis-client.js';

/** A Redis server or Sentinel address. */
export interface RedisEndpoint {
  readonly host: string;
  readonly port: number;
}

/** TLS towards Redis (or the Sentinels): `true` for the system CAs, or a private CA. */
export type RedisTlsConfig =
  | boolean
  | {
      /** PEM CA certificate(s), as text. */
      readonly ca?: string;
      /** The same, as a file (resolved against the configuration file's folder in `KOS_CONFIG`). */
      readonly caFile?: string;
      /** Server name to check the certificate against (default: the host). */
      readonly servername?: string;
    };

/**
 * How to reach Redis, as JSON can say it: exactly one of `url` (one server), `sentinels` with
 * `name` (a Sentinel-managed master, followed across failovers) or `cluster` (seed nodes of a
 * Redis Cluster).
 */
export interface RedisConnectionConfig {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS). */
  readonly url?: string;
  /** Sentinel addresses; the client asks them for the current master of `name`. */
  readonly sentinels?: readonly RedisEndpoint[];
  /** The master name the Sentinels monitor (`sentinel monitor <name> …`). Required with `sentinels`. */
  readonly name?: string;
  /** Seed nodes of a Redis Cluster (any reachable master or replica; the rest is discovered). */
  readonly cluster?: readonly RedisEndpoint[];
  /** ACL user and password of the Redis servers (with `sentinels` or `cluster`; a `url` carries its own). */
  readonly username?: string;
  readonly password?: string;
  /** ACL user and password of the Sentinels themselves (with `sentinels`). */
  readonly sentinelUsername?: string;
  readonly sentinelPassword?: string;
  /** Database number (not with `cluster`, which has only database 0). */
  readonly db?: number;
  /** TLS to the Redis servers (`rediss://` in a `url` turns it on too). */
  readonly tls?: RedisTlsConfig;
  /** TLS to the Sentinels (with `sentinels`). */
  readonly sentinelTls?: RedisTlsConfig;
  /** How long start-up waits for a connection (default 10 000 ms), and each later connection attempt. */
  readonly connectTimeoutMs?: number;
  /** A command that has no reply after this long fails with ERR_STORE_IO (default: no limit). */
  readonly commandTimeoutMs?: number;
}

const CONNECTION_FIELDS = [
  'url',
  'sentinels',
  'name',
  'cluster',
  'username',
  'password',
  'sentinelUsername',
  'sentinelPassword',
  'db',
  'tls',
  'sentinelTls',
  'connectTimeoutMs',
  'commandTimeoutMs',
] as const;
const TLS_FIELDS = ['ca', 'caFile', 'servername'];
const MAX_ENDPOINTS = 64;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** A Sentinel master name: what `sentinel monitor` accepts in practice, without spaces or control characters. */
const MASTER_NAME = /^[A-Za-z0-9._:-]{1,128}$/;

function invalid(where: string, field: string, message: string): KosError {
  const option = field ? `${where}.${field}` : where;
  return new KosError('ERR_INVALID_OPTIONS', `KOS configuration: ${option} ${message}`, { details: { option } });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkString(value: unknown, where: string, field: string): void {
  if (value !== undefined && (typeof value !== 'string' || value.length === 0 || value.includes('\0'))) {
    throw invalid(where, field, 'must be a non-empty string');
  }
}

function checkMs(value: unknown, where: string, field: string, min: number, max: number): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(where, field, `must be an integer number of milliseconds, ${min}–${max}`);
  }
}

function checkEndpoints(value: unknown, where: string, field: string): void {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_ENDPOINTS) {
    throw invalid(where, field, `must be a list of 1–${MAX_ENDPOINTS} { "host", "port" } addresses`);
  }
  for (const [index, endpoint] of value.entries()) {
    const at = `${field}[${index}]`;
    if (!isPlainObject(endpoint)) throw invalid(where, at, 'must be an object { "host", "port" }');
    for (const key of Object.keys(endpoint)) {
      if (key !== 'host' && key !== 'port') throw invalid(where, `${at}.${key}`, 'is not a known field (host, port)');
    }
    const { host, port } = endpoint;
    if (typeof host !== 'string' || host.length === 0 || host.length > 255 || /[\s/@]/.test(host)) {
      throw invalid(where, `${at}.host`, 'must be a host name or IP address');
    }
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw invalid(where, `${at}.port`, 'must be an integer 1–65535');
    }
  }
}

function checkTls(value: unknown, where: string, field: string): void {
  if (value === undefined || typeof value === 'boolean') return;
  if (!isPlainObject(value)) throw invalid(where, field, 'must be true, false or { "ca" | "caFile", "servername" }');
  for (const key of Object.keys(value)) {
    if (!TLS_FIELDS.includes(key))
      throw invalid(where, `${field}.${key}`, `is not a known field (${TLS_FIELDS.join(', ')})`);
  }
  checkString(value.ca, where, `${field}.ca`);
  checkString(value.caFile, where, `${field}.caFile`);
  checkString(value.servername, where, `${field}.servername`);
}

/**
 * Checks a Redis connection from configuration (metadata `{ "kind": "redis", … }`, a node
 * `{ "kind": "redis", … }`, or `kos-kms` flags) before anything connects: exactly one of `url`,
 * `sentinels` + `name` or `cluster`, no unknown fields (a misspelt `sentinel` is refused, not
 * ignored), well-formed addresses, credentials and timeouts.
 *
 * @param where names the object in messages and `details.option` (e.g. `metadata`, `nodes[2]`).
 * @param otherFields fields the surrounding object may also have (`kind`, `nodeId`, `zone`).
 * @throws KosError ERR_INVALID_OPTIONS naming the field.
 */
export function checkRedisConnectionConfig(
  value: unknown,
  where: string,
  otherFields: readonly string[] = [],
): RedisConnectionConfig {
  if (!isPlainObject(value)) throw invalid(where, '', 'must be an object');
  for (const key of Object.keys(value)) {
    if (!(CONNECTION_FIELDS as readonly string[]).includes(key) && !otherFields.includes(key)) {
      throw invalid(where, key, 'is not a known field of a Redis connection (url, sentinels + name, cluster, …)');
    }
  }
  const modes = (['url', 'sentinels', 'cluster'] as const).filter((mode) => value[mode] !== undefined);
  if (modes.length !== 1) {
    throw invalid(
      where,
      '',
      modes.length === 0
        ? 'needs one of url, sentinels (with name) or cluster'
        : `takes only one of url, sentinels and cluster (got ${modes.join(' and ')})`,
    );
  }
  const mode = modes[0];
  if (mode === 'url') {
    const url = value.url;
    let parsed: URL | undefined;
    try {
      parsed = typeof url === 'string' ? new URL(url) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!parsed || (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') || parsed.hostname === '') {
      throw invalid(where, 'url', 'must be a redis:// or rediss:// URL with a host');
    }
    for (const field of ['username', 'password', 'sentinelUsername', 'sentinelPassword', 'sentinelTls', 'name']) {
      if (value[field] !== undefined) throw invalid(where, field, 'is not used with url (put credentials in the URL)');
    }
  } else if (mode === 'sentinels') {
    checkEndpoints(value.sentinels, where, 'sentinels');
    if (typeof value.name !== 'string' || !MASTER_NAME.test(value.name)) {
      throw invalid(where, 'name', 'is required with sentinels: the master name the Sentinels monitor');
    }
  } else {
    checkEndpoints(value.cluster, where, 'cluster');
    for (const field of ['name', 'db', 'sentinelUsername', 'sentinelPassword', 'sentinelTls']) {
      if (value[field] !== undefined) throw invalid(where, field, 'is not used with cluster');
    }
  }
  for (const field of ['username', 'password', 'sentinelUsername', 'sentinelPassword'] as const) {
    checkString(value[field], where, field);
  }
  if (value.db !== undefined && (typeof value.db !== 'number' || !Number.isInteger(value.db) || value.db < 0)) {
    throw invalid(where, 'db', 'must be an integer ≥ 0');
  }
  checkTls(value.tls, where, 'tls');
  checkTls(value.sentinelTls, where, 'sentinelTls');
  checkMs(value.connectTimeoutMs, where, 'connectTimeoutMs', 100, 600_000);
  checkMs(value.commandTimeoutMs, where, 'commandTimeoutMs', 10, 600_000);
  const connection: Record<string, unknown> = {};
  for (const field of CONNECTION_FIELDS) if (value[field] !== undefined) connection[field] = value[field];
  return connection as RedisConnectionConfig;
}

/** The connection fields of a larger object (a metadata or node entry), without `kind`, `nodeId`, `zone`. */
export function pickRedisConnection(value: RedisConnectionConfig): RedisConnectionConfig {
  const connection: Record<string, unknown> = {};
  for (const field of CONNECTION_FIELDS) {
    const fieldValue = (value as Record<string, unknown>)[field];
    if (fieldValue !== undefined) connection[field] = fieldValue;
  }
  return connection as RedisConnectionConfig;
}

/** What the connection points at, safe for logs and errors: no password, ever. */
export function describeRedisConnection(config: RedisConnectionConfig): string {
  if (config.url !== undefined) {
    try {
      const url = new URL(config.url);
      return `${url.protocol}//${url.hostname}${url.port ? `:${url.port}` : ''}`;
    } catch {
      return 'redis (bad url)';
    }
  }
  const list = (endpoints: readonly RedisEndpoint[]) => endpoints.map((e) => `${e.host}:${e.port}`).join(',');
  if (config.sentinels !== undefined) return `sentinel master ${config.name} via ${list(config.sentinels)}`;
  return `cluster via ${list(config.cluster ?? [])}`;
}

/** Resolves a `caFile` against `base` (the configuration file's folder). */
export function resolveRedisTlsFiles(
  config: RedisConnectionConfig,
  resolvePath: (file: string) => string,
): RedisConnectionConfig {
  const fix = (tls: RedisTlsConfig | undefined) =>
    typeof tls === 'object' && tls.caFile !== undefined ? { ...tls, caFile: resolvePath(tls.caFile) } : tls;
  return {
    ...config,
    ...(config.tls !== undefined ? { tls: fix(config.tls) } : {}),
    ...(config.sentinelTls !== undefined ? { sentinelTls: fix(config.sentinelTls) } : {}),
  } as RedisConnectionConfig;
}

function tlsOptions(tls: RedisTlsConfig | undefined, where: string): Record<string, unknown> | undefined {
  if (tls === undefined || tls === false) return undefined;
  if (tls === true) return {};
  let ca = tls.ca;
  if (ca === undefined && tls.caFile !== undefined) {
    try {
      ca = readFileSync(tls.caFile, 'utf8');
    } catch (error) {
      throw new KosError(
        'ERR_INVALID_OPTIONS',
        `KOS configuration: ${where}: cannot read the Redis CA file ${tls.caFile}`,
        {
          cause: error,
          details: { option: `${where}.caFile` },
        },
      );
    }
  }
  return {
    ...(ca !== undefined ? { ca } : {}),
    ...(tls.servername !== undefined ? { servername: tls.servername } : {}),
  };
}

export interface OpenRedisOptions {
  /** Names the connection in errors (e.g. `metadata`, `node node-3`). */
  readonly what: string;
  /**
   * Told when the connection breaks (once per outage, not per reconnect attempt) and when it is
   * back; the message names the endpoint and the reason, never a password.
   */
  readonly onStateChange?: (event: { readonly up: boolean; readonly message: string }) => void;
}

/**
 * Connects an ioredis client for a KOS store: a single server, a Sentinel-managed master
 * (`new Redis({ sentinels, name })`: after a failover ioredis asks the Sentinels again and
 * reconnects to the new master) or a Redis Cluster (`new Cluster(seeds)`). Every client is
 * made so that nothing is ever queued or replayed behind the caller's back: no offline queue
 * (while disconnected every call fails at once with ERR_STORE_IO), no automatic resend of
 * commands that were in flight when a connection broke (an INCRBY or a compare-and-set must
 * not run twice), at most 2 retries per request.
 *
 * Resolves once the client is ready; the caller owns it and closes it (`quit()`).
 *
 * @throws KosError ERR_STORE_IO when no connection is made within `connectTimeoutMs`
 *   (default 10 s); the half-made client is disconnected first.
 * @throws KosError ERR_INVALID_OPTIONS when a TLS CA file cannot be read.
 */
export async function openRedisConnection(
  config: RedisConnectionConfig,
  options: OpenRedisOptions,
): Promise<RedisClient> {
  const { Redis: RedisClass, Cluster: ClusterClass } = await import('ioredis');
  const connectTimeout = config.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const tls = tlsOptions(config.tls, options.what);
  const common: RedisOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 2,
    autoResendUnfulfilledCommands: false,
    connectTimeout,
    ...(config.commandTimeoutMs !== undefined ? { commandTimeout: config.commandTimeoutMs } : {}),
  };
  let client: Redis | Cluster;
  if (config.url !== undefined) {
    client = new RedisClass(config.url, {
      ...common,
      ...(tls ? { tls } : {}),
      ...(config.db !== undefined ? { db: config.db } : {}),
    });
  } else if (config.sentinels !== undefined) {
    const sentinelTls = tlsOptions(config.sentinelTls, options.what);
    client = new RedisClass({
      ...common,
      sentinels: config.sentinels.map(({ host, port }) => ({ host, port })),
      name: config.name as string,
      ...(config.username !== undefined ? { username: config.username } : {}),
      ...(config.password !== undefined ? { password: config.password } : {}),
      ...(config.sentinelUsername !== undefined ? { sentinelUsername: config.sentinelUsername } : {}),
      ...(config.sentinelPassword !== undefined ? { sentinelPassword: config.sentinelPassword } : {}),
      ...(config.db !== undefined ? { db: config.db } : {}),
      ...(tls ? { tls, enableTLSForSentinelMode: true } : {}),
      ...(sentinelTls ? { sentinelTLS: sentinelTls } : {}),
      sentinelCommandTimeout: Math.min(connectTimeout, 5000),
    });
  } else {
    const clusterOptions: ClusterOptions = {
      lazyConnect: true,
      enableOfflineQueue: false,
      redisOptions: {
        maxRetriesPerRequest: 2,
        autoResendUnfulfilledCommands: false,
        connectTimeout,
        ...(config.commandTimeoutMs !== undefined ? { commandTimeout: config.commandTimeoutMs } : {}),
        ...(config.username !== undefined ? { username: config.username } : {}),
        ...(config.password !== undefined ? { password: config.password } : {}),
        ...(tls ? { tls } : {}),
      },
    };
    client = new ClusterClass(
      (config.cluster ?? []).map(({ host, port }) => ({ host, port })),
      clusterOptions,
    );
  }
  const endpoint = describeRedisConnection(config);
  // Reported once per outage (ioredis keeps reconnecting, and calls fail meanwhile), and when it is over.
  let connected = false;
  let started = false;
  client.on('error', (error: unknown) => {
    if (!connected) return;
    connected = false;
    options.onStateChange?.({
      up: false,
      message: `${options.what}: redis ${endpoint} unreachable (${safeRedisReason(error)})`,
    });
  });
  client.on('ready', () => {
    if (connected || !started) return;
    connected = true;
    options.onStateChange?.({ up: true, message: `${options.what}: redis ${endpoint} is back` });
  });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no connection within ${connectTimeout} ms`)), connectTimeout);
  });
  try {
    await Promise.race([client.connect(), deadline]);
  } catch (error) {
    client.disconnect();
    const reason = safeRedisReason(error);
    throw new KosError('ERR_STORE_IO', `${options.what}: cannot connect to redis ${endpoint} (${reason})`, {
      details: { operation: 'connect' },
      cause: new Error(reason),
    });
  } finally {
    clearTimeout(timer);
  }
  started = true;
  connected = true;
  return client;
}
