// The Hono example on the embedded default (./.kos).
import { serve } from '@hono/node-server';
import { printInstructions, stopOnSignals } from '@kos/example-shared';
import { createApp } from './app.js';

const port = Number(process.env.PORT ?? 3000);
const { app, kos, runtime, records } = await createApp();
const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' }, (info) =>
  printInstructions('Hono', `http://127.0.0.1:${info.port}`, runtime.mode, records.description),
);
stopOnSignals(server, kos, records);
