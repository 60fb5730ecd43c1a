import { randomUUID } from 'node:crypto';
import { browserAssets } from '@kos/example-shared';
import { type KosMiddlewareOptions, type KosVariables, kosMiddleware } from '@kos/hono';
import { Hono } from 'hono';

/** The records API, protected by KOS (same routes as examples/express and examples/koa). */
export async function createApp(options: KosMiddlewareOptions = {}) {
  const kos = kosMiddleware(options);
  const runtime = await kos.ready;
  const records = new Map<string, { id: string; data: unknown }>();
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
  api.post('/records', async (c) => {
    const id = randomUUID();
    records.set(id, { id, data: await kos.seal('records', await c.req.json(), { dataId: id }) });
    return c.json({ id }, 201);
  });
  api.get('/records', (c) => c.json([...records.values()]));
  api.get('/records/:id', (c) => {
    const record = records.get(c.req.param('id'));
    return record ? c.json(record) : c.json({ error: { code: 'ERR_NOT_FOUND', message: 'no such record' } }, 404);
  });
  app.route('/', api);
  return { app, kos, runtime };
}
