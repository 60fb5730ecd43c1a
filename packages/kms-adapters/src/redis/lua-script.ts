import { createHash } from 'node:crypto';
import type { RedisClient } from './redis-client.js';

/**
 * A Lua script run with EVALSHA, falling back to EVAL (which also caches it) when the server
 * does not know it yet (`NOSCRIPT`: first use, a restart, SCRIPT FLUSH, another cluster node).
 * Unlike ioredis `defineCommand`, this adds nothing to the caller's client.
 *
 * Every key a script touches is passed in `keys`, and in a Cluster all of them must hash to
 * one slot (share a `{hash tag}`).
 */
export interface LuaScript {
  run(redis: RedisClient, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown>;
}

export function defineLuaScript(source: string): LuaScript {
  const sha = createHash('sha1').update(source, 'utf8').digest('hex');
  return {
    async run(redis, keys, args) {
      try {
        return await redis.evalsha(sha, keys.length, ...keys, ...args);
      } catch (error) {
        if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
        return redis.eval(source, keys.length, ...keys, ...args);
      }
    },
  };
}
