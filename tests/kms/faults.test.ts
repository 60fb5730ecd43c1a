import {
  createMediumReference,
  type EnvelopeJson,
  encodeEnvelope,
  encodeShareBody,
  isKosError,
  type KosError,
  type MediumKeyReference,
  toBase64url,
  utf8,
} from '@kos/core';
import { createOpener, type Opener } from '@kos/core/client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type KmsCluster, startKmsCluster } from '../../test-support/kms-cluster.js';
import { type MisbehavingNode, type Misbehavior, startMisbehavingNode } from '../../test-support/misbehaving-node.js';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisServer,
  startRedisServer,
} from '../../test-support/redis-server.js';

const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
const describeRedis = haveRedis ? describe : describe.skip;

const record = { id: 'rec-faults', diagnosis: 'shares survive n-k failures' };
const CLIENT = 'client-faults';
const OTHER_CLIENT = 'client-other';
/** Long enough that no hedge fires: every extra node is asked only because one failed. */
const NO_HEDGE_MS = 10_000;

/** base64url runs as long as a 32-byte key (43 chars) or longer: keys, shares, token parts. */
const BASE64URL_RUN = /[A-Za-z0-9_-]{43,}/g;
const JWT_START = /eyJ[A-Za-z0-9_-]{8,}\./g;

/** Everything in `text` that looks like key, share or token material, or names a share value. */
function secretsIn(text: string, tokens: readonly string[]): string[] {
  const found = [...(text.match(BASE64URL_RUN) ?? []), ...(text.match(JWT_START) ?? [])];
  if (/\bvalue\b/i.test(text)) found.push('the word "value"');
  for (const token of tokens) if (text.includes(token)) found.push('a grant');
  return found;
}

function decodeRecord(plaintext: Uint8Array): unknown {
  return JSON.parse(new TextDecoder().decode(plaintext));
}

function byNode<T extends { nodeId: string }>(list: readonly T[]): T[] {
  return [...list].sort((a, b) => a.nodeId.localeCompare(b.nodeId));
}

/** The reference with share `index` pointing at another server (same path). */
function redirect(reference: MediumKeyReference, index: number, baseUrl: string): MediumKeyReference {
  return {
    ...reference,
    shares: reference.shares.map((share, i) =>
      i === index ? { ...share, url: `${baseUrl}${new URL(share.url).pathname}` } : share,
    ),
  };
}

function deadline(ms: number): { promise: Promise<'deadline'>; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const promise = new Promise<'deadline'>((resolve) => {
    timer = setTimeout(() => resolve('deadline'), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/**
 * Fault tolerance of the medium tier and of KOS's own reads with real `kos-kms` processes on
 * loopback (three file-backed, two Redis-backed; n=5, k=3): nodes that are down, hang, or
 * answer garbage, oversize bodies or wrong shares are named, skipped and hedged around
 * (DESIGN invariants 9, 16), and nothing secret reaches errors or node logs (invariant 14).
 */
describeRedis('KMS faults with real node processes (medium tier, n=5, k=3)', () => {
  let redis: RedisServer;
  let cluster: KmsCluster;
  let envelope: EnvelopeJson;
  const fakes: MisbehavingNode[] = [];
  const openers: Opener[] = [];
  const grants: string[] = [];
  /** stderr lines of every node process ever started (restarts replace `cluster.nodes[i]`). */
  const stderrs = new Set<string[]>();
  let processesStarted = 0;

  const indexOf = (nodeId: string): number => {
    const index = cluster.nodes.findIndex((node) => node.nodeId === nodeId);
    if (index === -1) throw new Error(`no node ${nodeId}`);
    return index;
  };
  const isDown = (index: number): boolean => {
    const { child } = cluster.nodes[index]!;
    return child.exitCode !== null || child.signalCode !== null;
  };
  const restart = async (indexes: readonly number[]): Promise<void> => {
    await Promise.all(indexes.map((i) => cluster.restartNode(i)));
    for (const i of indexes) stderrs.add(cluster.nodes[i]!.stderr);
    processesStarted += indexes.length;
  };
  const kill = (indexes: readonly number[]) => Promise.all(indexes.map((i) => cluster.nodes[i]!.kill()));
  const stop = (indexes: readonly number[]) => Promise.all(indexes.map((i) => cluster.nodes[i]!.stop()));

  /** A fresh reference (a grant is good once per node). */
  const reference = async (clientId = CLIENT): Promise<MediumKeyReference> => {
    const ref = await createMediumReference({
      keys: cluster.keys,
      tokens: cluster.identity.tokens,
      nodes: cluster.directory,
      clientId,
      kid: 'records',
      version: envelope.ver,
      n: 5,
      k: 3,
    });
    grants.push(ref.grant);
    return ref;
  };
  // No spare request by default: these cases check that every failing node is named, which a
  // spare would race (k good shares may arrive before a bad answer is recorded).
  const opener = (timeoutMs: number, hedgeAfterMs: number, extraFetches = 0): Opener => {
    const created = createOpener({ fetch: cluster.clientFetch, timeoutMs, hedgeAfterMs, extraFetches });
    openers.push(created);
    return created;
  };
  const kosRead = async (): Promise<unknown> => {
    cluster.keys.clearCache();
    return decodeRecord(await cluster.keys.open(envelope));
  };
  const failure = (promise: Promise<unknown>): Promise<unknown> =>
    promise.then(
      () => new Error('expected the read to fail'),
      (error: unknown) => error,
    );

  beforeAll(async () => {
    redis = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
    cluster = await startKmsCluster({ stores: ['file', 'file', 'file', 'redis', 'redis'], transport: 'http', redis });
    for (const node of cluster.nodes) stderrs.add(node.stderr);
    processesStarted = cluster.nodes.length;
    await cluster.keys.createKey('records');
    envelope = encodeEnvelope(
      await cluster.keys.seal('records', utf8(JSON.stringify(record)), { dataId: record.id }),
      'json',
    );
    // Provision both clients' share sets while every node is up; later references reuse them.
    const first = await reference();
    await reference(OTHER_CLIENT);
    expect(first.shares.map((s) => s.nodeId).sort()).toEqual(['node-1', 'node-2', 'node-3', 'node-4', 'node-5']);
  }, 60_000);

  afterEach(async () => {
    // A failed test must not leave nodes down for the next one.
    const down = cluster.nodes.map((_, i) => i).filter(isDown);
    if (down.length > 0) await restart(down);
  }, 30_000);

  afterAll(async () => {
    for (const created of openers) created.dispose();
    await Promise.all(fakes.map((fake) => fake.close()));
    await cluster?.stop();
    await redis?.stop();
  }, 30_000);

  it('with n−k (2) node processes killed, a client medium read succeeds and names both nodes as unavailable', async () => {
    const ref = await reference();
    // The first k placements are asked first, so the dead nodes are certainly tried.
    const down = [ref.shares[0]!.nodeId, ref.shares[1]!.nodeId];
    await kill(down.map(indexOf));

    const client = opener(3000, NO_HEDGE_MS);
    expect(decodeRecord(await client.open({ envelope, key: ref }))).toEqual(record);
    expect(byNode(client.lastFailures)).toEqual(
      down.sort().map((nodeId) => ({ nodeId, reason: 'unavailable', code: 'ERR_KMS_UNREACHABLE' })),
    );

    await restart(down.map(indexOf));
  });

  it('with n−k+1 (3) nodes down, a client medium read fails with ERR_SHARES_INSUFFICIENT naming every failed node and no secret', async () => {
    const ref = await reference();
    const down = ref.shares.slice(0, 3).map((s) => s.nodeId);
    await stop(down.map(indexOf));

    const client = opener(3000, NO_HEDGE_MS);
    const error = await failure(client.open({ envelope, key: ref }));
    expect(isKosError(error)).toBe(true);
    const kosError = error as KosError;
    expect(kosError.code).toBe('ERR_SHARES_INSUFFICIENT');
    const expected = down.sort().map((nodeId) => ({ nodeId, reason: 'unavailable', code: 'ERR_KMS_UNREACHABLE' }));
    expect(kosError.details).toMatchObject({ needed: 3, verified: 2 });
    expect(byNode(kosError.details?.failures as { nodeId: string }[])).toEqual(expected);
    expect(byNode(client.lastFailures)).toEqual(expected);
    const serialized = `${String(kosError)}\n${JSON.stringify({ message: kosError.message, details: kosError.details })}`;
    expect(secretsIn(serialized, grants)).toEqual([]);

    await restart(down.map(indexOf));
  });

  it('a node that accepts and never answers is hedged around: the read completes from the others before the per-node timeout, and the hung request is aborted', async () => {
    const timeoutMs = 4000;
    const hang = await startMisbehavingNode({ kind: 'hang' });
    fakes.push(hang);
    const ref = await reference();
    const hungNode = ref.shares[0]!.nodeId;
    const client = opener(timeoutMs, 100);

    const timer = deadline(timeoutMs);
    const outcome = await Promise.race([client.open({ envelope, key: redirect(ref, 0, hang.url) }), timer.promise]);
    timer.cancel();
    expect(outcome).not.toBe('deadline');
    expect(decodeRecord(outcome as Uint8Array)).toEqual(record);
    expect(hang.requests).toBe(1);
    expect(client.lastFailures.filter((f) => f.nodeId !== hungNode)).toEqual([]);

    // Once k shares are in, the hung request is aborted: its connection closes, long before
    // the per-node timeout (whose timer the opener has cleared) could have closed it.
    const closeTimer = deadline(timeoutMs);
    expect(await Promise.race([hang.allClosed().then(() => 'closed' as const), closeTimer.promise])).toBe('closed');
    closeTimer.cancel();
  });

  const misbehaviors: ReadonlyArray<{
    readonly name: string;
    readonly behavior: (ref: MediumKeyReference) => Promise<Misbehavior>;
    readonly expected: { reason: string; code?: string };
    /** The client must drop the connection rather than read the body to its end. */
    readonly dropsConnection?: boolean;
  }> = [
    {
      name: '200 with a body that is not JSON',
      behavior: async () => ({ kind: 'garbage' }),
      expected: { reason: 'unavailable', code: 'ERR_KMS_BAD_BODY' },
    },
    {
      name: '200 with a 1 MiB body and content-length',
      behavior: async () => ({ kind: 'huge', contentLength: true }),
      expected: { reason: 'unavailable', code: 'ERR_KMS_BODY_TOO_LARGE' },
      dropsConnection: true,
    },
    {
      name: '200 with a 1 MiB chunked body (no content-length)',
      behavior: async () => ({ kind: 'huge', contentLength: false }),
      expected: { reason: 'unavailable', code: 'ERR_KMS_BODY_TOO_LARGE' },
      dropsConnection: true,
    },
    {
      name: 'the real share of another node of the same set',
      behavior: async (ref) => {
        const other = ref.shares[1]!;
        const share = await cluster.stores[indexOf(other.nodeId)]!.get(other.shareId);
        if (!share) throw new Error('share not found');
        return { kind: 'json', body: { share: encodeShareBody(share) } };
      },
      expected: { reason: 'x-mismatch' },
    },
    {
      name: 'random 33 bytes with the right x and metadata',
      behavior: async (ref) => {
        const placement = ref.shares[0]!;
        const value = new Uint8Array(33);
        globalThis.crypto.getRandomValues(value);
        value[32] = placement.x;
        return {
          kind: 'json',
          body: {
            share: {
              shareId: placement.shareId,
              kid: ref.kid,
              version: ref.ver,
              setId: ref.setId,
              owner: CLIENT,
              x: placement.x,
              value: toBase64url(value),
            },
          },
        };
      },
      expected: { reason: 'digest-mismatch' },
    },
    {
      name: "another client's share on the same node, relabelled as this set's",
      behavior: async (ref) => {
        const placement = ref.shares[0]!;
        const otherRef = await reference(OTHER_CLIENT);
        const theirs = otherRef.shares.find((s) => s.nodeId === placement.nodeId)!;
        const share = await cluster.stores[indexOf(placement.nodeId)]!.get(theirs.shareId);
        if (!share) throw new Error('share not found');
        const value = new Uint8Array(share.value);
        value[32] = placement.x;
        return {
          kind: 'json',
          body: {
            share: {
              ...encodeShareBody(share),
              shareId: placement.shareId,
              setId: ref.setId,
              owner: CLIENT,
              x: placement.x,
              value: toBase64url(value),
            },
          },
        };
      },
      expected: { reason: 'digest-mismatch' },
    },
  ];

  it.each(misbehaviors)(
    'a node answering $name is named in lastFailures and skipped; the plaintext is still correct',
    async ({ behavior, expected, dropsConnection }) => {
      const ref = await reference();
      const fake = await startMisbehavingNode(await behavior(ref));
      fakes.push(fake);
      const client = opener(3000, NO_HEDGE_MS);
      expect(decodeRecord(await client.open({ envelope, key: redirect(ref, 0, fake.url) }))).toEqual(record);
      expect(fake.requests).toBe(1);
      expect(client.lastFailures).toEqual([{ nodeId: ref.shares[0]!.nodeId, ...expected }]);
      if (dropsConnection) {
        // The fake keeps idle connections for a minute: only the client cancelling closes it.
        const timer = deadline(3000);
        expect(await Promise.race([fake.allClosed().then(() => 'closed' as const), timer.promise])).toBe('closed');
        timer.cancel();
      }
    },
  );

  it('KOS reads survive 2 of 5 node processes SIGKILLed, fail with ERR_SHARES_INSUFFICIENT at 3, and recover after restarts (file and Redis nodes)', async () => {
    expect(await kosRead()).toEqual(record);

    // node-1 (file) and node-4 (Redis) crash.
    await kill([0, 3]);
    expect(await kosRead()).toEqual(record);

    // node-2 (file) crashes too: only 2 of the 3 shares needed remain.
    await kill([1]);
    cluster.keys.clearCache();
    const error = await failure(cluster.keys.open(envelope));
    expect(isKosError(error)).toBe(true);
    expect((error as KosError).code).toBe('ERR_SHARES_INSUFFICIENT');
    expect(byNode((error as KosError).details?.failures as { nodeId: string }[])).toEqual(
      ['node-1', 'node-2', 'node-4'].map((nodeId) => ({ nodeId, reason: 'unavailable', code: 'ERR_KMS_UNREACHABLE' })),
    );
    expect(
      secretsIn(JSON.stringify({ message: (error as KosError).message, details: (error as KosError).details }), grants),
    ).toEqual([]);

    // Same ports, same data (files on disk, shares in Redis).
    await restart([0, 1, 3]);
    expect(await kosRead()).toEqual(record);

    // Now crash the two nodes that never went down: the read can only come from the
    // restarted ones, the Redis-backed node-4 among them.
    await kill([2, 4]);
    expect(await kosRead()).toEqual(record);
    await restart([2, 4]);
    expect(await kosRead()).toEqual(record);
  });

  it('no node process wrote share bytes, keys or tokens to stderr', () => {
    // The scanner itself catches what it looks for.
    expect(secretsIn(`{"event":"error","message":"${grants[0]}"}`, grants).length).toBeGreaterThan(0);
    expect(secretsIn(`{"share":{"value":"${toBase64url(new Uint8Array(33).fill(7))}"}}`, []).length).toBeGreaterThan(0);

    // Every process ever started is scanned: 5 at the start plus one per restart.
    expect(stderrs.size).toBe(processesStarted);
    expect(processesStarted).toBeGreaterThan(cluster.nodes.length);
    const findings = [...stderrs].flatMap((lines) => lines.flatMap((line) => secretsIn(line, grants)));
    expect(findings).toEqual([]);
  });
});
