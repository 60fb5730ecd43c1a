import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type KosLogger, noopMetrics } from '@kos/core';
import { createKosRuntime } from '@kos/kms-adapters';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { auditFailureLogger, safeLogger } from '../../packages/kms-adapters/src/runtime/runtime-observability.js';

interface Line {
  level: string;
  object: Record<string, unknown>;
  message?: string;
}

function recordingLogger(): KosLogger & { lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: string) => (object: object, message?: string) => {
    lines.push({ level, object: object as Record<string, unknown>, ...(message === undefined ? {} : { message }) });
  };
  return { lines, info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') };
}

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kos-logging-'));
  dirs.push(dir);
  return dir;
}

afterEach(async () => {
  vi.restoreAllMocks();
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe('structured logs of the runtime', () => {
  it('are silent by default: nothing reaches the console', async () => {
    const spies = (['log', 'info', 'warn', 'error', 'debug'] as const).map((level) =>
      vi.spyOn(console, level).mockImplementation(() => undefined),
    );
    const runtime = await createKosRuntime({ dir: await tempDir(), env: {} });
    try {
      await runtime.kos.seal('orders', { a: 1 }, { dataId: 'r1' });
      await runtime.kos.keys.rotate('orders');
    } finally {
      await runtime.close();
    }
    for (const spy of spies) expect(spy).not.toHaveBeenCalled();
  });

  it('log the start-up (ids and settings, no key material) through the injected logger', async () => {
    const dir = await tempDir();
    const logger = recordingLogger();
    const runtime = await createKosRuntime({ dir, env: {}, logger });
    await runtime.close();
    const started = logger.lines.find((line) => line.message === 'kos: started');
    expect(started?.level).toBe('info');
    expect(started?.object).toMatchObject({
      mode: 'embedded',
      metadata: 'file',
      metrics: 'prometheus',
      audit: 'on',
      tracing: true,
      systemShares: { n: 5, k: 3 },
    });
    expect(started?.object.nodes).toHaveLength(5);
    // The dev keys on disk: none of their private parts is in the log.
    const logged = JSON.stringify(logger.lines);
    for (const file of ['kos-signing.jwk.json', 'dev-identity.jwk.json']) {
      const jwk = JSON.parse(await readFile(join(dir, 'keys', file), 'utf8')) as { d: string };
      expect(jwk.d.length).toBeGreaterThan(20);
      expect(logged).not.toContain(jwk.d);
    }
  });

  it('log a failed rotation with its code', async () => {
    const logger = recordingLogger();
    const runtime = await createKosRuntime({ dir: await tempDir(), env: {}, logger });
    try {
      await runtime.kos.seal('orders', { a: 1 }, { dataId: 'r1' });
      // Make every node refuse writes: the rotation fails before its commit.
      for (const store of runtime.nodes.map((n) => n.store)) {
        vi.spyOn(store, 'put').mockRejectedValue(new Error('disk full'));
      }
      await expect(runtime.kos.keys.rotate('orders')).rejects.toMatchObject({ code: 'ERR_ROTATION_FAILED' });
    } finally {
      await runtime.close();
    }
    const failed = logger.lines.find((line) => line.message?.includes('rotation failed'));
    expect(failed?.level).toBe('error');
    expect(failed?.object).toMatchObject({ kid: 'orders', code: 'ERR_ROTATION_FAILED' });
  });

  it('log failed audit writes by code, at most once per interval', async () => {
    const logger = recordingLogger();
    const failing = {
      write: () => {
        throw Object.assign(new Error('no space left on /var/audit'), { code: 'ENOSPC' });
      },
    };
    const runtime = await createKosRuntime({
      dir: await tempDir(),
      env: {},
      logger,
      audit: { sinks: [failing] },
      metrics: noopMetrics,
    });
    try {
      await runtime.kos.seal('orders', { a: 1 }, { dataId: 'r1' }); // creating the key writes audit events
      await runtime.kos.keys.rotate('orders');
    } finally {
      await runtime.close();
    }
    const audit = logger.lines.filter((line) => line.message === 'kos: audit trail write failed');
    expect(audit).toHaveLength(1); // the start-up write failed first; the rest were within the interval
    expect(audit[0]?.level).toBe('error');
    expect(audit[0]?.object).toEqual({ code: 'ENOSPC', failuresSinceLastLog: 1 });
    expect(JSON.stringify(logger.lines)).not.toContain('/var/audit');
    expect(runtime.metricsText).toBeUndefined(); // a custom sink replaced Prometheus
  });

  it('the audit failure log is throttled and counts what it held back', () => {
    const logger = recordingLogger();
    let now = 0;
    const onError = auditFailureLogger(logger, 10_000, () => now);
    onError(new Error('x'));
    now = 5_000;
    onError(new Error('x'));
    onError(new Error('x'));
    now = 10_000;
    onError(Object.assign(new Error('x'), { code: 'EIO' }));
    expect(logger.lines.map((line) => line.object)).toEqual([
      { code: 'unknown', failuresSinceLastLog: 1 },
      { code: 'EIO', failuresSinceLastLog: 3 },
    ]);
  });

  it('a logger that throws changes nothing, and a logger must be pino-compatible', () => {
    const throwing = {
      info: () => {
        throw new Error('logger down');
      },
      warn: () => undefined,
      error: () => undefined,
      debug: () => undefined,
    };
    expect(() => safeLogger(throwing).info({}, 'x')).not.toThrow();
    expect(() => safeLogger({ info: () => undefined } as unknown as KosLogger)).toThrow(/logger\.warn/);
  });
});
