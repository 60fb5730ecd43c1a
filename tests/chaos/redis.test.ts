import { randomBytes } from 'node:crypto';
import { type EnvelopeJson, encodeEnvelope, KeyManager, type StoredShare, utf8 } from '@kos/core';
import { createRedisMetadataStore, createRedisShareStore, type RedisShareStore } from '@kos/kms-adapters/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { chaosSeed, errorCode, type Settled, seededRandom, settleWithin, sleep } from '../../test-support/chaos.js';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisServer,
  startRedisServer,
} from '../../test-support/redis-server.js';

const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
const describeRedis = haveRedis ? describe : describe.skip;

/** The client options the kms-adapters README recommends: fail fast while Redis is down, never queue or resend. */
const CLIENT_OPTIONS = {
  host: '127.0.0.1',
  lazyConnect: true,
  maxRetriesPerRequest: 1,
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  commandTimeout: 2_000,
  retryStrategy: () => 50,
} as const;

/** SIGKILL and restart cycles per case. */
const CRASHES = 3;
/** Every store call is bounded by this: a call still pending after it counts as hung. */
const CALL_BOUND_MS = 6_000;

function randomShare(shareId: string, x: number): StoredShare {
  const value = new Uint8Array(33);
  value.set(randomBytes(32));
  value[32] = x;
  return { shareId, kid: 'chaos-kid', version: 1, setId: 'chaos-set', owner: 'system', x, value };
}

/**
 * Fault suite, Redis (DESIGN invariants 12 and 19): a private redis-server with AOF and
 * `appendfsync always` is SIGKILLed while share puts, replay-cache entries and a key rotation
 * are in flight, then restarted on the same data. Acknowledged writes survive; writes in
 * flight settle with ERR_STORE_IO or succeed, within a bound.
 */
describeRedis('chaos: Redis (AOF, appendfsync always) SIGKILLed and restarted during writes', () => {
  const seed = chaosSeed();
  const rng = seededRandom(seed);
  let server: RedisServer;
  const clients = new Set<Redis>();

  async function connect(): Promise<Redis> {
    const client = new Redis({ ...CLIENT_OPTIONS, port: server.port });
    clients.add(client);
    client.on('error', () => {});
    await client.connect();
    return client;
  }

  /** SIGKILL, some time down, restart on the same port and AOF; resolves once `clients` are ready again. */
  async function crashAndRestart(reconnecting: readonly Redis[], downMs: number): Promise<void> {
    await server.kill('SIGKILL');
    expect(server.running).toBe(false);
    await sleep(downMs);
    await server.restart();
    for (const client of reconnecting) {
      await vi.waitFor(() => expect(client.status).toBe('ready'), { timeout: 10_000, interval: 20 });
    }
  }

  beforeAll(async () => {
    server = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
  });

  afterAll(async () => {
    for (const client of clients) client.disconnect();
    await server?.stop();
  });

  it('share puts in flight at the SIGKILL: every acknowledged put is there after the restart byte for byte, every other put rejected with ERR_STORE_IO, none hung', async () => {
    const client = await connect();
    const store = createRedisShareStore({
      nodeId: 'node-1',
      redis: client,
      keyPrefix: 'puts:',
      requirePersistence: 'refuse',
    });
    expect((await store.checkPersistence()).state).toBe('on');

    const written = new Map<string, StoredShare>();
    const acked = new Set<string>();
    const rejected = new Map<string, string>();
    const hung: string[] = [];
    const pending = new Set<string>();
    let seq = 0;
    let stop = false;

    const writer = async (): Promise<void> => {
      while (!stop) {
        const n = seq++;
        const share = randomShare(`share-${n}`, (n % 255) + 1);
        written.set(share.shareId, share);
        pending.add(share.shareId);
        const settled = await settleWithin(store.put(share), CALL_BOUND_MS);
        pending.delete(share.shareId);
        if (settled.status === 'resolved') {
          acked.add(share.shareId);
        } else if (settled.status === 'rejected') {
          rejected.set(share.shareId, errorCode(settled.error));
          await sleep(5);
        } else {
          hung.push(share.shareId);
        }
      }
    };
    const writers = [writer(), writer(), writer(), writer()];
    const inFlightAtKill = new Set<string>();
    for (let cycle = 0; cycle < CRASHES; cycle++) {
      const target = acked.size + 150;
      await vi.waitFor(() => expect(acked.size).toBeGreaterThanOrEqual(target), { timeout: 20_000, interval: 10 });
      await sleep(rng.int(0, 20));
      for (const shareId of pending) inFlightAtKill.add(shareId);
      await crashAndRestart([client], rng.int(200, 500));
    }
    const target = acked.size + 100;
    await vi.waitFor(() => expect(acked.size).toBeGreaterThanOrEqual(target), { timeout: 20_000, interval: 10 });
    stop = true;
    await Promise.all(writers);

    console.info(
      `[chaos redis puts] ${JSON.stringify({ seed, written: written.size, acked: acked.size, rejected: rejected.size, inFlightAtKill: inFlightAtKill.size })}`,
    );
    expect(hung).toEqual([]);
    expect(new Set(rejected.values())).toEqual(new Set(['ERR_STORE_IO']));
    // The kill really hit writes in flight, and the outage refused writes.
    expect(inFlightAtKill.size).toBeGreaterThan(0);
    expect(rejected.size).toBeGreaterThan(0);

    // A fresh connection, as a restarted KOS or node would open.
    const reader = await connect();
    const check = createRedisShareStore({
      nodeId: 'node-1',
      redis: reader,
      keyPrefix: 'puts:',
      requirePersistence: 'refuse',
    });
    const lost: string[] = [];
    for (const shareId of acked) {
      const stored = await check.get(shareId);
      if (stored === undefined || !Buffer.from(stored.value).equals(Buffer.from(written.get(shareId)!.value))) {
        lost.push(shareId);
      }
    }
    expect(lost, `seed ${seed}`).toEqual([]);
    // A rejected put may or may not have been applied (the command may have reached Redis),
    // but what is there is the whole share that was written, never something else.
    for (const shareId of rejected.keys()) {
      const stored = await check.get(shareId);
      if (stored !== undefined) expect(stored).toEqual(written.get(shareId));
    }
  }, 60_000);

  it('replay-cache entries (markOnce) in flight at the SIGKILL: every id acknowledged as first use is still refused after the restart; the rest rejected with ERR_STORE_IO, none hung', async () => {
    const client = await connect();
    const replay = createRedisMetadataStore({ redis: client, keyPrefix: 'replay:', requirePersistence: 'refuse' });
    const firstUse = new Set<string>();
    const reportedUsed: string[] = [];
    const rejected = new Map<string, string>();
    const hung: string[] = [];
    const pending = new Set<string>();
    let seq = 0;
    let stop = false;

    const marker = async (): Promise<void> => {
      while (!stop) {
        const jti = `jti-${seq++}-${randomBytes(8).toString('hex')}`;
        pending.add(jti);
        const settled = await settleWithin(replay.markOnce('grant.node-1', jti, 600), CALL_BOUND_MS);
        pending.delete(jti);
        if (settled.status === 'resolved') {
          if (settled.value) {
            firstUse.add(jti);
          } else {
            reportedUsed.push(jti);
          }
        } else if (settled.status === 'rejected') {
          rejected.set(jti, errorCode(settled.error));
          await sleep(5);
        } else {
          hung.push(jti);
        }
      }
    };
    const markers = [marker(), marker(), marker(), marker()];
    const inFlightAtKill = new Set<string>();
    for (let cycle = 0; cycle < CRASHES; cycle++) {
      const target = firstUse.size + 200;
      await vi.waitFor(() => expect(firstUse.size).toBeGreaterThanOrEqual(target), { timeout: 20_000, interval: 10 });
      await sleep(rng.int(0, 20));
      for (const jti of pending) inFlightAtKill.add(jti);
      await crashAndRestart([client], rng.int(200, 500));
    }
    const target = firstUse.size + 100;
    await vi.waitFor(() => expect(firstUse.size).toBeGreaterThanOrEqual(target), { timeout: 20_000, interval: 10 });
    stop = true;
    await Promise.all(markers);

    console.info(
      `[chaos redis replay] ${JSON.stringify({ seed, firstUse: firstUse.size, rejected: rejected.size, inFlightAtKill: inFlightAtKill.size })}`,
    );
    expect(hung).toEqual([]);
    // A fresh id is never reported as used (no command was sent twice).
    expect(reportedUsed).toEqual([]);
    expect(new Set(rejected.values())).toEqual(new Set(['ERR_STORE_IO']));
    expect(inFlightAtKill.size).toBeGreaterThan(0);

    // Every grant id accepted once stays refused: a replay after the crash is caught.
    const fresh = createRedisMetadataStore({
      redis: await connect(),
      keyPrefix: 'replay:',
      requirePersistence: 'refuse',
    });
    const acceptedAgain: string[] = [];
    for (const jti of firstUse) if (await fresh.markOnce('grant.node-1', jti, 600)) acceptedAgain.push(jti);
    expect(acceptedAgain, `seed ${seed}`).toEqual([]);
    expect(await fresh.markOnce('grant.node-1', `never-seen-${randomBytes(8).toString('hex')}`, 600)).toBe(true);
  }, 60_000);

  it('rotations on Redis metadata and Redis share stores while Redis is SIGKILLed: each commits or fails typed, every acknowledged version survives with all n shares and opens its envelopes, and a later pass leaves no orphan', async () => {
    const kid = 'ledger';
    const prefix = 'kos-rot:';
    const makeKeys = (client: Redis, clock?: () => number) => {
      const metadata = createRedisMetadataStore({ redis: client, keyPrefix: prefix, requirePersistence: 'refuse' });
      const nodes: RedisShareStore[] = [1, 2, 3, 4, 5].map((i) =>
        createRedisShareStore({ nodeId: `node-${i}`, redis: client, keyPrefix: prefix, requirePersistence: 'refuse' }),
      );
      const keys = new KeyManager({
        metadata,
        nodes,
        systemShares: { n: 5, k: 3 },
        lockTtlMs: 1_500,
        lockWaitMs: 4_000,
        ...(clock ? { clock } : {}),
      });
      return { metadata, nodes, keys };
    };
    const client = await connect();
    const { keys } = makeKeys(client);
    await keys.createKey(kid);

    /** Versions whose rotate() resolved, with the set it reported. */
    const committed = new Map<number, string>();
    /** Envelopes whose seal() resolved, by the version they name. */
    const sealed: Array<{ version: number; envelope: EnvelopeJson; plaintext: string }> = [];
    const failures: string[] = [];
    const hung: string[] = [];
    let rotating = false;
    let stop = false;

    const sealOne = async (label: string): Promise<void> => {
      const plaintext = `entry ${label}`;
      const settled: Settled<unknown> = await settleWithin(
        keys.seal(kid, utf8(plaintext), { dataId: label }).then((envelope) => {
          sealed.push({ version: envelope.header.ver, envelope: encodeEnvelope(envelope, 'json'), plaintext });
        }),
        CALL_BOUND_MS,
      );
      if (settled.status === 'timeout') hung.push(`seal ${label}`);
    };
    await sealOne('v1');

    const rotator = (async () => {
      for (let round = 0; !stop; round++) {
        rotating = true;
        const settled = await settleWithin(keys.rotate(kid), 12_000);
        rotating = false;
        if (settled.status === 'resolved') {
          committed.set(settled.value.version, settled.value.systemSetId);
          await sealOne(`round-${round}`);
        } else if (settled.status === 'rejected') {
          failures.push(errorCode(settled.error));
          await sleep(20);
        } else {
          hung.push(`rotate round ${round}`);
        }
      }
    })();
    let rotatingAtKill = 0;
    for (let cycle = 0; cycle < 2; cycle++) {
      const target = committed.size + 3;
      await vi.waitFor(() => expect(committed.size).toBeGreaterThanOrEqual(target), { timeout: 30_000, interval: 5 });
      // Kill while a rotation is running (they run back to back), at a random point of it.
      await vi.waitFor(() => expect(rotating).toBe(true), { timeout: 5_000, interval: 1 });
      await sleep(rng.int(0, 4));
      if (rotating) rotatingAtKill += 1;
      await crashAndRestart([client], rng.int(200, 500));
    }
    const target = committed.size + 3;
    await vi.waitFor(() => expect(committed.size).toBeGreaterThanOrEqual(target), { timeout: 30_000, interval: 10 });
    stop = true;
    await rotator;

    console.info(
      `[chaos redis rotation] ${JSON.stringify({ seed, committed: [...committed.keys()], failures, sealed: sealed.length, rotatingAtKill })}`,
    );
    expect(hung).toEqual([]);
    expect(failures.length).toBeGreaterThan(0);
    expect(rotatingAtKill).toBeGreaterThan(0);
    expect(failures.filter((code) => code !== 'ERR_ROTATION_FAILED' && code !== 'ERR_STORE_IO')).toEqual([]);

    // A fresh connection and a fresh KeyManager: nothing is served from a cache.
    const after = makeKeys(await connect());
    const record = await after.keys.getKey(kid);
    for (const [version, setId] of committed) {
      expect(record.versions.find((v) => v.version === version)?.systemSetId, `v${version}`).toBe(setId);
    }
    expect(record.primaryVersion).toBe(Math.max(...record.versions.map((v) => v.version)));
    // Every committed version (acknowledged or not) has its set record and all n shares, and rebuilds.
    for (const version of record.versions) {
      const set = await after.metadata.getShareSet(version.systemSetId);
      expect(set, `set of v${version.version}`).toBeDefined();
      for (const placement of set!.placements) {
        const node = after.nodes.find((store) => store.nodeId === placement.nodeId)!;
        expect(await node.get(placement.shareId), `share of v${version.version} on ${placement.nodeId}`).toBeDefined();
      }
      after.keys.clearCache();
      expect((await after.keys.rebuildFromSet(set!)).length).toBe(32);
    }
    for (const { envelope, plaintext } of sealed) {
      after.keys.clearCache();
      expect(new TextDecoder().decode(await after.keys.open(envelope))).toBe(plaintext);
    }

    // A later rotation (its clock past the lock lifetime) collects whatever failed attempts left.
    const later = makeKeys(await connect(), () => Date.now() + 60_000);
    await later.keys.rotate(kid);
    const final = await later.keys.getKey(kid);
    const sets = await later.metadata.listShareSets({ kid });
    expect(sets.map((set) => set.setId).sort()).toEqual(final.versions.map((v) => v.systemSetId).sort());
    const reader = await connect();
    const shareKeys = await reader.keys(`${prefix}{node:*}:share:*`);
    expect(shareKeys.length).toBe(final.versions.length * 5);
  }, 90_000);
});
