import { AsyncLocalStorage } from 'node:async_hooks';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTracing, tracingAvailable } from '@kos/core';
import { createApp } from '@kos/example-express';
import { type Context, type ContextManager, context, ROOT_CONTEXT, SpanStatusCode, trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** The smallest AsyncLocalStorage context manager, so spans nest across awaits. */
class AsyncContextManager implements ContextManager {
  readonly #storage = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.#storage.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.#storage.run(ctx, () => fn.apply(thisArg, args));
  }
  bind<T>(_ctx: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.#storage.disable();
    return this;
  }
}

/**
 * OpenTelemetry spans through @opentelemetry/api (present here as a dev dependency), recorded
 * with the SDK's in-memory exporter while the Express example serves real requests.
 */
describe('OpenTelemetry spans', () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  let dir: string;
  let base: string;
  let stop: () => Promise<void>;
  let runtime: Awaited<ReturnType<typeof createApp>>['runtime'];
  let id: string;
  const secrets: string[] = [];

  const spans = (name: string): ReadableSpan[] => exporter.getFinishedSpans().filter((span) => span.name === name);
  const mint = async (clientId: string, score: number) => {
    const token = await (runtime.mintDevToken as NonNullable<typeof runtime.mintDevToken>)({ clientId, score });
    secrets.push(token, clientId);
    return token;
  };
  const read = async (clientId: string, score: number) =>
    fetch(`${base}/records/${id}`, { headers: { authorization: `Bearer ${await mint(clientId, score)}` } });

  beforeAll(async () => {
    context.setGlobalContextManager(new AsyncContextManager());
    trace.setGlobalTracerProvider(provider);
    expect(await loadTracing()).toBe(true);
    dir = await mkdtemp(join(tmpdir(), 'kos-tracing-'));
    const started = await createApp({ dir, env: {} });
    runtime = started.runtime;
    const server = started.app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    stop = async () => {
      server.close();
      await started.kos.close();
    };
    const created = await fetch(`${base}/records`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await mint('span-writer-41', 90)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ diagnosis: 'tracing-plaintext-marker' }),
    });
    expect(created.status).toBe(201);
    ({ id } = (await created.json()) as { id: string });
  });

  afterAll(async () => {
    await stop?.();
    if (dir) await rm(dir, { recursive: true, force: true });
    trace.disable();
    context.disable();
  });

  it('finds the API and creates spans', () => {
    expect(tracingAvailable()).toBe(true);
    // Creating the key on the first seal was a rotation to version 1.
    expect(spans('kos.rotate').map((span) => span.attributes)).toContainEqual(
      expect.objectContaining({ 'kos.kid': 'records', 'kos.rotation.reason': 'create', 'kos.key.version': 1 }),
    );
  });

  it('a span per delivery with tier and key ids, and a child span per DEK rebuild with node counts', async () => {
    exporter.reset();
    runtime.kos.keys.clearCache();
    const response = await read('span-reader-low', 30);
    expect(response.status).toBe(200);
    const [deliver] = spans('kos.deliver');
    expect(deliver?.attributes).toMatchObject({ 'kos.tier': 'low', 'kos.kids': ['records'], 'kos.envelopes': 1 });
    expect(deliver?.status.code).not.toBe(SpanStatusCode.ERROR);
    const [rebuild] = spans('kos.rebuild');
    expect(rebuild?.attributes).toMatchObject({
      'kos.kid': 'records',
      'kos.key.version': 1,
      'kos.share_set.owner': 'system',
      'kos.share_set.n': 5,
      'kos.share_set.k': 3,
      'kos.nodes.answered': 3,
      'kos.nodes.failed': 0,
    });
    expect(rebuild?.parentSpanContext?.spanId).toBe(deliver?.spanContext().spanId);
    expect(spans('kos.deliver')).toHaveLength(1);

    exporter.reset();
    expect((await read('span-reader-medium', 70)).status).toBe(200);
    expect(spans('kos.deliver')[0]?.attributes).toMatchObject({
      'kos.tier': 'medium',
      'kos.share_set.n': 5,
      'kos.share_set.k': 3,
    });
    expect(spans('kos.rebuild')).toHaveLength(0); // the DEK came from the cache
  });

  it('a span per rotation with key id, new version and node count', async () => {
    exporter.reset();
    await runtime.kos.keys.rotate('records');
    const [rotate] = spans('kos.rotate');
    expect(rotate?.attributes).toEqual({
      'kos.kid': 'records',
      'kos.rotation.reason': 'manual',
      'kos.share_set.n': 5,
      'kos.key.version': 2,
    });
    expect(rotate?.status.code).not.toBe(SpanStatusCode.ERROR);
  });

  it('marks a failed delivery with its error code only', async () => {
    await runtime.kos.keys.setMinDecryptVersion('records', 2);
    exporter.reset();
    const response = await read('span-reader-retired', 90);
    expect(response.status).toBe(410);
    const [deliver] = spans('kos.deliver');
    expect(deliver?.status).toEqual({ code: SpanStatusCode.ERROR, message: 'ERR_KEY_VERSION_RETIRED' });
    expect(deliver?.attributes['kos.error.code']).toBe('ERR_KEY_VERSION_RETIRED');
    expect(deliver?.events).toEqual([]); // no exception event carrying messages or stacks
  });

  it('puts no client id, token or data in any span', async () => {
    exporter.reset();
    runtime.kos.keys.clearCache();
    await runtime.kos.keys.setMinDecryptVersion('records', 1);
    expect((await read('span-reader-high', 95)).status).toBe(200);
    const all = exporter.getFinishedSpans();
    expect(all.length).toBeGreaterThanOrEqual(2);
    const text = JSON.stringify(all.map((span) => [span.name, span.attributes, span.status, span.events]));
    expect(secrets.length).toBeGreaterThan(8);
    for (const secret of [...secrets, 'tracing-plaintext-marker']) expect(text).not.toContain(secret);
  });
});
