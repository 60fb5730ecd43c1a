import { KeyManager, loadTracing, tracingAvailable, utf8, withSpan } from '@kos/core';
import { createMemoryMetadataStore } from '@kos/kms-adapters';
import { describe, expect, it, vi } from 'vitest';
import { memoryNodes } from '../support/nodes.js';

// As if the optional peer dependency were not installed: importing it fails.
vi.mock('@opentelemetry/api', () => {
  throw new Error("Cannot find package '@opentelemetry/api'");
});

describe('without @opentelemetry/api', () => {
  it('KOS runs without spans', async () => {
    expect(await loadTracing()).toBe(false);
    expect(tracingAvailable()).toBe(false);
    let seen: unknown;
    const result = await withSpan('kos.test', { 'kos.kid': 'k' }, async (span) => {
      seen = span;
      span.setAttribute('kos.x', 1);
      span.setStatus({ code: 2 });
      return 42;
    });
    expect(result).toBe(42);
    expect(seen).toBeDefined();
    await expect(
      withSpan('kos.test', {}, async () => {
        throw new Error('passes through');
      }),
    ).rejects.toThrow('passes through');
    const keys = new KeyManager({ metadata: createMemoryMetadataStore(), nodes: memoryNodes(5) });
    await keys.createKey('orders');
    await keys.rotate('orders');
    const envelope = await keys.seal('orders', utf8('still works'), { dataId: 'd' });
    keys.clearCache();
    expect(new TextDecoder().decode(await keys.open(envelope))).toBe('still works');
  });
});
