/**
 * The server child of `bench/middleware.bench.ts`: one framework, with or without KOS, serving
 * `GET /records/:id` on 127.0.0.1 (a random port).
 *
 *   node --conditions=kos-source --import tsx bench/support/middleware-server.ts --framework express --mode kos
 *
 * `--mode bare`: the route answers `{ id, data: <plaintext 1 KiB record> }`; no middleware.
 * `--mode kos`: KOS in front (the same wiring as the adapters' docs: `app.use(kosMiddleware)`),
 * and the route answers `{ id, data: <sealed envelope, JSON form> }`, sealed once at start-up.
 * `--mode floor` / `--mode floor-low`: the same sealed route behind a reference middleware of
 * `floor-middleware.ts` (KOS's high- or low-tier bytes, no checks; the DEK is read once at
 * start-up).
 * The identity issuer's public JWK comes in the env var `KOS_BENCH_IDENTITY_JWK`.
 *
 * Protocol: prints `listening <port>` on stdout when ready. Each `cpu` line on stdin is
 * answered with `cpu <user µs> <system µs> <requests seen>`. Exits when stdin closes or on
 * SIGTERM/SIGINT (a normal exit, so `--cpu-prof` profiles are written).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createInterface } from 'node:readline';
import { getRequestListener } from '@hono/node-server';
import { decodeEnvelope, encodeHeader, toBase64url } from '@kos/core';
import { kosMiddleware as expressKos } from '@kos/express';
import { kosMiddleware as honoKos } from '@kos/hono';
import type { KosRuntime } from '@kos/kms-adapters';
import { kosMiddleware as koaKos } from '@kos/koa';
import express from 'express';
import { Hono } from 'hono';
import type { JWK } from 'jose';
import Koa from 'koa';
import { expressFloor, highAnswer, honoFloor, koaFloor, lowAnswer, type ReferenceAnswer } from './floor-middleware.js';
import {
  benchRecord,
  buildBenchRuntime,
  FRAMEWORKS,
  type Framework,
  IDENTITY_ENV,
  KID,
  RECORD_ID,
  type ServerMode,
} from './middleware-fixture.js';

type Listener = (req: IncomingMessage, res: ServerResponse) => void;

function option(name: string): string | undefined {
  const argv = process.argv;
  const at = argv.indexOf(name);
  return at === -1 ? undefined : argv[at + 1];
}

/** What sits in front of the route: nothing, KOS, or a reference middleware (what it answers). */
type Front =
  | { readonly kind: 'none' }
  | { readonly kind: 'kos'; readonly runtime: KosRuntime }
  | { readonly kind: 'floor'; readonly answer: ReferenceAnswer };

/** The same route in each framework, behind `front`. */
function buildListener(framework: Framework, rows: Map<string, unknown>, front: Front): Listener {
  const notFound = { error: 'not found' };
  if (framework === 'express') {
    const app = express();
    if (front.kind === 'kos') app.use(expressKos({ runtime: front.runtime }));
    if (front.kind === 'floor') app.use(expressFloor(front.answer) as unknown as express.RequestHandler);
    app.get('/records/:id', (req, res) => {
      const row = rows.get(req.params.id as string);
      if (row === undefined) res.status(404).json(notFound);
      else res.json(row);
    });
    return app as unknown as Listener;
  }
  if (framework === 'hono') {
    const app = new Hono();
    if (front.kind === 'kos') app.use(honoKos({ runtime: front.runtime }));
    if (front.kind === 'floor') app.use(honoFloor(front.answer));
    app.get('/records/:id', (c) => {
      const row = rows.get(c.req.param('id'));
      return row === undefined ? c.json(notFound, 404) : c.json(row as object);
    });
    return getRequestListener(app.fetch) as unknown as Listener;
  }
  const app = new Koa();
  if (front.kind === 'kos') app.use(koaKos({ runtime: front.runtime }));
  if (front.kind === 'floor') app.use(koaFloor(front.answer));
  app.use(async (ctx, next) => {
    if (ctx.method !== 'GET' || !ctx.path.startsWith('/records/')) return next();
    const row = rows.get(decodeURIComponent(ctx.path.slice('/records/'.length)));
    if (row === undefined) {
      ctx.status = 404;
      ctx.body = notFound;
    } else ctx.body = row;
  });
  return app.callback() as unknown as Listener;
}

async function main(): Promise<void> {
  const framework = option('--framework') as Framework;
  const mode = option('--mode') as ServerMode;
  if (!FRAMEWORKS.includes(framework)) throw new Error(`--framework must be one of ${FRAMEWORKS.join(', ')}`);
  if (mode !== 'bare' && mode !== 'kos' && mode !== 'floor' && mode !== 'floor-low') {
    throw new Error('--mode must be bare, kos, floor or floor-low');
  }

  const record = benchRecord();
  let runtime: KosRuntime | undefined;
  let front: Front = { kind: 'none' };
  const rows = new Map<string, unknown>();
  if (mode !== 'bare') {
    const identityJwk = process.env[IDENTITY_ENV];
    if (!identityJwk) throw new Error(`${IDENTITY_ENV} is not set`);
    runtime = await buildBenchRuntime(JSON.parse(identityJwk) as JWK);
    const sealed = await runtime.kos.seal(KID, record, { dataId: RECORD_ID });
    rows.set(RECORD_ID, { id: RECORD_ID, data: sealed });
    if (mode === 'kos') front = { kind: 'kos', runtime };
    else {
      const dek = await runtime.kos.keys.getDek(KID, sealed.ver);
      front = {
        kind: 'floor',
        answer:
          mode === 'floor' ? highAnswer(toBase64url(dek)) : lowAnswer(dek, encodeHeader(decodeEnvelope(sealed).header)),
      };
      if (mode === 'floor') dek.fill(0);
    }
  } else {
    rows.set(RECORD_ID, { id: RECORD_ID, data: record });
  }

  let requests = 0;
  const server = createServer(buildListener(framework, rows, front));
  server.on('request', () => {
    requests++;
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;

  let closing = false;
  const shutdown = () => {
    if (closing) return;
    closing = true;
    server.closeAllConnections();
    server.close(() => {
      void (runtime?.close() ?? Promise.resolve()).finally(() => process.exit(0));
    });
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() !== 'cpu') return;
    const usage = process.cpuUsage();
    process.stdout.write(`cpu ${usage.user} ${usage.system} ${requests}\n`);
  });
  lines.on('close', shutdown);
  process.stdout.write(`listening ${port}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`middleware-server: ${error instanceof Error ? (error.stack ?? error.message) : error}\n`);
  process.exit(1);
});
