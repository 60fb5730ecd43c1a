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
 * Share set write with its index sets, in one step: the record is always listed under its
 * current kid and owner. KEYS: record hash, all-sets index, kid index, owner index. ARGV:
 * setId, document, kid, owner. Returns the previous `{kid, owner}` (`''` each when new); when
 * they differ from the new ones the caller takes the set out of those indexes with
 * {@link UNINDEX_SHARE_SET_SCRIPT} (until then, listings filter the stale entry out). No
 * read-then-retry, so writers racing on one set never starve.
 */
export const PUT_SHARE_SET_SCRIPT: LuaScript = defineLuaScript(`
local old = redis.call('HMGET', KEYS[1], 'kid', 'owner')
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'kid', ARGV[3], 'owner', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return {old[1] or '', old[2] or ''}
`);

/**
 * Share set deletion with its index sets. KEYS: record hash, all-sets index, index of the kid
 * the caller read, same for the owner. ARGV: setId, that kid, that owner. Returns
 * `{1, kid, owner}` of the deleted record (the caller unindexes it from a kid or owner it did
 * not expect), or `{0, '', ''}` when there was none.
 */
export const DELETE_SHARE_SET_SCRIPT: LuaScript = defineLuaScript(`
local old = redis.call('HMGET', KEYS[1], 'kid', 'owner')
if not old[1] then return {0, '', ''} end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if old[1] == ARGV[2] then redis.call('SREM', KEYS[3], ARGV[1]) end
if old[2] == ARGV[3] then redis.call('SREM', KEYS[4], ARGV[1]) end
return {1, old[1], old[2] or ''}
`);

/**
 * Removes a set from one kid or owner index unless the set's current record is under it (a
 * writer may have put it back meanwhile). KEYS: record hash, index. ARGV: field (`kid` or
 * `owner`), the index's value, setId. Returns 1 when removed.
 */
export const UNINDEX_SHARE_SET_SCRIPT: LuaScript = defineLuaScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 0 end
return redis.call('SREM', KEYS[2], ARGV[3])
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
