import { join } from 'node:path';
import { KeyManager, type ShareSetRecord } from '@kos/core';
import { createRedisMetadataStore, createRedisShareStore, type RedisShareStore } from '@kos/kms-adapters/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type JsonProcess, type JsonReply, sleep, startJsonProcess } from '../../test-support/chaos.js';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisServer,
  startRedisServer,
} from '../../test-support/redis-server.js';

const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
const describeRedis = haveRedis ? describe : describe.skip;

const FIXTURE = join(import.meta.dirname, 'fixtures', 'kos-instance.ts');
const PREFIX = 'kos-chaos:';

interface Sealed {
  readonly envelope: unknown;
  readonly plaintext: string;
  readonly version: number;
}

/** The reply, after checking the call succeeded (the failure names its code). */
function ok(reply: JsonReply): JsonReply {
  expect(reply.ok, `${reply.code}: ${reply.message}`).toBe(true);
  return reply;
}

/**
 * Fault suite, many instances (DESIGN invariants 6 and 19): two KOS instances, each its own
 * OS process, share one Redis for metadata and for the five share stores, and rotate the same
 * key at the same moment, seal while the other rotates, and crash in the middle of a rotation.
 */
describeRedis('chaos: two KOS instances (separate processes) on one Redis rotating the same key', () => {
  let redis: RedisServer;
  let client: Redis;
  let a: JsonProcess;
  let b: JsonProcess;
  const extra: JsonProcess[] = [];
  let metadata: ReturnType<typeof createRedisMetadataStore>;
  let shareStores: RedisShareStore[];
  /** A third instance in the test process: checks what the others wrote, with nothing cached. */
  let observer: KeyManager;

  const spawnInstance = (name: string, options: Record<string, number> = {}) =>
    startJsonProcess(FIXTURE, [redis.url, PREFIX, name, JSON.stringify(options)]);

  /** Nodes that hold their share of `set`. */
  async function heldBy(set: ShareSetRecord): Promise<string[]> {
    const held: string[] = [];
    for (const placement of set.placements) {
      const store = shareStores.find((s) => s.nodeId === placement.nodeId)!;
      if (await store.get(placement.shareId)) held.push(placement.nodeId);
    }
    return held;
  }

  /** Committed versions have their set and all n shares; no other system set of the key exists. */
  async function expectNoOrphans(kid: string): Promise<void> {
    const record = (await metadata.getKey(kid))!.value;
    const sets = await metadata.listShareSets({ kid, owner: 'system' });
    expect(sets.map((set) => set.setId).sort()).toEqual(record.versions.map((v) => v.systemSetId).sort());
    for (const set of sets) {
      expect(await heldBy(set), `shares of v${set.version}`).toHaveLength(set.n);
    }
  }

  /** Every envelope opens, with a cleared cache, in each instance and in the observer. */
  async function expectAllOpen(sealed: readonly Sealed[], instances: readonly JsonProcess[]): Promise<void> {
    const expected = sealed.map((item) => ({ plaintext: item.plaintext }));
    for (const instance of instances) {
      const { results } = ok(
        await instance.request({ op: 'openAll', envelopes: sealed.map((item) => item.envelope) }, 60_000),
      );
      expect(results).toEqual(expected);
    }
    for (const item of sealed) {
      observer.clearCache();
      expect(new TextDecoder().decode(await observer.open(item.envelope))).toBe(item.plaintext);
    }
  }

  beforeAll(async () => {
    redis = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
    client = new Redis({ host: '127.0.0.1', port: redis.port, lazyConnect: true, maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    await client.connect();
    metadata = createRedisMetadataStore({ redis: client, keyPrefix: PREFIX, requirePersistence: 'refuse' });
    shareStores = [1, 2, 3, 4, 5].map((i) =>
      createRedisShareStore({ nodeId: `node-${i}`, redis: client, keyPrefix: PREFIX, requirePersistence: 'refuse' }),
    );
    observer = new KeyManager({ metadata, nodes: shareStores, systemShares: { n: 5, k: 3 } });
    // Share writes take 30–150 ms (node-i: i × 30 ms), like nodes across a network: a rotation
    // lasts at least 150 ms, so "at the same moment" survives a scheduling delay of that much.
    [a, b] = await Promise.all([spawnInstance('a', { putDelayMs: 30 }), spawnInstance('b', { putDelayMs: 30 })]);
  }, 60_000);

  afterAll(async () => {
    await Promise.all([a, b, ...extra].map((instance) => instance?.stop()));
    client?.disconnect();
    await redis?.stop();
  }, 30_000);

  it('6 rounds of both instances rotating the same key at the same instant: each round commits exactly one version, rotated by exactly one instance, both report it as primary, no uncommitted set remains, and every older envelope opens in both', async () => {
    const kid = 'shared';
    ok(await a.request({ op: 'createKey', kid }));
    const sealed: Sealed[] = [];
    const skews: number[] = [];

    for (let round = 1; round <= 6; round++) {
      for (const [name, instance] of [
        ['a', a],
        ['b', b],
      ] as const) {
        const plaintext = `${name} before round ${round}`;
        const reply = ok(await instance.request({ op: 'seal', kid, plaintext, dataId: `${name}-${round}` }));
        expect(reply.version).toBe(round);
        sealed.push({ envelope: reply.envelope, plaintext, version: round });
      }

      const at = Date.now() + 250;
      const [ra, rb] = (await Promise.all([a, b].map((i) => i.request({ op: 'rotate', kid, at })))).map(ok);
      skews.push(Math.abs((ra!.startedAt as number) - (rb!.startedAt as number)));
      // Both got the same new version; exactly one of them made it, the other waited and took it.
      expect([ra!.version, rb!.version], `round ${round}`).toEqual([round + 1, round + 1]);
      expect(ra!.setId).toBe(rb!.setId);
      expect((ra!.rotatedHere as number) + (rb!.rotatedHere as number), `round ${round}`).toBe(1);

      const record = (await metadata.getKey(kid))!.value;
      expect(record.primaryVersion).toBe(round + 1);
      expect(record.versions.map((v) => v.version)).toEqual(Array.from({ length: round + 1 }, (_, i) => i + 1));
      expect(record.versions.filter((v) => v.state === 'active').map((v) => v.version)).toEqual([round + 1]);
      for (const instance of [a, b]) {
        const seen = ok(await instance.request({ op: 'getKey', kid }));
        expect(seen.primary).toBe(round + 1);
        expect((seen.versions as { setId: string }[]).at(-1)?.setId).toBe(ra!.setId);
      }
      await expectNoOrphans(kid);
      await expectAllOpen(sealed, [a, b]);
    }
    console.info(`[chaos instances] start skew between the two rotate() calls per round (ms): ${skews.join(', ')}`);
  }, 90_000);

  it('each instance seals while the other rotates (5 rotations each way): no call fails, seals span several versions, and every envelope opens in both instances and a third', async () => {
    const kid = 'busy';
    ok(await a.request({ op: 'createKey', kid }));
    const sealed: Sealed[] = [];
    const rotated: number[] = [];

    for (const [sealer, rotator, tag] of [
      [a, b, 'phase-1'],
      [b, a, 'phase-2'],
    ] as const) {
      const at = Date.now() + 250;
      const [seals, rotations] = await Promise.all([
        sealer.request({ op: 'sealLoop', kid, count: 60, gapMs: 12, at, tag }, 60_000),
        rotator.request({ op: 'rotateLoop', kid, count: 5, gapMs: 60, at }, 60_000),
      ]);
      expect(ok(seals!).errors).toEqual([]);
      expect(ok(rotations!).errors).toEqual([]);
      sealed.push(...(seals!.sealed as Sealed[]));
      rotated.push(...(rotations!.versions as number[]));
    }

    expect(rotated).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(sealed).toHaveLength(120);
    // The seals really ran across rotations: they name several versions.
    expect(new Set(sealed.map((item) => item.version)).size).toBeGreaterThanOrEqual(4);
    await expectNoOrphans(kid);
    await expectAllOpen(sealed, [a, b]);
  }, 90_000);

  it('an instance SIGKILLed in the middle of its share writes: the old version stays usable, the other instance rotates once the dead lock expires, and the crashed attempt is collected later', async () => {
    const kid = 'crashy';
    // Holds the share write to node-i for i × 300 ms, and keeps its rotation lock for 1.5 s.
    const slow = await spawnInstance('slow', { putDelayMs: 300, lockTtlMs: 1_500 });
    extra.push(slow);
    ok(await slow.request({ op: 'createKey', kid }, 30_000));
    const old = ok(await b.request({ op: 'seal', kid, plaintext: 'sealed before the crash', dataId: 'c-1' }));

    const attempt = slow.request({ op: 'rotate', kid }, 30_000).catch((error: Error) => error);
    // Wait until the doomed attempt has recorded its version-2 set, then kill it with two of
    // its five shares written (node-1 at 300 ms, node-2 at 600 ms, node-3 not before 900 ms).
    let orphan: ShareSetRecord | undefined;
    for (let i = 0; i < 300 && orphan === undefined; i++) {
      orphan = (await metadata.listShareSets({ kid, version: 2 }))[0];
      if (orphan === undefined) await sleep(5);
    }
    expect(orphan).toBeDefined();
    await sleep(750);
    await slow.kill('SIGKILL');
    expect(await attempt).toBeInstanceOf(Error);
    expect(slow.child.signalCode).toBe('SIGKILL');
    const written = await heldBy(orphan!);
    expect(written.length).toBeGreaterThan(0);
    expect(written.length).toBeLessThan(5);

    // Nothing was committed; the old version opens in the surviving instance.
    expect((await metadata.getKey(kid))!.value.primaryVersion).toBe(1);
    expect(ok(await b.request({ op: 'openAll', envelopes: [old.envelope] })).results).toEqual([
      { plaintext: 'sealed before the crash' },
    ]);

    // The survivor's rotation waits for the dead instance's lock to expire, then commits.
    const started = Date.now();
    const rotated = ok(await b.request({ op: 'rotate', kid }, 30_000));
    expect(rotated.version).toBe(2);
    expect(rotated.rotatedHere).toBe(1);
    expect(rotated.setId).not.toBe(orphan!.setId);
    expect(Date.now() - started).toBeLessThan(10_000);

    // A later rotation (past the lock lifetime of every set) collects the crashed attempt's set.
    const later = new KeyManager({
      metadata,
      nodes: shareStores,
      systemShares: { n: 5, k: 3 },
      clock: () => Date.now() + 60_000,
    });
    expect((await later.rotate(kid)).version).toBe(3);
    expect(await metadata.getShareSet(orphan!.setId)).toBeUndefined();
    expect(await heldBy(orphan!)).toEqual([]);
    await expectNoOrphans(kid);
    await expectAllOpen([{ envelope: old.envelope, plaintext: 'sealed before the crash', version: 1 }], [a, b]);
  }, 90_000);
});
