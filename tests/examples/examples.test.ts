import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { serve } from '@hono/node-server';
import { createOpener, generateClientKeyPair } from '@kos/core/client';
import { createApp as createExpressApp } from '@kos/example-express';
import { createApp as createHonoApp } from '@kos/example-hono';
import { createApp as createKoaApp } from '@kos/example-koa';
import { kosMiddleware } from '@kos/express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const run = promisify(execFile);

interface Running {
  base: string;
  mint: (request: { clientId: string; score: number; publicJwk?: JsonWebKey }) => Promise<string>;
  stop(): Promise<void>;
}

async function listen(server: Server): Promise<string> {
  if (!server.listening) await new Promise((r) => server.once('listening', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function closeBoth(server: Server, kos: { close(): Promise<void> }): Promise<void> {
  server.close();
  await kos.close();
}

const starters: Record<string, (dir: string) => Promise<Running>> = {
  express: async (dir) => {
    const { app, kos, runtime } = await createExpressApp({ dir, env: {} });
    const server = app.listen(0, '127.0.0.1');
    return {
      base: await listen(server),
      mint: runtime.mintDevToken as never,
      stop: () => closeBoth(server, kos),
    };
  },
  hono: async (dir) => {
    const { app, kos, runtime } = await createHonoApp({ dir, env: {} });
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as unknown as Server;
    return {
      base: await listen(server),
      mint: runtime.mintDevToken as never,
      stop: () => closeBoth(server, kos),
    };
  },
  koa: async (dir) => {
    const { app, kos, runtime } = await createKoaApp({ dir, env: {} });
    const server = app.listen(0, '127.0.0.1');
    return {
      base: await listen(server),
      mint: runtime.mintDevToken as never,
      stop: () => closeBoth(server, kos),
    };
  },
};

/**
 * The example apps on the embedded default: with no configuration, one process serves the
 * API and five file-backed KMS nodes from a fresh `.kos/` folder, and all three tiers —
 * medium included, through the mounted nodes — work end to end.
 */
describe.each(Object.keys(starters))('the %s example on the embedded default', (framework) => {
  let dir: string;
  let app: Running;
  const record = { patient: 'Ada', diagnosis: 'flu' };
  let id: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), `kos-example-${framework}-`));
    app = await (starters[framework] as (dir: string) => Promise<Running>)(dir);
    const created = await fetch(`${app.base}/records`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await app.mint({ clientId: 'writer', score: 90 })}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify(record),
    });
    expect(created.status).toBe(201);
    ({ id } = (await created.json()) as { id: string });
  });

  afterAll(async () => {
    await app?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('creates .kos/ with dev keys (0600), metadata and five file-backed nodes', async () => {
    expect((await readdir(join(dir, 'nodes'))).sort()).toEqual(['node-1', 'node-2', 'node-3', 'node-4', 'node-5']);
    for (const file of ['kos-signing.jwk.json', 'dev-identity.jwk.json']) {
      expect((await stat(join(dir, 'keys', file))).mode & 0o777).toBe(0o600);
    }
  });

  it.each([
    ['low', 30, false],
    ['medium', 65, false],
    ['medium', 75, true],
    ['high', 90, false],
    ['high', 95, true],
  ] as const)(
    'delivers %s tier (score %d, client key: %s) and the client ends with the plaintext',
    async (tier, score, withKey) => {
      const key = withKey ? await generateClientKeyPair() : undefined;
      const token = await app.mint({ clientId: `c-${score}`, score, ...(key ? { publicJwk: key.publicJwk } : {}) });
      const response = await fetch(`${app.base}/records/${id}`, { headers: { authorization: `Bearer ${token}` } });
      expect(response.status).toBe(200);
      expect(response.headers.get('kos-tier')).toBe(tier);
      const body = (await response.json()) as { data: Record<string, unknown> };
      if (tier === 'low') {
        expect(body.data).toEqual(record);
        return;
      }
      expect(JSON.stringify(body)).not.toContain('flu');
      expect(body.data.kosTier).toBe(tier);
      if (withKey && tier === 'high') expect(body.data.dekJwe).toBeTypeOf('string');
      if (withKey && tier === 'medium') expect((body.data.key as { dpop: boolean }).dpop).toBe(true);
      const opener = createOpener(key ? { clientKey: key } : {});
      expect(((await opener.openBody(body)) as { data: unknown }).data).toEqual(record);
      opener.dispose();
    },
  );

  it('keeps /health public and refuses the protected routes without a token', async () => {
    expect((await fetch(`${app.base}/health`)).status).toBe(200);
    const refused = await fetch(`${app.base}/records`);
    expect(refused.status).toBe(401);
    expect(await refused.json()).toEqual({ error: { code: 'ERR_UNAUTHENTICATED', message: expect.any(String) } });
  });
});

describe('production mode', () => {
  it('refuses the zero-configuration default and lists what to configure', () => {
    let error: unknown;
    try {
      kosMiddleware({ env: { NODE_ENV: 'production' } });
    } catch (caught) {
      error = caught;
    }
    expect(error).toMatchObject({ code: 'ERR_INVALID_OPTIONS' });
    const message = (error as Error).message;
    for (const what of ['issuer', 'signingKey', 'identity', 'metadata', 'nodes']) expect(message).toContain(what);
  });
});

describe('the commands a newcomer runs', () => {
  it('`npm start` serves the Express example and prints how to try each tier', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kos-start-'));
    const child = spawn(
      process.execPath,
      ['--conditions=kos-source', '--import', 'tsx', join(root, 'examples/express/src/server.ts')],
      {
        cwd: root,
        env: { ...process.env, PORT: '0', NODE_ENV: 'development', KOS_DIR: join(dir, '.kos') },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    try {
      const output = await new Promise<string>((resolveOutput, reject) => {
        let text = '';
        const timer = setTimeout(() => reject(new Error(`no instructions: ${text}`)), 30_000);
        child.stdout.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          if (text.includes('Stop with Ctrl-C')) {
            clearTimeout(timer);
            resolveOutput(text);
          }
        });
      });
      for (const tier of ['low (<50)', 'medium (50-80)', 'high (>80)']) expect(output).toContain(tier);
      expect(output).toContain('npm run -s token -- --client alice --score 90');
      expect((await stat(join(dir, '.kos', 'keys', 'kos-signing.jwk.json'))).isFile()).toBe(true);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('`npm run demo` shows all three tiers and exits 0', async () => {
    const { stdout } = await run('npm', ['run', '-s', 'demo'], { cwd: root, timeout: 90_000 });
    expect(stdout).toContain('kos-tier: low');
    expect(stdout).toContain('kos-tier: medium');
    expect(stdout).toContain('kos-tier: high');
    expect(stdout).toContain('All tiers worked.');
    expect(stdout).not.toMatch(/"dek":"|eyJ[A-Za-z0-9_-]{20,}/);
  });

  it('`npm run token` mints a token the embedded default accepts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kos-token-'));
    try {
      const { stdout } = await run(
        'npm',
        ['run', '-s', 'token', '--', '--client', 'alice', '--score', '65', '--dir', dir],
        { cwd: root },
      );
      const token = stdout.trim();
      expect(token.split('.')).toHaveLength(3);
      const { app, kos } = await createExpressApp({ dir, env: {} });
      const server = app.listen(0, '127.0.0.1');
      const base = await listen(server);
      const response = await fetch(`${base}/records`, { headers: { authorization: `Bearer ${token}` } });
      expect(response.headers.get('kos-tier')).toBe('medium');
      server.close();
      await kos.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
