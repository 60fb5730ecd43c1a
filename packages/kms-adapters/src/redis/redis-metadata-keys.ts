import { createHash } from 'node:crypto';

/**
 * Where the Redis metadata store keeps each record, under one key prefix. Records that a
 * script changes together share a `{hash tag}` (one Cluster slot each: key records, share
 * sets, access records); counters, replay entries and locks are single keys without a tag,
 * so they spread over the cluster. Ids are KOS ids (no `:`, `{` or `}`); replay ids and lock
 * names may be any string, so they are stored under their SHA-256.
 */
export interface RedisMetadataKeys {
  /** Hash `{ rev, doc }` of one key record. */
  key(kid: string): string;
  /** Set of every kid with a record. */
  readonly keyIndex: string;
  /** Integer counter of one key version. */
  ops(kid: string, version: number): string;
  /** Hash `{ doc, kid, owner }` of one share set. */
  shareSet(setId: string): string;
  /** Set of every set id. */
  readonly shareSetIndex: string;
  /** Set of the set ids of one kid. */
  shareSetsByKid(kid: string): string;
  /** Set of the set ids of one owner. */
  shareSetsByOwner(owner: string): string;
  /** String: one access record. */
  access(clientId: string): string;
  /** Set of every client id with an access record. */
  readonly accessIndex: string;
  /** Replay cache entry of `id` in `scope` (expires with its TTL). */
  replay(scope: string, id: string): string;
  /** A named lock; its value is the owner (expires with its TTL). */
  lock(name: string): string;
}

export function redisMetadataKeys(prefix: string): RedisMetadataKeys {
  const keys = `${prefix}{meta:keys}`;
  const sets = `${prefix}{meta:sets}`;
  const access = `${prefix}{meta:access}`;
  return {
    key: (kid) => `${keys}:key:${kid}`,
    keyIndex: `${keys}:index`,
    ops: (kid, version) => `${prefix}meta:ops:${kid}:${version}`,
    shareSet: (setId) => `${sets}:set:${setId}`,
    shareSetIndex: `${sets}:index`,
    shareSetsByKid: (kid) => `${sets}:by-kid:${kid}`,
    shareSetsByOwner: (owner) => `${sets}:by-owner:${owner}`,
    access: (clientId) => `${access}:client:${clientId}`,
    accessIndex: `${access}:index`,
    replay: (scope, id) => `${prefix}meta:replay:${sha256Hex(JSON.stringify([scope, id]))}`,
    lock: (name) => `${prefix}meta:lock:${sha256Hex(name)}`,
  };
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}
