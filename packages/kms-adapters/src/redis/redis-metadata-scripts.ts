import { defineLuaScript, type LuaScript } from './lua-script.js';

/**
 * The Lua scripts that make the Redis metadata store's racing mutations atomic. Each touches
 * only the keys it is given, all in one hash-tag slot, so they run on Redis Cluster too.
 */

/**
 * Key record compare-and-set. KEYS: record hash, kid index. ARGV: expected revision (`''`:
 * must not exist), new revision, integrity-wrapped document, kid. Returns `{1, new}` when
 * written, `{0, current or ''}` on conflict.
 */
export const PUT_KEY_SCRIPT: LuaScript = defineLuaScript(`
local current = redis.call('HGET', KEYS[1], 'rev')
if ARGV[1] == '' then
  if current then return {0, current} end
elseif current ~= ARGV[1] then
  return {0, current or ''}
end
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'doc', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return {1, ARGV[2]}
`);

/**
 * Share set write with its indexes. KEYS: record hash, all-sets index, new kid index, new
 * owner index, old kid index, old owner index. ARGV: setId, document, kid, owner, the kid and
 * owner the caller read (`''`: none). Returns 0 without writing when the record changed since
 * the caller read it (the caller reads again and retries), 1 when written.
 */
export const PUT_SHARE_SET_SCRIPT: LuaScript = defineLuaScript(`
local old = redis.call('HMGET', KEYS[1], 'kid', 'owner')
if (old[1] or '') ~= ARGV[5] or (old[2] or '') ~= ARGV[6] then return 0 end
if old[1] then
  redis.call('SREM', KEYS[5], ARGV[1])
  redis.call('SREM', KEYS[6], ARGV[1])
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'kid', ARGV[3], 'owner', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
`);

/**
 * Share set deletion with its indexes. KEYS: record hash, all-sets index, kid index, owner
 * index. ARGV: setId, the kid and owner the caller read. Returns 1 when deleted, 0 when
 * absent, -1 when the record changed since the caller read it (read again and retry).
 */
export const DELETE_SHARE_SET_SCRIPT: LuaScript = defineLuaScript(`
local old = redis.call('HMGET', KEYS[1], 'kid', 'owner')
if not old[1] then return 0 end
if old[1] ~= ARGV[2] or old[2] ~= ARGV[3] then return -1 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
return 1
`);

/** A string record and its index entry. KEYS: record, index. ARGV: document, member. */
export const PUT_INDEXED_SCRIPT: LuaScript = defineLuaScript(`
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
`);

/**
 * Takes or renews a lock: like \`SET key owner NX PX ttl\`, except that the holder may renew.
 * KEYS: lock. ARGV: owner, ttl in ms. Returns 1 when \`owner\` now holds it, 0 otherwise.
 */
export const ACQUIRE_LOCK_SCRIPT: LuaScript = defineLuaScript(`
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`);

/** Compare-and-delete: releases the lock only if `owner` holds it. KEYS: lock. ARGV: owner. Returns 1 or 0. */
export const RELEASE_LOCK_SCRIPT: LuaScript = defineLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`);
