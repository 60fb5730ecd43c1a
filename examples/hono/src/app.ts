import { randomUUID } from 'node:crypto';
import { browserAssets, type RecordStore, recordStoreFailure, startWithRecords } from '@kos/example-shared';
import { type KosMiddlewareOptions, type KosVariables, kosMiddleware } from '@kos/hono';
import { type Context, Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';

export interface ExampleAppOptions extends KosMiddlewareOptions {
  /** Where the sealed records live (default: from the environment, as in examples/express). */
  readonly records?: RecordStore;
}

/** The records API, protected by KOS (same routes as examples/express and examples/koa). */
export async function createApp(options: ExampleAppOptions = {}) {
  const { records: given, ...kosOptions } = options;
  const { kos, runtime, records } = await startWithRecords(given, options.env ?? process.env, () =>
    kosMiddleware(kosOptions),
  );
  const app = new Hono<{ Variables: KosVariables }>();

  // Public routes, before KOS.
  app.get('/health', (c) => c.json({ status: 'ok' }));
  // Prometheus scrape target (no secrets, no client ids); in production expose it to the scraper only.
  app.get('/metrics', async (c) => {
    if (!runtime.metricsText) {
      return c.json({ error: { code: 'ERR_ROUTE_NOT_FOUND', message: 'metrics are not enabled' } }, 404);
    }
    return c.body(await runtime.metricsText(), 200, {
      'content-type': runtime.metricsContentType ?? 'text/plain; version=0.0.4; charset=utf-8',
    });
  });
  app.get('/', async (c) => c.html((await browserAssets()).html));
  app.get('/app.js', async (c) => c.body((await browserAssets()).script, 200, { 'content-type': 'text/javascript' }));
  if (runtime.mintDevToken) {
    // Development only (embedded default); a configured deployment has no such route.
    const mint = runtime.mintDevToken;
    app.post('/dev/token', async (c) => {
      const { clientId, score, publicJwk } = (await c.req.json().catch(() => ({}))) as Parameters<typeof mint>[0];
      try {
        return c.json({ token: await mint({ clientId, score, publicJwk }) });
      } catch {
        return c.json(
          { error: { code: 'ERR_INVALID_ARGUMENT', message: 'clientId and a numeric score are required' } },
          400,
        );
      }
    });
  }

  // Everything below is protected.
  const api = new Hono<{ Variables: KosVariables }>();
  api.use(kos);
  const storeFailure = (c: Context, error: unknown) => {
    const failure = recordStoreFailure(error);
    return c.json(failure.body, failure.status as ContentfulStatusCode);
  };
  api.post('/records', async (c) => {
    const id = randomUUID();
    const data = await kos.seal('records', await c.req.json(), { dataId: id });
    try {
      await records.put(id, data);
    } catch (error) {
      return storeFailure(c, error);
    }
    return c.json({ id }, 201);
  });
  api.get('/records', async (c) => {
    try {
      return c.json(await records.list());
    } catch (error) {
      return storeFailure(c, error);
    }
  });
  api.get('/records/:id', async (c) => {
    try {
      const record = await records.get(c.req.param('id'));
      return record ? c.json(record) : c.json({ error: { code: 'ERR_NOT_FOUND', message: 'no such record' } }, 404);
    } catch (error) {
      return storeFailure(c, error);
    }
  });
  app.route('/', api);
  return { app, kos, runtime, records };
}
