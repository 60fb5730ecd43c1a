import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import {
  combineMetrics,
  KeyManager,
  type KeyRecord,
  type KosLogger,
  type KosMetrics,
  noopMetrics,
  type ShareFetchOutcome,
  silentLogger,
  utf8,
} from '@kos/core';
import { createApp as createExpressApp } from '@kos/example-express';
import { createApp as createHonoApp } from '@kos/example-hono';
import { createApp as createKoaApp } from '@kos/example-koa';
import { createMemoryMetadataStore } from '@kos/kms-adapters';
import { createPrometheusMetrics } from '@kos/kms-adapters/prometheus';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { expectKosError } from '../../packages/core/test/helpers.js';
import { type HostileNode, hostileNodes } from '../support/nodes.js';

// ------------------------------------------------------------------ helpers

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Parses the Prometheus text format (enough of it for these tests). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key as string] = value as string;
    }
    samples.push({ name: match[1] as string, labels, value: Number(match[3] === 'Nan' ? Number.NaN : match[3]) });
  }
  return samples;
}

/** The value of the one sample with this name and exactly these labels (undefined when absent). */
function sampleValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = parse(text).filter(
    (sample) =>
      sample.name === name &&
      Object.keys(sample.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
  );
  if (found.length > 1) throw new Error(`${found.length} samples of ${name}`);
  return found[0]?.value;
}

function samplesOf(text: string, name: string): Sample[] {
  return parse(text).filter((sample) => sample.name === name);
}

type Call = [keyof KosMetrics, ...unknown[]];

/** A sink that records every call. */
function recordingMetrics(): KosMetrics & { calls: Call[]; of(name: keyof KosMetrics): unknown[][] } {
  const calls: Call[] = [];
  const record =
    (name: keyof KosMetrics) =>
    (...args: unknown[]) => {
      calls.push([name, ...args]);
    };
  return {
    calls,
    of: (name) => calls.filter((call) => call[0] === name).map((call) => call.slice(1)),
    decision: record('decision'),
    keyRelease: record('keyRelease'),
    dekCache: record('dekCache'),
    shareFetch: record('shareFetch'),
    error: record('error'),
    rotation: record('rotation'),
    rotationFailure: record('rotationFailure'),
  };
}

function recordingLogger(): KosLogger & { lines: Array<{ level: string; object: object; message?: string }> } {
  const lines: Array<{ level: string; object: object; message?: string }> = [];
  const at = (level: string) => (object: object, message?: string) => {
    lines.push({ level, object, ...(message === undefined ? {} : { message }) });
  };
  return { lines, info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') };
}

// ------------------------------------------------------------------ the no-op sink

describe('the no-op metrics sink and logger', () => {
  it('accepts every call, returns nothing and cannot be changed', () => {
    expect(noopMetrics.decision('high')).toBeUndefined();
    expect(noopMetrics.keyRelease('low')).toBeUndefined();
    expect(noopMetrics.dekCache(true)).toBeUndefined();
    expect(noopMetrics.shareFetch('node-1', 0.001, 'ok')).toBeUndefined();
    expect(noopMetrics.error('ERR_INTERNAL')).toBeUndefined();
    expect(noopMetrics.rotation('orders', 2, Date.now())).toBeUndefined();
    expect(Object.isFrozen(noopMetrics)).toBe(true);
    expect(Object.isFrozen(silentLogger)).toBe(true);
    expect(() => {
      (noopMetrics as { decision: unknown }).decision = () => {
        throw new Error('replaced');
      };
    }).toThrow(TypeError);
  });

  it('combineMetrics calls every sink and a throwing sink does not stop the others', () => {
    const first = recordingMetrics();
    const second = recordingMetrics();
    const broken: KosMetrics = {
      ...noopMetrics,
      decision: () => {
        throw new Error('sink down');
      },
    };
    const both = combineMetrics(first, broken, second);
    both.decision('medium');
    both.shareFetch('node-2', 0.5, 'timeout');
    expect(first.calls).toEqual([
      ['decision', 'medium'],
      ['shareFetch', 'node-2', 0.5, 'timeout'],
    ]);
    expect(second.calls).toEqual(first.calls);
    expect(combineMetrics()).toBe(noopMetrics);
    expect(combineMetrics(noopMetrics, first)).toBe(first);
  });

  it('a KeyManager without metrics works as before (the no-op sink is the default)', async () => {
    const keys = new KeyManager({ metadata: createMemoryMetadataStore(), nodes: hostileNodes(5) });
    await keys.createKey('orders');
    const envelope = await keys.seal('orders', utf8('x'), { dataId: 'd' });
    keys.clearCache();
    expect(new TextDecoder().decode(await keys.open(envelope))).toBe('x');
  });
});

// ------------------------------------------------------------------ the KeyManager's reports

describe('what the KeyManager reports', () => {
  function setup(
    nodes: HostileNode[] = hostileNodes(5),
    extra: Partial<ConstructorParameters<typeof KeyManager>[0]> = {},
  ) {
    const metrics = recordingMetrics();
    const logger = recordingLogger();
    const keys = new KeyManager({ metadata: createMemoryMetadataStore(), nodes, metrics, logger, ...extra });
    return { keys, metrics, logger, nodes };
  }

  it('counts DEK cache hits and misses and times every share fetch per node', async () => {
    const { keys, metrics } = setup();
    await keys.createKey('orders');
    const envelope = await keys.seal('orders', utf8('x'), { dataId: 'd' });
    expect(metrics.of('dekCache')).toEqual([[true]]); // the rotation left the new DEK in the cache
    keys.clearCache();
    await keys.open(envelope);
    await keys.open(envelope);
    expect(metrics.of('dekCache')).toEqual([[true], [false], [true]]);
    const fetches = metrics.of('shareFetch') as Array<[string, number, ShareFetchOutcome]>;
    const ok = fetches.filter(([, , outcome]) => outcome === 'ok');
    expect(ok.length).toBeGreaterThanOrEqual(3); // k = 3 of n = 5
    expect(new Set(ok.map(([nodeId]) => nodeId)).size).toBe(ok.length);
    for (const [nodeId, seconds] of fetches) {
      expect(nodeId).toMatch(/^node-[1-5]$/);
      expect(seconds).toBeGreaterThanOrEqual(0);
      expect(seconds).toBeLessThan(5);
    }
  });

  it('names a failing node (outcome error), logs it without share bytes, and still rebuilds', async () => {
    const { keys, metrics, logger, nodes } = setup();
    await keys.createKey('orders');
    const envelope = await keys.seal('orders', utf8('secret text'), { dataId: 'd' });
    keys.clearCache();
    // Two nodes down: at least one of them is among the first four asked.
    (nodes[0] as HostileNode).behaviour = { kind: 'down' };
    (nodes[1] as HostileNode).behaviour = { kind: 'down' };
    expect(new TextDecoder().decode(await keys.open(envelope))).toBe('secret text');
    const failed = (metrics.of('shareFetch') as Array<[string, number, string]>).filter(([, , o]) => o === 'error');
    expect(failed.length).toBeGreaterThanOrEqual(1);
    for (const [nodeId] of failed) expect(['node-1', 'node-2']).toContain(nodeId);
    // The log names the failures the rebuild counted (a failure after k good shares is only timed).
    const warning = logger.lines.find((line) => line.level === 'warn');
    expect(warning?.object).toMatchObject({ kid: 'orders', version: 1 });
    const failures =
      (warning?.object as { failures?: Array<{ nodeId: string; reason: string }> } | undefined)?.failures ?? [];
    expect(failures.length).toBeGreaterThanOrEqual(1);
    for (const failure of failures) {
      expect(failed.map(([nodeId]) => nodeId)).toContain(failure.nodeId);
      expect(failure.reason).toBe('unavailable');
    }
    expect(JSON.stringify(logger.lines)).not.toMatch(/secret text|"value"/);
  });

  it('reports missing shares, timed-out fetches and fetches cancelled once k shares arrived', async () => {
    // n = k = 2: a stalled node is needed, so its fetch times out.
    const two = setup(hostileNodes(2), { systemShares: { n: 2, k: 2 }, shareTimeoutMs: 30, hedgeAfterMs: 10_000 });
    await two.keys.createKey('orders');
    const sealed = await two.keys.seal('orders', utf8('x'), { dataId: 'd' });
    two.keys.clearCache();
    (two.nodes[1] as HostileNode).behaviour = { kind: 'stall' };
    await expectKosError(() => two.keys.open(sealed), 'ERR_SHARES_INSUFFICIENT');
    await vi.waitFor(() =>
      expect(two.metrics.of('shareFetch')).toContainEqual(['node-2', expect.any(Number), 'timeout']),
    );
    expect(two.logger.lines.find((line) => line.level === 'error')?.object).toMatchObject({
      kid: 'orders',
      code: 'ERR_SHARES_INSUFFICIENT',
    });
    (two.nodes[1] as HostileNode).behaviour = { kind: 'substitute', share: () => undefined };
    await expectKosError(() => two.keys.open(sealed), 'ERR_SHARES_INSUFFICIENT');
    expect(two.metrics.of('shareFetch')).toContainEqual(['node-2', expect.any(Number), 'missing']);

    // n = 3, k = 2 and one spare attempt: all three are asked, two answer, the stalled one is cancelled.
    const three = setup(hostileNodes(3), { systemShares: { n: 3, k: 2 }, hedgeAfterMs: 10_000 });
    await three.keys.createKey('orders');
    const envelope = await three.keys.seal('orders', utf8('x'), { dataId: 'd' });
    three.keys.clearCache();
    (three.nodes[2] as HostileNode).behaviour = { kind: 'stall' };
    await three.keys.open(envelope);
    await vi.waitFor(() =>
      expect(three.metrics.of('shareFetch')).toContainEqual(['node-3', expect.any(Number), 'cancelled']),
    );
  });

  it('reports each new primary version with its creation time, and failed rotations by code', async () => {
    let now = 1_700_000_000_000;
    const { keys, metrics, logger, nodes } = setup(hostileNodes(5), { clock: () => now });
    await keys.createKey('orders');
    now += 60_000;
    await keys.rotate('orders');
    expect(metrics.of('rotation')).toEqual([
      ['orders', 1, 1_700_000_000_000],
      ['orders', 2, 1_700_000_060_000],
    ]);
    (nodes[3] as HostileNode).behaviour = { kind: 'fail-writes-after', writes: 0 };
    await expectKosError(() => keys.rotate('orders'), 'ERR_ROTATION_FAILED');
    expect(metrics.of('rotationFailure')).toEqual([['ERR_ROTATION_FAILED']]);
    expect(metrics.of('rotation')).toHaveLength(2);
    const logged = logger.lines.filter((line) => line.level === 'error');
    expect(logged).toHaveLength(1);
    expect(logged[0]?.object).toMatchObject({
      kid: 'orders',
      reason: 'manual',
      code: 'ERR_ROTATION_FAILED',
      details: { code: 'ERR_STORE_IO' },
    });
    // A caller's mistake is not a rotation failure.
    await expectKosError(() => keys.rotate('nope'), 'ERR_KEY_NOT_FOUND');
    expect(metrics.of('rotationFailure')).toHaveLength(1);
  });

  it('hands its key registry to a sink that watches keys', () => {
    const watched: unknown[] = [];
    const keys = new KeyManager({
      metadata: createMemoryMetadataStore(),
      nodes: hostileNodes(5),
      metrics: { ...noopMetrics, watchKeys: (registry) => watched.push(registry) },
    });
    expect(watched).toEqual([keys]);
  });
});

// ------------------------------------------------------------------ Prometheus

describe('the Prometheus metrics', () => {
  it('exports every counter with its labels and the content type Prometheus expects', async () => {
    const prometheus = createPrometheusMetrics();
    prometheus.decision('high');
    prometheus.decision('high');
    prometheus.decision('low');
    prometheus.keyRelease('medium');
    prometheus.dekCache(true);
    prometheus.dekCache(true);
    prometheus.dekCache(true);
    prometheus.dekCache(false);
    prometheus.shareFetch('node-1', 0.003, 'ok');
    prometheus.shareFetch('node-1', 0.2, 'ok');
    prometheus.shareFetch('node-2', 6, 'timeout');
    prometheus.error('ERR_ACCESS_DENIED');
    prometheus.error('ERR_ACCESS_DENIED');
    prometheus.rotationFailure('ERR_ROTATION_FAILED');
    const text = await prometheus.metricsText();
    expect(prometheus.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(sampleValue(text, 'kos_decisions_total', { tier: 'high' })).toBe(2);
    expect(sampleValue(text, 'kos_decisions_total', { tier: 'low' })).toBe(1);
    expect(sampleValue(text, 'kos_decisions_total', { tier: 'medium' })).toBeUndefined();
    expect(sampleValue(text, 'kos_key_releases_total', { tier: 'medium' })).toBe(1);
    expect(sampleValue(text, 'kos_dek_cache_requests_total', { result: 'hit' })).toBe(3);
    expect(sampleValue(text, 'kos_dek_cache_requests_total', { result: 'miss' })).toBe(1);
    expect(sampleValue(text, 'kos_dek_cache_hit_ratio')).toBe(0.75);
    expect(sampleValue(text, 'kos_share_fetch_seconds_count', { node: 'node-1', outcome: 'ok' })).toBe(2);
    expect(sampleValue(text, 'kos_share_fetch_seconds_sum', { node: 'node-1', outcome: 'ok' })).toBeCloseTo(0.203);
    expect(sampleValue(text, 'kos_share_fetch_seconds_bucket', { node: 'node-1', outcome: 'ok', le: '0.005' })).toBe(1);
    expect(sampleValue(text, 'kos_share_fetch_seconds_bucket', { node: 'node-2', outcome: 'timeout', le: '5' })).toBe(
      0,
    );
    expect(sampleValue(text, 'kos_share_fetch_seconds_bucket', { node: 'node-2', outcome: 'timeout', le: '10' })).toBe(
      1,
    );
    expect(sampleValue(text, 'kos_errors_total', { code: 'ERR_ACCESS_DENIED' })).toBe(2);
    expect(sampleValue(text, 'kos_rotation_failures_total', { code: 'ERR_ROTATION_FAILED' })).toBe(1);
  });

  it('folds anything that is not an error code, so labels stay bounded and free of data', async () => {
    const prometheus = createPrometheusMetrics();
    prometheus.error('Bearer eyJhbGciOiJFZERTQSJ9.payload.signature');
    prometheus.error('ERR_TOKEN_INVALID');
    const text = await prometheus.metricsText();
    expect(text).not.toContain('eyJ');
    expect(sampleValue(text, 'kos_errors_total', { code: 'ERR_INTERNAL' })).toBe(1);
    expect(sampleValue(text, 'kos_errors_total', { code: 'ERR_TOKEN_INVALID' })).toBe(1);
    prometheus.shareFetch('node-1', Number.NaN, 'ok');
    expect(
      sampleValue(await prometheus.metricsText(), 'kos_share_fetch_seconds_count', { node: 'node-1', outcome: 'ok' }),
    ).toBeUndefined();
  });

  it('uses the given registry and prefix, and refuses a bad prefix', async () => {
    const registry = new Registry();
    const prometheus = createPrometheusMetrics({ registry, prefix: 'app_kos_' });
    prometheus.decision('low');
    expect(prometheus.registry).toBe(registry);
    const text = await registry.metrics();
    expect(sampleValue(text, 'app_kos_decisions_total', { tier: 'low' })).toBe(1);
    expect(sampleValue(text, 'kos_decisions_total', { tier: 'low' })).toBeUndefined();
    expect(() => createPrometheusMetrics({ prefix: 'bad prefix-' })).toThrow(/prefix/);
    // Two instances on their own registries do not collide.
    expect(() => createPrometheusMetrics()).not.toThrow();
  });

  it('exports key ages read from the key registry, the oldest first, capped, and refreshes them', async () => {
    let now = 1_000_000_000;
    const created: Record<string, number> = { a: now - 50_000, b: now - 10_000, c: now - 90_000, d: now - 30_000 };
    const reader = {
      listKeys: vi.fn(async () => Object.keys(created)),
      getKey: vi.fn(
        async (kid: string): Promise<KeyRecord> =>
          ({
            kid,
            primaryVersion: 2,
            minDecryptVersion: 1,
            versions: [
              { version: 1, createdAt: 0 },
              { version: 2, createdAt: created[kid] },
            ],
          }) as unknown as KeyRecord,
      ),
    };
    const prometheus = createPrometheusMetrics({ maxKeyAgeKids: 2, keyRegistryRefreshMs: 60_000, clock: () => now });
    prometheus.watchKeys(reader);
    let text = await prometheus.metricsText();
    expect(samplesOf(text, 'kos_key_primary_age_seconds').map((s) => [s.labels.kid, s.value])).toEqual([
      ['c', 90],
      ['a', 50],
    ]);
    expect(sampleValue(text, 'kos_key_primary_age_max_seconds')).toBe(90);
    expect(sampleValue(text, 'kos_keys')).toBe(4);
    expect(sampleValue(text, 'kos_key_registry_read_age_seconds')).toBe(0);
    expect(reader.listKeys).toHaveBeenCalledTimes(1);

    // Within the refresh interval: no new read, ages move with the clock, a rotation seen here counts.
    now += 5_000;
    prometheus.rotation('c', 3, now);
    text = await prometheus.metricsText();
    expect(reader.listKeys).toHaveBeenCalledTimes(1);
    expect(samplesOf(text, 'kos_key_primary_age_seconds').map((s) => [s.labels.kid, s.value])).toEqual([
      ['a', 55],
      ['d', 35],
    ]);
    expect(sampleValue(text, 'kos_rotations_total')).toBe(1);
    expect(sampleValue(text, 'kos_key_registry_read_age_seconds')).toBe(5);

    // After it: read again; a deleted key disappears; a failed read keeps the last values.
    now += 60_000;
    delete created.a;
    text = await prometheus.metricsText();
    expect(reader.listKeys).toHaveBeenCalledTimes(2);
    expect(sampleValue(text, 'kos_keys')).toBe(3);
    expect(sampleValue(text, 'kos_key_primary_age_seconds', { kid: 'a' })).toBeUndefined();
    now += 60_000;
    reader.listKeys.mockRejectedValueOnce(new Error('redis down'));
    text = await prometheus.metricsText();
    expect(reader.listKeys).toHaveBeenCalledTimes(3);
    expect(sampleValue(text, 'kos_keys')).toBe(3);
    expect(sampleValue(text, 'kos_key_registry_read_age_seconds')).toBe(60);
  });

  it('without a key registry, ages come from the rotations seen; with maxKeyAgeKids 0 no kid is exported', async () => {
    let now = 5_000_000;
    const prometheus = createPrometheusMetrics({ clock: () => now, maxKeyAgeKids: 0 });
    prometheus.rotation('orders', 1, now);
    now += 2_500;
    const text = await prometheus.metricsText();
    expect(samplesOf(text, 'kos_key_primary_age_seconds')).toEqual([]);
    expect(sampleValue(text, 'kos_key_primary_age_max_seconds')).toBe(2.5);
    expect(sampleValue(text, 'kos_keys')).toBe(1);
    const other = createPrometheusMetrics({ clock: () => now });
    other.rotation('orders', 1, now - 1000);
    expect(sampleValue(await other.metricsText(), 'kos_key_primary_age_seconds', { kid: 'orders' })).toBe(1);
  });
});

// ------------------------------------------------------------------ GET /metrics on the examples

async function listen(server: Server): Promise<string> {
  if (!server.listening) await new Promise((resolve) => server.once('listening', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('GET /metrics on the Express example after traffic at every tier', () => {
  let dir: string;
  let server: Server;
  let base: string;
  let stop: () => Promise<void>;
  let text: string;
  let contentType: string | null;
  const secrets: string[] = [];
  const clientIds = ['writer-7d1c0a', 'low-client-93b2', 'medium-client-5e44', 'high-client-a1f0', 'high-client-b2e1'];
  const record = { patient: 'Ada Lovelace', diagnosis: 'influenza-b' };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-metrics-'));
    const { app, kos, runtime } = await createExpressApp({ dir, env: {} });
    server = app.listen(0, '127.0.0.1');
    base = await listen(server);
    stop = async () => {
      server.close();
      await kos.close();
    };
    const mint = async (clientId: string, score: number) => {
      const token = await (runtime.mintDevToken as NonNullable<typeof runtime.mintDevToken>)({ clientId, score });
      secrets.push(token);
      return token;
    };
    const get = async (path: string, token?: string) => {
      const response = await fetch(`${base}${path}`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
      const body = await response.text();
      for (const match of body.matchAll(/"(dek|grant|dekJwe)":"([^"]+)"/g)) secrets.push(match[2] as string);
      return { status: response.status, tier: response.headers.get('kos-tier'), body };
    };
    const created = await fetch(`${base}/records`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await mint('writer-7d1c0a', 90)}`, 'content-type': 'application/json' },
      body: JSON.stringify(record),
    });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    // Forget cached DEKs so the next read rebuilds one from the KMS nodes.
    runtime.kos.keys.clearCache();
    const traffic: Array<[string, number, string]> = [
      ['low-client-93b2', 30, 'low'],
      ['low-client-93b2', 30, 'low'],
      ['medium-client-5e44', 65, 'medium'],
      ['high-client-a1f0', 90, 'high'],
      ['high-client-a1f0', 90, 'high'],
      ['high-client-b2e1', 95, 'high'],
    ];
    for (const [clientId, score, tier] of traffic) {
      const response = await get(`/records/${id}`, await mint(clientId, score));
      expect(response.status).toBe(200);
      expect(response.tier).toBe(tier);
    }
    expect(secrets.some((secret) => secret.length === 43)).toBe(true); // a high-tier DEK (32 bytes, base64url) was seen
    expect((await get(`/records/${id}`)).status).toBe(401);
    expect((await get(`/records/${id}`, 'not-a-token')).status).toBe(401);
    const scraped = await fetch(`${base}/metrics`);
    expect(scraped.status).toBe(200);
    contentType = scraped.headers.get('content-type');
    text = await scraped.text();
  });

  afterAll(async () => {
    await stop?.();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is public and answers the Prometheus text format', () => {
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(text).toContain('# TYPE kos_decisions_total counter');
    expect(() => parse(text)).not.toThrow();
  });

  it('counts decisions and key releases by tier', () => {
    expect(sampleValue(text, 'kos_decisions_total', { tier: 'low' })).toBe(2);
    expect(sampleValue(text, 'kos_decisions_total', { tier: 'medium' })).toBe(1);
    expect(sampleValue(text, 'kos_decisions_total', { tier: 'high' })).toBe(4); // the writer too
    expect(sampleValue(text, 'kos_key_releases_total', { tier: 'low' })).toBe(2);
    expect(sampleValue(text, 'kos_key_releases_total', { tier: 'medium' })).toBe(1);
    expect(sampleValue(text, 'kos_key_releases_total', { tier: 'high' })).toBe(3); // the write released nothing
  });

  it('counts DEK cache hits and misses', () => {
    expect(sampleValue(text, 'kos_dek_cache_requests_total', { result: 'hit' })).toBeGreaterThan(0);
    expect(sampleValue(text, 'kos_dek_cache_requests_total', { result: 'miss' })).toBeGreaterThanOrEqual(1);
    const ratio = sampleValue(text, 'kos_dek_cache_hit_ratio') as number;
    expect(ratio).toBeGreaterThan(0);
    expect(ratio).toBeLessThan(1);
  });

  it('has share fetch latency per KMS node', () => {
    const counts = samplesOf(text, 'kos_share_fetch_seconds_count').filter((s) => s.labels.outcome === 'ok');
    const nodes = new Set(counts.map((sample) => sample.labels.node));
    expect(nodes.size).toBeGreaterThanOrEqual(3); // k = 3 of the 5 embedded nodes
    for (const node of nodes) expect(node).toMatch(/^node-[1-5]$/);
    expect(counts.reduce((sum, sample) => sum + sample.value, 0)).toBeGreaterThanOrEqual(3);
    expect(samplesOf(text, 'kos_share_fetch_seconds_bucket').some((s) => s.labels.le === '+Inf')).toBe(true);
  });

  it('counts the denied requests by error code', () => {
    expect(sampleValue(text, 'kos_errors_total', { code: 'ERR_UNAUTHENTICATED' })).toBe(1);
    const errors = samplesOf(text, 'kos_errors_total');
    expect(errors.reduce((sum, sample) => sum + sample.value, 0)).toBe(2);
    expect(errors.map((sample) => sample.labels.code).every((code) => /^ERR_[A-Z_]+$/.test(code as string))).toBe(true);
  });

  it('shows the age of the key and the rotations', () => {
    const age = sampleValue(text, 'kos_key_primary_age_seconds', { kid: 'records' }) as number;
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(120);
    expect(sampleValue(text, 'kos_keys')).toBe(1);
    expect(sampleValue(text, 'kos_rotations_total')).toBe(1);
  });

  it('contains no client id, token, grant, DEK or data', () => {
    expect(secrets.length).toBeGreaterThan(8);
    for (const secret of [...secrets, ...clientIds, record.patient, record.diagnosis]) {
      expect(text.includes(secret), `metrics contain ${secret.slice(0, 12)}…`).toBe(false);
    }
    const labelKeys = new Set(parse(text).flatMap((sample) => Object.keys(sample.labels)));
    expect([...labelKeys].sort()).toEqual(['code', 'kid', 'le', 'node', 'outcome', 'result', 'tier']);
  });

  it('is not behind KOS: scraping makes no decision', async () => {
    const again = await (await fetch(`${base}/metrics`)).text();
    for (const tier of ['low', 'medium', 'high']) {
      expect(sampleValue(again, 'kos_decisions_total', { tier })).toBe(
        sampleValue(text, 'kos_decisions_total', { tier }),
      );
    }
  });
});

describe.each([
  [
    'hono',
    async (dir: string) => {
      const { app, kos, runtime } = await createHonoApp({ dir, env: {} });
      const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as unknown as Server;
      return { server, kos, runtime };
    },
  ],
  [
    'koa',
    async (dir: string) => {
      const { app, kos, runtime } = await createKoaApp({ dir, env: {} });
      return { server: app.listen(0, '127.0.0.1'), kos, runtime };
    },
  ],
] as const)('GET /metrics on the %s example', (_framework, start) => {
  it('answers the counters after a request, in the Prometheus text format', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kos-metrics-'));
    const { server, kos, runtime } = await start(dir);
    try {
      const base = await listen(server);
      const token = await (runtime.mintDevToken as NonNullable<typeof runtime.mintDevToken>)({
        clientId: 'one-client',
        score: 40,
      });
      expect((await fetch(`${base}/records`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
      const scraped = await fetch(`${base}/metrics`);
      expect(scraped.status).toBe(200);
      expect(scraped.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      const text = await scraped.text();
      expect(sampleValue(text, 'kos_decisions_total', { tier: 'low' })).toBe(1);
      expect(text).not.toContain('one-client');
      expect(text).not.toContain(token);
    } finally {
      server.close();
      await kos.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
