import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTokenVerifier, isKosError, KosError, type ShareStore } from '@kos/core';
import { generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createFileShareStore,
  createKmsHandler,
  createMemoryMetadataStore,
  createMemoryShareStore,
} from '../src/index.js';
import { HEALTH_PROBE_SHARE_ID, type KmsHealthChange } from '../src/kms-node/kms-handler.js';

const NODE = 'node-1';
let verifier: ReturnType<typeof createTokenVerifier>;

beforeAll(async () => {
  const { publicKey } = await generateKeyPair('EdDSA');
  verifier = createTokenVerifier({ nodeId: NODE, issuer: 'https://kos.test', keys: publicKey });
});

/** A store whose reads can be made to fail or stall, counting the reads it sees. */
function controllableStore(inner: ShareStore) {
  const control = { mode: 'ok' as 'ok' | 'fail' | 'stall', reads: 0, signals: [] as AbortSignal[] };
  const store: ShareStore = {
    nodeId: inner.nodeId,
    put: (share, options) => inner.put(share, options),
    delete: (id, options) => inner.delete(id, options),
    async get(id, options) {
      control.reads += 1;
      if (options?.signal) control.signals.push(options.signal);
      if (control.mode === 'fail')
        throw new KosError('ERR_STORE_IO', 'redis get of share kos-health-probe failed (Error: Connection is closed.)');
      if (control.mode === 'stall') return new Promise(() => {});
      return inner.get(id, options);
    },
  };
  return { store, control };
}

function handlerFor(store: ShareStore, extra: object = {}) {
  return createKmsHandler({ nodeId: NODE, store, verifier, replay: createMemoryMetadataStore(), ...extra });
}

async function health(handle: ReturnType<typeof createKmsHandler>) {
  const response = await handle({ method: 'GET', url: 'http://node.test/v1/health', headers: {} });
  return { status: response.status, body: JSON.parse(response.body) as unknown, headers: response.headers };
}

describe('GET /v1/health probes the store', () => {
  it('reads the probe id (a share nobody has) with a signal, and answers 200', async () => {
    const { store, control } = controllableStore(createMemoryShareStore({ nodeId: NODE }));
    const result = await health(handlerFor(store));
    expect(result).toMatchObject({ status: 200, body: { status: 'ok', nodeId: NODE } });
    expect(result.headers['cache-control']).toBe('no-store');
    expect(control.reads).toBe(1);
    expect(control.signals[0]).toBeInstanceOf(AbortSignal);
    expect(HEALTH_PROBE_SHARE_ID).toBe('kos-health-probe');
  });

  it('answers 503 with the store code and a fixed message (the reason stays in the log) when the store fails', async () => {
    const { store, control } = controllableStore(createMemoryShareStore({ nodeId: NODE }));
    const changes: KmsHealthChange[] = [];
    const handle = handlerFor(store, {
      healthCacheMs: 0,
      onHealthChange: (change: KmsHealthChange) => changes.push(change),
    });
    control.mode = 'fail';
    const down = await health(handle);
    expect(down).toMatchObject({
      status: 503,
      body: { error: { code: 'ERR_STORE_IO', message: 'node node-1: its share store is unavailable' } },
    });
    expect(JSON.stringify(down.body)).not.toContain('Connection is closed');
    await health(handle);
    control.mode = 'ok';
    expect((await health(handle)).status).toBe(200);
    // One change each way, not one per request.
    expect(changes).toEqual([
      {
        nodeId: NODE,
        healthy: false,
        code: 'ERR_STORE_IO',
        reason: 'redis get of share kos-health-probe failed (Error: Connection is closed.)',
      },
      { nodeId: NODE, healthy: true },
    ]);
  });

  it('answers 503 after healthTimeoutMs when the store does not answer, and aborts the probe', async () => {
    const { store, control } = controllableStore(createMemoryShareStore({ nodeId: NODE }));
    control.mode = 'stall';
    const started = Date.now();
    const result = await health(handlerFor(store, { healthTimeoutMs: 100 }));
    expect(result).toMatchObject({ status: 503, body: { error: { code: 'ERR_STORE_IO' } } });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(control.signals[0]?.aborted).toBe(true);
  });

  it('a flood of health requests costs one store read per healthCacheMs', async () => {
    const { store, control } = controllableStore(createMemoryShareStore({ nodeId: NODE }));
    let now = 1_000_000;
    const handle = handlerFor(store, { healthCacheMs: 1000, clock: () => now });
    const answers = await Promise.all(Array.from({ length: 50 }, () => health(handle)));
    expect(answers.every((answer) => answer.status === 200)).toBe(true);
    expect(control.reads).toBe(1);
    now += 999;
    await health(handle);
    expect(control.reads).toBe(1);
    now += 2;
    await health(handle);
    expect(control.reads).toBe(2);
  });

  it('healthProbe: false answers without touching the store; a custom probe is used instead of the read', async () => {
    const { store, control } = controllableStore(createMemoryShareStore({ nodeId: NODE }));
    control.mode = 'fail';
    expect((await health(handlerFor(store, { healthProbe: false }))).status).toBe(200);
    expect(control.reads).toBe(0);
    const custom = await health(
      handlerFor(store, {
        healthProbe: async () => {
          throw new KosError('ERR_STORE_CORRUPT', 'the store says its data is damaged');
        },
      }),
    );
    expect(custom).toMatchObject({ status: 503, body: { error: { code: 'ERR_STORE_CORRUPT' } } });
  });

  it('refuses bad health options at construction', () => {
    const store = createMemoryShareStore({ nodeId: NODE });
    for (const extra of [
      { healthTimeoutMs: 0 },
      { healthTimeoutMs: 1.5 },
      { healthCacheMs: -1 },
      { healthProbe: 'yes' },
    ]) {
      let thrown: unknown;
      try {
        handlerFor(store, extra);
      } catch (error) {
        thrown = error;
      }
      expect(isKosError(thrown, 'ERR_INVALID_OPTIONS'), JSON.stringify(extra)).toBe(true);
    }
  });

  describe('a file store', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'kos-health-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('is healthy when its folder is readable', async () => {
      const store = createFileShareStore({ nodeId: NODE, dir: join(dir, 'shares') });
      expect((await health(handlerFor(store))).status).toBe(200);
    });
  });
});
