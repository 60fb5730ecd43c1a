import type { IncomingMessage, ServerResponse } from 'node:http';
import { getRequestListener } from '@hono/node-server';
import { kosMiddleware as expressKos } from '@kos/express';
import { kosMiddleware as honoKos, type KosVariables } from '@kos/hono';
import type { KosRuntime } from '@kos/kms-adapters';
import { kosMiddleware as koaKos } from '@kos/koa';
import express from 'express';
import { Hono } from 'hono';
import Koa from 'koa';

export type Framework = 'express' | 'hono' | 'koa';
export const FRAMEWORKS: readonly Framework[] = ['express', 'hono', 'koa'];

/** What a test route answers: a JSON value, or bytes with a content type. */
export type RouteResult = ({ json: unknown } | { bytes: Uint8Array; type: string }) & {
  status?: number;
  headers?: Record<string, string>;
  /** Set-Cookie values, each sent as its own header. */
  cookies?: string[];
};

/** A route the same in every framework: path (with `:id`), handler given params, query and JSON body. */
export interface TestRoute {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly handle: (input: {
    params: Record<string, string>;
    body: unknown;
    decision: unknown;
    seal: (kid: string, value: unknown, options: { dataId: string }) => Promise<unknown>;
  }) => Promise<RouteResult> | RouteResult;
}

export type NodeListener = (req: IncomingMessage, res: ServerResponse) => void;

/** Builds the same app in Express, Hono or Koa, with KOS in front of `routes`. */
export function buildApp(framework: Framework, runtime: KosRuntime, routes: readonly TestRoute[]): NodeListener {
  if (framework === 'express') {
    const kos = expressKos({ runtime });
    const app = express();
    app.use(kos);
    app.use(express.json());
    for (const route of routes) {
      const register = route.method === 'GET' ? app.get.bind(app) : app.post.bind(app);
      register(route.path, async (req, res) => {
        const result = await route.handle({
          params: req.params as Record<string, string>,
          body: req.body,
          decision: res.locals.kos,
          seal: kos.seal,
        });
        res.status(result.status ?? 200);
        if (result.headers) res.set(result.headers);
        for (const cookie of result.cookies ?? []) res.append('set-cookie', cookie);
        if ('json' in result) res.json(result.json);
        else res.type(result.type).send(Buffer.from(result.bytes));
      });
    }
    return app as unknown as NodeListener;
  }
  if (framework === 'hono') {
    const kos = honoKos({ runtime });
    const app = new Hono<{ Variables: KosVariables }>();
    app.use(kos);
    for (const route of routes) {
      const register = route.method === 'GET' ? app.get.bind(app) : app.post.bind(app);
      register(route.path, async (c) => {
        const body = route.method === 'POST' ? await c.req.json().catch(() => undefined) : undefined;
        const result = await route.handle({
          params: c.req.param() as Record<string, string>,
          body,
          decision: c.get('kos'),
          seal: kos.seal,
        });
        for (const [name, value] of Object.entries(result.headers ?? {})) c.header(name, value);
        for (const cookie of result.cookies ?? []) c.header('set-cookie', cookie, { append: true });
        if ('json' in result) return c.json(result.json as object, (result.status ?? 200) as 200);
        return c.body(result.bytes as Uint8Array<ArrayBuffer>, (result.status ?? 200) as 200, {
          'content-type': result.type,
        });
      });
    }
    return getRequestListener(app.fetch) as unknown as NodeListener;
  }
  const kos = koaKos({ runtime });
  const app = new Koa();
  app.use(kos);
  app.use(async (ctx, next) => {
    for (const route of routes) {
      if (ctx.method !== route.method) continue;
      const names = [...route.path.matchAll(/:(\w+)/g)].map((m) => m[1] as string);
      const pattern = new RegExp(`^${route.path.replace(/:(\w+)/g, '([^/]+)')}$`);
      const match = pattern.exec(ctx.path);
      if (!match) continue;
      const params = Object.fromEntries(names.map((name, i) => [name, decodeURIComponent(match[i + 1] as string)]));
      let body: unknown;
      if (ctx.method === 'POST') {
        const chunks: Buffer[] = [];
        for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
        body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
      }
      const result = await route.handle({ params, body, decision: ctx.state.kos, seal: kos.seal });
      ctx.status = result.status ?? 200;
      if (result.headers) ctx.set(result.headers);
      for (const cookie of result.cookies ?? []) ctx.append('set-cookie', cookie);
      if ('json' in result) ctx.body = result.json;
      else {
        ctx.type = result.type;
        ctx.body = Buffer.from(result.bytes);
      }
      return;
    }
    await next();
  });
  return app.callback() as unknown as NodeListener;
}
