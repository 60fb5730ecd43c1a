import { join } from 'node:path';
import { createFileMetadataStore, createFileShareStore } from '../src/index.js';
import { runMetadataStoreConformance, runShareStoreConformance } from '../src/testing/index.js';
import { makeTempDir } from './helpers/temp-dir.js';

runShareStoreConformance('file', async () => {
  const { dir, remove } = await makeTempDir();
  return { store: createFileShareStore({ nodeId: 'node-1', dir: join(dir, 'shares') }), cleanup: remove };
});

runMetadataStoreConformance('file', async () => {
  const { dir, remove } = await makeTempDir();
  return { store: createFileMetadataStore({ dir: join(dir, 'meta') }), cleanup: remove };
});
