import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { decodeEnvelope, utf8 } from '@kos/core';
import { createKosRuntime, loadKosConfigFile } from '@kos/kms-adapters';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  findRedisServerBinary,
  REDIS_SKIP_WARNING,
  type RedisServer,
  startRedisServer,
} from '../../test-support/redis-server.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const execute = promisify(execFile);
const NODE_ARGS = ['--conditions=kos-source', '--import', 'tsx'];
const KOS = join(root, 'packages/kms-adapters/src/cli/kos.ts');

const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
const describeRedis = haveRedis ? describe : describe.skip;

/**
 * The `kos` command end to end, against a running KOS (the Express example as its own process)
 * on Redis: init, token, clients grant, status, rotate, rewrap (with progress and a resume after
 * a kill), keys retire / reinstate, revoke, audit verify.
 */
describeRedis('the kos command against a running deployment', () => {
  let dir: string;
  let redis: RedisServer;
  let server: ChildProcess;
  let base: string;
  let config: string;

  const kos = async (...args: string[]) => {
    try {
      const { stdout, stderr } = await execute(
        process.execPath,
        [...NODE_ARGS, KOS, '--config', config, '--dir', join(dir, '.kos'), ...args],
        {
          cwd: root,
          timeout: 120_000,
        },
      );
      return { code: 0, stdout, stderr };
    } catch (error) {
      const failed = error as { code: number; stdout: string; stderr: string };
      return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
    }
  };
  const token = async (client: string, score: number) =>
    (await kos('token', '--client', client, '--score', String(score))).stdout.trim();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-cli-'));
    redis = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
    config = join(dir, '.kos', 'kos.config.json');
    const init = await execute(
      process.execPath,
      [...NODE_ARGS, KOS, '--dir', join(dir, '.kos'), 'init', '--store', 'redis', '--redis-url', redis.url],
      { cwd: root },
    );
    expect(init.stdout).toContain('KOS initialised');
    // Production keys are created by the operator, not on first use.
    const created = await execute(
      process.execPath,
      [...NODE_ARGS, KOS, '--config', config, 'rotate', '--create', 'records'],
      { cwd: root },
    );
    expect(created.stdout).toContain('created 1');
    server = spawn(process.execPath, [...NODE_ARGS, join(root, 'examples/express/src/server.ts')], {
      cwd: root,
      env: { ...process.env, PORT: '0', KOS_CONFIG: config, NODE_ENV: 'production' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    base = await new Promise<string>((resolveBase, reject) => {
      let text = '';
      const timer = setTimeout(() => reject(new Error(`server did not start: ${text}`)), 30_000);
      server.stdout?.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(text);
        if (match) {
          clearTimeout(timer);
          resolveBase(match[1] as string);
        }
      });
      server.stderr?.on('data', (chunk: Buffer) => {
        text += chunk.toString();
      });
    });
  }, 90_000);

  afterAll(async () => {
    if (server && server.exitCode === null) {
      server.kill('SIGTERM');
      await new Promise((r) => server.once('exit', r));
    }
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('init made a production configuration the server runs on (NODE_ENV=production), with default-deny access', async () => {
    const response = await fetch(`${base}/records`, {
      headers: { authorization: `Bearer ${await token('alice', 90)}` },
    });
    expect(response.status).toBe(200);
    const write = await fetch(`${base}/records`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await token('alice', 90)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ n: 1 }),
    });
    // Sealing works; reading the sealed record needs a grant (default deny).
    expect(write.status).toBe(201);
    const list = await fetch(`${base}/records`, { headers: { authorization: `Bearer ${await token('alice', 30)}` } });
    expect((await list.json()) as unknown).toMatchObject({ error: { code: 'ERR_ACCESS_DENIED' } });
  });

  it('clients grant / list, then status shows the key, versions, healthy nodes and Redis persistence', async () => {
    expect((await kos('clients', 'grant', 'alice', 'records')).code).toBe(0);
    const listed = JSON.parse((await kos('--json', 'clients', 'list')).stdout);
    expect(listed.clients).toEqual([{ clientId: 'alice', allow: ['records'], deny: [] }]);
    const low = await fetch(`${base}/records`, { headers: { authorization: `Bearer ${await token('alice', 30)}` } });
    expect(await low.json()).toEqual([expect.objectContaining({ data: { n: 1 } })]);
    const status = await kos('--json', 'status');
    expect(status.code).toBe(0);
    const parsed = JSON.parse(status.stdout);
    expect(parsed.keys).toEqual([expect.objectContaining({ kid: 'records', primary: 1 })]);
    expect(parsed.nodes).toHaveLength(5);
    expect(parsed.nodes.every((node: { healthy: boolean }) => node.healthy)).toBe(true);
    expect(parsed.redisPersistence.state).toBe('on');
  });

  it('rotate, then rewrap a stream of sealed records with progress output, resuming after a kill', {
    timeout: 180_000,
  }, async () => {
    // The "database": sealed records, as the app stores them.
    const runtime = await createKosRuntime({ config: loadKosConfigFile(config), env: {} });
    const input = join(dir, 'records.jsonl');
    const lines: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const envelope = await runtime.kos.seal('records', { i, text: 'x'.repeat(200) }, { dataId: `r${i}` });
      lines.push(JSON.stringify({ id: `r${i}`, data: envelope }));
    }
    await writeFile(input, `${lines.join('\n')}\n`);
    await runtime.close();

    const rotated = await kos('rotate', 'records');
    expect(rotated.code).toBe(0);
    expect(JSON.parse((await kos('--json', 'status')).stdout).keys[0].primary).toBe(2);

    // Start a rewrap and kill it after its first progress line; then resume.
    const output = join(dir, 'rewrapped.jsonl');
    const first = spawn(
      process.execPath,
      [...NODE_ARGS, KOS, '--config', config, 'rewrap', input, output, '--batch', '100'],
      { cwd: root },
    );
    await new Promise<void>((resolveKill) => {
      first.stderr?.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('rewrap:')) {
          first.kill('SIGKILL');
          resolveKill();
        }
      });
    });
    await new Promise((r) => first.once('exit', r));
    const refused = await kos('rewrap', input, output);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/--resume/);
    const resumed = await kos('rewrap', input, output, '--resume', '--batch', '100');
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toMatch(/rewrap: [\d.]+% \d+ records, \d+ rec\/s, ETA/);
    expect(resumed.stdout).toMatch(/rewrapped \d+ envelope\(s\) in 3000 record\(s\)/);

    const out = (await readFile(output, 'utf8')).trim().split('\n');
    expect(out).toHaveLength(3000);
    const check = await createKosRuntime({ config: loadKosConfigFile(config), env: {} });
    try {
      for (const [index, line] of out.entries()) {
        const record = JSON.parse(line) as { id: string; data: unknown };
        expect(record.id).toBe(`r${index}`);
        const envelope = decodeEnvelope(record.data);
        expect(envelope.header.ver).toBe(2);
        if (index % 97 === 0) {
          const plain = JSON.parse(
            new TextDecoder().decode(await check.kos.keys.open(envelope, { dataId: record.id })),
          );
          expect(plain).toEqual({ i: index, text: 'x'.repeat(200) });
        }
      }
      expect(utf8('ok')).toHaveLength(2);
    } finally {
      await check.close();
    }
  });

  it('keys retire: refuses the primary; retiring v1 makes the running server refuse v1 data within a second, rewrapped data still opens', {
    timeout: 60_000,
  }, async () => {
    const read = async () => {
      const response = await fetch(`${base}/records`, {
        headers: { authorization: `Bearer ${await token('alice', 30)}` },
      });
      return { status: response.status, text: await response.text() };
    };
    // The server's record was sealed under v1 before the rotation.
    expect(JSON.parse((await read()).text)).toEqual([expect.objectContaining({ data: { n: 1 } })]);
    const primary = await kos('keys', 'retire', 'records', '2');
    expect(primary.code).toBe(1);
    expect(primary.stderr).toMatch(/kos: ERR_KEY_VERSION_STATE: records v2 is the primary version/);

    const retired = await kos('--json', 'keys', 'retire', 'records', '1');
    expect(retired.code, retired.stderr).toBe(0);
    expect(JSON.parse(retired.stdout).keys[0]).toMatchObject({ kid: 'records', retired: [1], minDecryptVersion: 2 });
    // The server (another process) sees the retirement within its key-record cache time (1 s).
    await new Promise((r) => setTimeout(r, 1500));
    const refused = await read();
    expect(refused.text).toContain('ERR_KEY_VERSION_RETIRED');
    // The rewrapped records (v2) still open, from a runtime of their own.
    const check = await createKosRuntime({ config: loadKosConfigFile(config), env: {} });
    try {
      const line = (await readFile(join(dir, 'rewrapped.jsonl'), 'utf8')).split('\n')[0] as string;
      const record = JSON.parse(line) as { id: string; data: unknown };
      const opened = await check.kos.keys.open(decodeEnvelope(record.data), { dataId: record.id });
      expect(JSON.parse(new TextDecoder().decode(opened))).toEqual({ i: 0, text: 'x'.repeat(200) });
    } finally {
      await check.close();
    }
    // Undo (the operator changed their mind): the server reads v1 again.
    expect((await kos('keys', 'reinstate', 'records', '1')).code).toBe(0);
    await new Promise((r) => setTimeout(r, 1500));
    expect(JSON.parse((await read()).text)).toEqual([expect.objectContaining({ data: { n: 1 } })]);
  });

  it('revoke cuts the client off at the running server', async () => {
    expect((await kos('clients', 'revoke', 'alice')).code).toBe(0);
    const after = await fetch(`${base}/records`, { headers: { authorization: `Bearer ${await token('alice', 30)}` } });
    expect(after.status).toBe(403);
  });

  it('audit verify passes on the audit files, and fails on a tampered one', { timeout: 120_000 }, async () => {
    const auditDir = join(dir, '.kos', 'audit');
    const files = (await readdir(auditDir)).filter((name) => name.endsWith('.jsonl'));
    // One file per process: the server's and one per kos invocation that opened the runtime.
    expect(files.length).toBeGreaterThanOrEqual(3);
    const publicKey = join(dir, '.kos', 'keys', 'kos-public.jwks.json');
    const serverFile = files.find((name) => name.endsWith(`-${server.pid}.jsonl`)) as string;
    expect(serverFile).toBeDefined();
    for (const file of [serverFile, files.find((name) => name !== serverFile) as string]) {
      const result = await kos('audit', 'verify', join(auditDir, file), '--public-key', publicKey);
      expect(result.stdout, file).toMatch(/^OK: /);
    }
    const victim = join(auditDir, files.find((name) => name !== serverFile) as string);
    const text = await readFile(victim, 'utf8');
    await writeFile(victim, text.replace('"outcome":"ok"', '"outcome":"denied"'));
    const tampered = await kos('audit', 'verify', victim, '--public-key', publicKey);
    expect(tampered.code).toBe(1);
    expect(tampered.stdout).toMatch(/^TAMPERED: line \d+/);
  });
});
