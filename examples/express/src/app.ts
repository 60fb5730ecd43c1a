import { randomUUID } from 'node:crypto';
import { browserAssets, type RecordStore, recordStoreFailure, startWithRecords } from '@kos/example-shared';
import { type KosMiddlewareOptions, kosMiddleware } from '@kos/express';
import express from 'express';

export interface ExampleAppOptions extends KosMiddlewareOptions {
  /**
   * Where the sealed records live. Default: from the environment (`options.env`, else
   * `process.env`): Redis when KOS_EXAMPLE_RECORDS_REDIS_URL is set, else this process's
   * memory. The store made here is returned as `records`; close it after `kos`.
   */
  readonly records?: RecordStore;
}

/**
 * The records API, protected by KOS. Routes keep storing and returning sealed envelopes; the
 * middleware turns each response into the caller's tier. Identical routes in examples/hono
 * and examples/koa.
 */
export async function createApp(options: ExampleAppOptions = {}) {
  const { records: given, ...kosOptions } = options;
  const { kos, runtime, records } = await startWithRecords(given, options.env ?? process.env, () =>
    kosMiddleware(kosOptions),
  );
  const app = express();
  app.disable('x-powered-by');

  // Public routes, before KOS.
  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  // Prometheus scrape target (counters, share fetch latency per node, key ages: no secrets,
  // no client ids). Public here like /health; in production expose it to the scraper only.
  app.get('/metrics', async (_req, res) => {
    if (!runtime.metricsText) {
      res.status(404).json({ error: { code: 'ERR_ROUTE_NOT_FOUND', message: 'metrics are not enabled' } });
      return;
    }
    res.set('content-type', runtime.metricsContentType ?? 'text/plain; version=0.0.4; charset=utf-8');
    res.send(await runtime.metricsText());
  });
  app.get('/', async (_req, res) => {
    res.type('html').send((await browserAssets()).html);
  });
  app.get('/app.js', async (_req, res) => {
    res.type('js').send((await browserAssets()).script);
  });
  if (runtime.mintDevToken) {
    // Development only (embedded default): hands out identity tokens for any score. A
    // configured deployment has no such route: tokens come from your identity provider.
    const mint = runtime.mintDevToken;
    app.post('/dev/token', express.json({ limit: '4kb' }), async (req, res) => {
      const { clientId, score, publicJwk } = req.body ?? {};
      try {
        res.json({ token: await mint({ clientId, score, publicJwk }) });
      } catch {
        res
          .status(400)
          .json({ error: { code: 'ERR_INVALID_ARGUMENT', message: 'clientId and a numeric score are required' } });
      }
    });
  }

  // Everything below is protected.
  app.use(kos);
  app.use(express.json({ limit: '64kb' }));
  app.post('/records', async (req, res) => {
    const id = randomUUID();
    const data = await kos.seal('records', req.body, { dataId: id });
    try {
      await records.put(id, data);
    } catch (error) {
      const failure = recordStoreFailure(error);
      res.status(failure.status).json(failure.body);
      return;
    }
    res.status(201).json({ id });
  });
  app.get('/records', async (_req, res) => {
    try {
      res.json(await records.list());
    } catch (error) {
      const failure = recordStoreFailure(error);
      res.status(failure.status).json(failure.body);
    }
  });
  app.get('/records/:id', async (req, res) => {
    try {
      const record = await records.get(req.params.id);
      if (record) res.json(record);
      else res.status(404).json({ error: { code: 'ERR_NOT_FOUND', message: 'no such record' } });
    } catch (error) {
      const failure = recordStoreFailure(error);
      res.status(failure.status).json(failure.body);
    }
  });
  return { app, kos, runtime, records };
}
