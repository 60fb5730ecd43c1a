import { KosError } from '@kos/core';
import type { Cluster, Redis } from 'ioredis';
import { throwIfAborted } from '../abort.js';

/**
 * The ioredis connection a Redis store runs its commands on: a single server (`Redis`, which
 * also covers Sentinel) or a Redis Cluster. The caller creates it, owns it and closes it.
 */
export type RedisClient = Redis | Cluster;

/** Longest part of a Redis error message kept in a KosError (the rest is cut off). */
const MAX_REASON_LENGTH = 200;

/** Throws ERR_INVALID_OPTIONS unless `redis` looks like an ioredis `Redis` or `Cluster`. */
export function checkRedisClientOption(redis: unknown, what: string): RedisClient {
  const candidate = redis as Partial<Record<'get' | 'set' | 'evalsha' | 'eval' | 'pipeline', unknown>> | null;
  const looksRight =
    typeof candidate === 'object' &&
    candidate !== null &&
    (['get', 'set', 'evalsha', 'eval', 'pipeline'] as const).every((name) => typeof candidate[name] === 'function');
  if (!looksRight) {
    throw new KosError('ERR_INVALID_OPTIONS', `${what}: redis must be an ioredis Redis or Cluster client`, {
      details: { option: 'redis' },
    });
  }
  return redis as RedisClient;
}

/** Whether `redis` is an ioredis Cluster (duck-typed, so a second copy of ioredis works too). */
export function isClusterClient(redis: RedisClient): redis is Cluster {
  return (redis as { isCluster?: unknown }).isCluster === true;
}

/**
 * The message of a failed Redis call, safe to show: ioredis attaches the command and its
 * arguments (a share, a record) to reply errors, and some server errors quote arguments
 * ("with args beginning with: …"). Only the error's name and the start of its message are kept.
 */
export function safeRedisReason(error: unknown): string {
  const name = error instanceof Error ? error.name : 'Error';
  const raw = error instanceof Error ? error.message : String(error);
  const cut = raw.split(/,? with args beginning with/i)[0] ?? '';
  const message = cut.length > MAX_REASON_LENGTH ? `${cut.slice(0, MAX_REASON_LENGTH)}…` : cut;
  return `${name}: ${message}`;
}

/**
 * ERR_STORE_IO for a failed Redis call. The ioredis error is not kept as `cause` (it holds
 * the command's arguments); a plain Error with its safe message is, for operators.
 */
export function redisIoError(what: string, error: unknown): KosError {
  if (error instanceof KosError) return error;
  const reason = safeRedisReason(error);
  return new KosError('ERR_STORE_IO', `redis ${what} failed (${reason})`, {
    details: { operation: what },
    cause: new Error(reason),
  });
}

/**
 * Runs one Redis call, mapping any failure to ERR_STORE_IO. When `signal` aborts while the
 * call is in flight the promise rejects at once with ERR_STORE_IO; the command itself may
 * still reach the server (Redis commands cannot be withdrawn), so an aborted write may or
 * may not have been applied.
 */
export async function runRedis<T>(what: string, call: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal === undefined) {
    try {
      return await call();
    } catch (error) {
      throw redisIoError(what, error);
    }
  }
  throwIfAborted(signal, what);
  return new Promise<T>((resolveCall, rejectCall) => {
    const onAbort = (): void => {
      rejectCall(new KosError('ERR_STORE_IO', `${what} aborted`, { cause: signal.reason }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    call()
      .then(resolveCall, (error: unknown) => rejectCall(redisIoError(what, error)))
      .finally(() => signal.removeEventListener('abort', onAbort));
  });
}
