import { describe, expect, it } from 'vitest';
import { createMemoryMetadataStore, createMemoryShareStore } from '../src/index.js';
import { expectKosError, runMetadataStoreConformance, runShareStoreConformance } from '../src/testing/index.js';

runShareStoreConformance('memory', async () => ({
  store: createMemoryShareStore({ nodeId: 'node-1', zone: 'zone-a' }),
  cleanup: async () => {},
}));

runMetadataStoreConformance('memory', async () => ({ store: createMemoryMetadataStore(), cleanup: async () => {} }));

describe('createMemoryShareStore options', () => {
  it('exposes nodeId and zone as given', () => {
    const store = createMemoryShareStore({ nodeId: 'node-1', zone: 'zone-a' });
    expect([store.nodeId, store.zone]).toEqual(['node-1', 'zone-a']);
    expect(createMemoryShareStore({ nodeId: 'node-2' }).zone).toBeUndefined();
  });

  it('refuses a missing or invalid nodeId or zone with ERR_INVALID_OPTIONS', async () => {
    const bad: unknown[] = [undefined, null, {}, { nodeId: '' }, { nodeId: '../n' }, { nodeId: 'n', zone: 'a/b' }];
    for (const options of bad) {
      await expectKosError(async () => createMemoryShareStore(options as never), 'ERR_INVALID_OPTIONS');
    }
  });
});

describe('createMemoryMetadataStore', () => {
  it('hands out frozen records, so a caller cannot change store state through them', async () => {
    const store = createMemoryMetadataStore();
    await store.putAccess({ clientId: 'client-1', allow: ['k1'], deny: [] });
    const record = await store.getAccess('client-1');
    expect(Object.isFrozen(record)).toBe(true);
    expect(Object.isFrozen(record?.allow)).toBe(true);
  });

  it('keeps separate stores separate', async () => {
    const a = createMemoryMetadataStore();
    const b = createMemoryMetadataStore();
    await a.addOps('k1', 1, 5);
    expect(await b.getOps('k1', 1)).toBe(0);
  });
});
