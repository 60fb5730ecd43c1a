import { randomUUID } from 'node:crypto';
import Router from '@koa/router';
import { browserAssets, type RecordStore, recordStoreFailure, startWithRecords } from '@kos/example-shared';
import { type KosMiddlewareOptions, type KosState, kosMiddleware } from '@kos/koa';
import Koa from 'koa';

async function readJson(ctx: Koa.Context, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) ctx.throw(413, 'body too large');
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    return undefined;
  }
}

export interface ExampleAppOptions extends KosMiddlewareOptions {
  /** Where the sealed records live (default: from the environment, as in examples/express). */
  readonly records?: RecordStore;
}

/** The records API, protected by KOS (same routes as examples/express and examples/hono). */
export async function createApp(options: ExampleAppOptions = {}) {
  const { records: given, ...kosOptions } = options;
  const { kos, runtime, records } = await startWithRecords(given, options.env ?? process.env, () =>
    kosMiddleware(kosOptions),
  );
  const app = new Koa<KosState>();

  // Public routes, before KOS.
  const open = new Router();
  open.get('/health', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  // Prometheus scrape target (no secrets, no client ids); in production expose it to the scraper only.
  open.get('/metrics', async (ctx) => {
    if (!runtime.metricsText) {
      ctx.status = 404;
      ctx.body = { error: { code: 'ERR_ROUTE_NOT_FOUND', message: 'metrics are not enabled' } };
      return;
    }
    const text = await runtime.metricsText();
    ctx.set('content-type', runtime.metricsContentType ?? 'text/plain; version=0.0.4; charset=utf-8');
    ctx.body = text;
  });
  open.get('/', async (ctx) => {
    ctx.type = 'html';
    ctx.body = (await browserAssets()).html;
  });
  open.get('/app.js', async (ctx) => {
    ctx.type = 'js';
    ctx.body = (await browserAssets()).script;
  });
  if (runtime.mintDevToken) {
    // Development only (embedded default); a configured deployment has no such route.
    const mint = runtime.mintDevToken;
    open.post('/dev/token', async (ctx) => {
      const { clientId, score, publicJwk } = ((await readJson(ctx, 4096)) ?? {}) as Parameters<typeof mint>[0];
      try {
        ctx.body = { token: await mint({ clientId, score, publicJwk }) };
      } catch {
        ctx.status = 400;
        ctx.body = { error: { code: 'ERR_INVALID_ARGUMENT', message: 'clientId and a numeric score are required' } };
      }
    });
  }
  app.use(open.routes());

  // Everything below is protected.
  const api = new Router<KosState>();
  const storeFailure = (ctx: Koa.Context, error: unknown) => {
    const failure = recordStoreFailure(error);
    ctx.status = failure.status;
    ctx.body = failure.body;
  };
  api.post('/records', async (ctx) => {
    const id = randomUUID();
    const data = await kos.seal('records', await readJson(ctx, 64 * 1024), { dataId: id });
    try {
      await records.put(id, data);
    } catch (error) {
      storeFailure(ctx, error);
      return;
    }
    ctx.status = 201;
    ctx.body = { id };
  });
  api.get('/records', async (ctx) => {
    try {
      ctx.body = await records.list();
    } catch (error) {
      storeFailure(ctx, error);
    }
  });
  api.get('/records/:id', async (ctx) => {
    try {
      const record = await records.get(ctx.params.id as string);
      if (record) ctx.body = record;
      else {
        ctx.status = 404;
        ctx.body = { error: { code: 'ERR_NOT_FOUND', message: 'no such record' } };
      }
    } catch (error) {
      storeFailure(ctx, error);
    }
  });
  app.use(kos);
  app.use(api.routes());
  return { app, kos, runtime, records };
}
