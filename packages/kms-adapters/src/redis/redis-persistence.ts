import { KosError } from '@kos/core';
import type { Redis } from 'ioredis';
import { isClusterClient, type RedisClient, redisIoError, safeRedisReason } from './redis-client.js';

/**
 * What a Redis store does when the server would lose acknowledged writes on a restart:
 * `refuse` every call, `warn` once and carry on, or skip the check (`off`).
 */
export type RequirePersistence = 'refuse' | 'warn' | 'off';

/** `on`: AOF or RDB save points are configured; `off`: neither; `unknown`: CONFIG GET is not allowed (managed Redis). */
export type RedisPersistenceState = 'on' | 'off' | 'unknown';

/** Persistence settings of one server (a Cluster reports each master). */
export interface RedisServerPersistence {
  readonly state: RedisPersistenceState;
  /** `CONFIG GET appendonly` (`yes`/`no`), when readable. */
  readonly appendonly?: string;
  /** `CONFIG GET save` (`''` means no save points), when readable. */
  readonly save?: string;
  /** Why the settings could not be read (state `unknown`). */
  readonly reason?: string;
}

export interface RedisPersistenceStatus {
  /** `off` if any server is off, else `unknown` if any is unknown, else `on`. */
  readonly state: RedisPersistenceState;
  readonly servers: readonly RedisServerPersistence[];
}

/** The message of the ERR_STORE_IO every call of a `refuse` store rejects with when persistence is off. */
export const PERSISTENCE_OFF_MESSAGE = 'redis persistence is off (appendonly no and no save points)';

/**
 * Reads `CONFIG GET appendonly` and `CONFIG GET save` from the server, or from every master
 * of a Cluster. A server that refuses CONFIG (managed Redis, renamed command, ACL) is
 * `unknown`, not an error.
 *
 * @throws KosError ERR_STORE_IO when Redis cannot be reached.
 */
export async function readRedisPersistence(redis: RedisClient): Promise<RedisPersistenceStatus> {
  let servers: Redis[];
  if (isClusterClient(redis)) {
    servers = redis.nodes('master');
    if (servers.length === 0) {
      try {
        await redis.ping();
      } catch (error) {
        throw redisIoError('persistence check', error);
      }
      servers = redis.nodes('master');
    }
    if (servers.length === 0) {
      throw new KosError('ERR_STORE_IO', 'redis persistence check failed: the cluster has no known masters');
    }
  } else {
    servers = [redis];
  }
  const results = await Promise.all(servers.map(readServerPersistence));
  const states = new Set(results.map((result) => result.state));
  const state: RedisPersistenceState = states.has('off') ? 'off' : states.has('unknown') ? 'unknown' : 'on';
  return { state, servers: results };
}

async function readServerPersistence(server: Redis): Promise<RedisServerPersistence> {
  let appendonly: string | undefined;
  let save: string | undefined;
  try {
    appendonly = configValue(await server.config('GET', 'appendonly'), 'appendonly');
    save = configValue(await server.config('GET', 'save'), 'save');
  } catch (error) {
    if (error instanceof Error && error.name === 'ReplyError') {
      return { state: 'unknown', reason: safeRedisReason(error) };
    }
    throw redisIoError('persistence check', error);
  }
  const settings = {
    ...(appendonly === undefined ? {} : { appendonly }),
    ...(save === undefined ? {} : { save }),
  };
  if (appendonly === 'yes' || (save !== undefined && save.trim() !== '')) return { state: 'on', ...settings };
  if (appendonly === 'no' && save !== undefined) return { state: 'off', ...settings };
  return { state: 'unknown', reason: 'CONFIG GET did not report appendonly and save', ...settings };
}

/** The value of `name` in a CONFIG GET reply: a flat [name, value, …] array (RESP2) or a map (RESP3). */
function configValue(reply: unknown, name: string): string | undefined {
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) {
      if (String(reply[i]) === name) return String(reply[i + 1]);
    }
    return undefined;
  }
  if (reply instanceof Map) {
    const value: unknown = reply.get(name);
    return value === undefined ? undefined : String(value);
  }
  if (typeof reply === 'object' && reply !== null && Object.hasOwn(reply, name)) {
    return String((reply as Record<string, unknown>)[name]);
  }
  return undefined;
}

/** Applies a store's `requirePersistence` policy before its calls. */
export interface PersistenceGuard {
  /**
   * Resolves when a call may go ahead. The first call reads the settings (concurrent calls
   * share that read); the outcome is kept, except a failed read, which the next call retries.
   *
   * @throws KosError ERR_STORE_IO with {@link PERSISTENCE_OFF_MESSAGE} (`refuse` and persistence
   *   off) or when the settings cannot be read because Redis is unreachable.
   */
  ensure(): Promise<void>;
  /** Reads the settings again now, applies the policy as `ensure` does, and resolves them. */
  check(): Promise<RedisPersistenceStatus>;
}

export interface PersistenceGuardOptions {
  readonly redis: RedisClient;
  readonly mode: RequirePersistence;
  /** Receives the one warning; default `process.emitWarning` with code `KOS_REDIS_PERSISTENCE`. */
  readonly onWarning: ((message: string) => void) | undefined;
  /** Names the store in warnings. */
  readonly storeName: string;
}

/**
 * The persistence policy of one store: in `warn` mode (and in `refuse` mode when the
 * settings are unknown) `onWarning` is called at most once per guard; in `refuse` mode every
 * call rejects while persistence is off; in `off` mode nothing is read before calls.
 */
export function createPersistenceGuard(options: PersistenceGuardOptions): PersistenceGuard {
  const { redis, mode, storeName } = options;
  const warn = options.onWarning ?? defaultWarning;
  let warned = false;
  let decision: Promise<RedisPersistenceStatus> | undefined;

  function warnOnce(message: string): void {
    if (warned) return;
    warned = true;
    try {
      warn(message);
    } catch {
      // A failing warning handler must not fail store calls.
    }
  }

  function applyWarnings(status: RedisPersistenceStatus): void {
    if (mode === 'off') return;
    if (status.state === 'off' && mode === 'warn') {
      warnOnce(
        `${storeName}: ${PERSISTENCE_OFF_MESSAGE}; shares, records and the replay cache are lost when redis restarts`,
      );
    } else if (status.state === 'unknown') {
      const reason = status.servers.find((server) => server.reason !== undefined)?.reason ?? 'unknown reason';
      warnOnce(
        `${storeName}: could not read redis persistence settings (${reason}); make sure appendonly is on, or data is lost when redis restarts`,
      );
    }
  }

  function decide(): Promise<RedisPersistenceStatus> {
    const attempt = readRedisPersistence(redis).then((status) => {
      applyWarnings(status);
      return status;
    });
    decision = attempt;
    attempt.catch(() => {
      if (decision === attempt) decision = undefined;
    });
    return attempt;
  }

  function enforce(status: RedisPersistenceStatus): void {
    if (mode === 'refuse' && status.state === 'off') {
      throw new KosError('ERR_STORE_IO', PERSISTENCE_OFF_MESSAGE, { details: { store: storeName } });
    }
  }

  return {
    async ensure() {
      if (mode === 'off') return;
      enforce(await (decision ?? decide()));
    },
    async check() {
      const status = await decide();
      enforce(status);
      return status;
    },
  };
}

function defaultWarning(message: string): void {
  process.emitWarning(message, { code: 'KOS_REDIS_PERSISTENCE' });
}
