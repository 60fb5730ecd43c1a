import { execFile } from 'node:child_process';
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createAuditTrail, createCallbackSink, toBase64url } from '@kos/core';
import { createOpener } from '@kos/core/client';
import { createApp } from '@kos/example-express';
import { createHashChainedFileSink, verifyAuditLog } from '@kos/kms-adapters';
import { exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const run = promisify(execFile);

async function lines(path: string): Promise<string[]> {
  return (await readFile(path, 'utf8')).split('\n').filter((line) => line.length > 0);
}

describe('the audit trail of a running app (embedded default)', () => {
  let dir: string;
  let app: Awaited<ReturnType<typeof createApp>>;
  let base: string;
  let server: ReturnType<Awaited<ReturnType<typeof createApp>>['app']['listen']>;
  const secrets: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-audit-'));
    app = await createApp({ dir, env: {} });
    server = app.app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const mint = app.runtime.mintDevToken as NonNullable<typeof app.runtime.mintDevToken>;
    const writer = await mint({ clientId: 'alice-writer', score: 95 });
    const created = await fetch(`${base}/records`, {
      method: 'POST',
      headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/json' },
      body: JSON.stringify({ diagnosis: 'flu' }),
    });
    const { id } = (await created.json()) as { id: string };
    for (const score of [30, 65, 95]) {
      const token = await mint({ clientId: 'alice', score });
      secrets.push(token);
      const body = await (
        await fetch(`${base}/records/${id}`, { headers: { authorization: `Bearer ${token}` } })
      ).json();
      const data = (body as { data: { dek?: string; key?: { grant: string } } }).data;
      if (data.dek) secrets.push(data.dek);
      if (data.key) secrets.push(data.key.grant);
      await createOpener().openBody(body);
    }
    await fetch(`${base}/records/${id}`, { headers: { authorization: 'Bearer forged.token.value' } });
    secrets.push(toBase64url(await app.runtime.kos.keys.getDek('records', 1)));
    await app.runtime.audit?.close();
    // One file per process: kos-audit-<host>-<pid>.jsonl.
    const files = (await readdir(join(dir, 'audit'))).filter((name) => name.endsWith(`-${process.pid}.jsonl`));
    expect(files).toHaveLength(1);
    log = join(dir, 'audit', files[0] as string);
  });

  afterAll(async () => {
    server?.close();
    await app?.kos.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  let log = '';
  const logPath = () => log;

  it('records startup, decisions, denials, releases, grants issued and redeemed at the nodes', async () => {
    const records = (await lines(logPath())).map(
      (line) => JSON.parse(line) as { record?: { type: string; tier?: string; code?: string; nodeId?: string } },
    );
    const types = records.flatMap((line) => (line.record ? [line.record.type] : []));
    for (const type of [
      'startup',
      'decision',
      'denied',
      'key.released',
      'grant.issued',
      'grant.redeemed',
      'key.rotated',
    ]) {
      expect(types, type).toContain(type);
    }
    const released = records.flatMap((line) => (line.record?.type === 'key.released' ? [line.record.tier] : []));
    expect(released).toEqual(expect.arrayContaining(['low', 'medium', 'high']));
    expect(records.some((line) => line.record?.type === 'denied' && line.record.code === 'ERR_TOKEN_INVALID')).toBe(
      true,
    );
    const redeemed = records.filter((line) => line.record?.type === 'grant.redeemed');
    expect(redeemed.length).toBeGreaterThanOrEqual(3);
  });

  it('pseudonymises client ids (correlatable, not readable) and records nothing secret', async () => {
    const text = await readFile(logPath(), 'utf8');
    expect(text).not.toContain('"alice"');
    expect(text).not.toContain('alice-writer');
    const clients = new Set(
      (await lines(logPath())).flatMap((line) => {
        const record = (JSON.parse(line) as { record?: { client?: string; tier?: string; type: string } }).record;
        return record?.client && record.type === 'decision' && record.tier !== 'high' ? [record.client] : [];
      }),
    );
    expect(clients.size).toBe(1);
    for (const secret of secrets) expect(text).not.toContain(secret);
  });

  it('verifies intact, and `kos-audit verify` agrees', async () => {
    const publicJwk = JSON.parse(await readFile(join(dir, 'keys', 'kos-signing.jwk.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    const { d: _private, ...jwk } = publicJwk;
    const result = await verifyAuditLog(logPath(), { publicKey: jwk as never, requireSignatures: true });
    expect(result).toMatchObject({ ok: true });
    expect(result.checkpoints).toBeGreaterThanOrEqual(1);
    const keyFile = join(dir, 'public.jwk.json');
    await writeFile(keyFile, JSON.stringify(jwk));
    const { stdout } = await run('npm', ['run', '-s', 'audit:verify', '--', logPath(), '--public-key', keyFile], {
      cwd: root,
    });
    expect(stdout).toMatch(/^OK: \d+ records/);
  });
});

describe('tamper detection', () => {
  let dir: string;
  let log: string;
  let publicKey: Awaited<ReturnType<typeof exportJWK>>;

  async function writeLog(records: number): Promise<void> {
    const { privateKey, publicKey: pub } = await generateKeyPair('EdDSA', { extractable: true });
    publicKey = await exportJWK(pub);
    const sink = await createHashChainedFileSink({ path: log, signingKey: privateKey, checkpointEvery: 5 });
    const trail = createAuditTrail({ salt: new Uint8Array(32).fill(1), sinks: [sink] });
    for (let i = 0; i < records; i++)
      await trail.record({ type: 'decision', outcome: 'ok', clientId: `c${i}`, tier: 'low' });
    await trail.close();
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-tamper-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  async function tampered(change: (lines: string[]) => string[]): Promise<{ ok: boolean; reason?: string }> {
    log = join(dir, `log-${Math.random().toString(36).slice(2)}.jsonl`);
    await writeLog(12);
    expect((await verifyAuditLog(log, { publicKey })).ok).toBe(true);
    const original = await lines(log);
    await writeFile(log, `${change(original).join('\n')}\n`);
    const result = await verifyAuditLog(log, { publicKey });
    return { ok: result.ok, ...(result.problem ? { reason: result.problem.reason } : {}) };
  }

  it('detects an edited record', async () => {
    const result = await tampered((all) =>
      all.map((line, i) => (i === 3 ? line.replace('"tier":"low"', '"tier":"high"') : line)),
    );
    expect(result).toMatchObject({ ok: false, reason: expect.stringMatching(/edited/) });
  });

  it('detects a deleted record', async () => {
    expect((await tampered((all) => all.filter((_, i) => i !== 2))).ok).toBe(false);
  });

  it('detects reordered records', async () => {
    expect((await tampered((all) => [all[0] as string, all[2] as string, all[1] as string, ...all.slice(3)])).ok).toBe(
      false,
    );
  });

  it('detects truncation below the last checkpoint', async () => {
    const result = await tampered((all) => all.slice(0, 7));
    expect(result).toMatchObject({ ok: false, reason: expect.stringMatching(/truncated/) });
  });

  it('detects a forged checkpoint signature', async () => {
    const result = await tampered((all) =>
      all.map((line) => {
        const parsed = JSON.parse(line) as { checkpoint?: { jws?: string } };
        if (!parsed.checkpoint?.jws) return line;
        const jws = parsed.checkpoint.jws;
        return line.replace(jws, `${jws.slice(0, -4)}AAAA`);
      }),
    );
    expect(result.ok).toBe(false);
  });

  it('continues the chain after a restart and cuts a torn last line, recording the recovery', async () => {
    log = join(dir, 'resume.jsonl');
    await writeLog(3);
    await appendFile(log, '{"seq":99,"prev":"torn');
    const sink = await createHashChainedFileSink({ path: log });
    const trail = createAuditTrail({ salt: new Uint8Array(32).fill(1), sinks: [sink] });
    await trail.record({ type: 'decision', outcome: 'ok' });
    await trail.close();
    const result = await verifyAuditLog(log);
    expect(result.ok).toBe(true);
    expect(await readFile(log, 'utf8')).toContain('"type":"recovery"');
  });
});

describe('fail-closed auditing', () => {
  it('releases no key material when the audit write fails (503 ERR_AUDIT_UNAVAILABLE); fail-open still answers', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kos-failclosed-'));
    let failing = false;
    const errors: unknown[] = [];
    const brokenSink = createCallbackSink(() => {
      if (failing) throw new Error('disk full');
    });
    try {
      for (const failClosed of [true, false]) {
        const { app, kos, runtime } = await createApp({
          dir,
          env: {},
          audit: { failClosed, sinks: [brokenSink], logger: { info: () => undefined } },
        });
        const server = app.listen(0, '127.0.0.1');
        await new Promise((r) => server.once('listening', r));
        const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
        const mint = runtime.mintDevToken as NonNullable<typeof runtime.mintDevToken>;
        const created = await fetch(`${base}/records`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${await mint({ clientId: 'w', score: 95 })}`,
            'content-type': 'application/json',
          },
          body: JSON.stringify({ x: 1 }),
        });
        const { id } = (await created.json()) as { id: string };
        failing = true;
        const response = await fetch(`${base}/records/${id}`, {
          headers: { authorization: `Bearer ${await mint({ clientId: 'r', score: 95 })}` },
        });
        const text = await response.text();
        if (failClosed) {
          expect(response.status).toBe(503);
          expect(JSON.parse(text)).toEqual({ error: { code: 'ERR_AUDIT_UNAVAILABLE', message: expect.any(String) } });
          expect(text).not.toMatch(/"dek"|"kosTier"/);
        } else {
          expect(response.status).toBe(200);
          expect(text).toContain('"kosTier":"high"');
          errors.push('answered');
        }
        failing = false;
        server.close();
        await kos.close();
      }
      expect(errors).toEqual(['answered']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
