import { KeyManager, type KeyRecord, type MetadataStore, utf8 } from '@kos/core';
import { createMemoryMetadataStore } from '@kos/kms-adapters';
import { describe, expect, it } from 'vitest';
import { expectKosError } from '../packages/core/test/helpers.js';
import { hostileNodes } from './support/nodes.js';

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

async function storedShareCount(nodes: ReturnType<typeof hostileNodes>, shareIds: readonly string[]): Promise<number> {
  let count = 0;
  for (const node of nodes) for (const id of shareIds) if (await node.inner.get(id)) count++;
  return count;
}

describe('rotation under faults', () => {
  it.each([0, 1, 2, 3, 4])(
    'a node store failing after %i share writes leaves the old version fully usable, and a re-run completes',
    async (m) => {
      const nodes = hostileNodes(5);
      const metadata = createMemoryMetadataStore();
      const keys = new KeyManager({ metadata, nodes, systemShares: { n: 5, k: 3 } });
      await keys.createKey('orders');
      const old = await keys.seal('orders', utf8('before the rotation'), { dataId: 'r-1' });

      // Writes succeed on the first m nodes, then fail.
      nodes.forEach((node, i) => {
        node.writes = 0;
        node.behaviour = i < m ? { kind: 'honest' } : { kind: 'fail-writes-after', writes: 0 };
      });
      await expectKosError(() => keys.rotate('orders'), 'ERR_ROTATION_FAILED');

      const record = await keys.getKey('orders');
      expect(record.primaryVersion).toBe(1);
      expect(record.versions).toHaveLength(1);
      // The partial set was removed: no shares and no record of it remain.
      const sets = await metadata.listShareSets({ kid: 'orders' });
      expect(sets).toHaveLength(1);
      keys.clearCache();
      for (const node of nodes) node.behaviour = { kind: 'honest' };
      expect(text(await keys.open(old))).toBe('before the rotation');
      expect((await keys.seal('orders', utf8('still v1'), { dataId: 'r-2' })).header.ver).toBe(1);

      // Re-run.
      const v2 = await keys.rotate('orders');
      expect(v2.version).toBe(2);
      expect(text(await keys.open(old))).toBe('before the rotation');
      expect((await keys.seal('orders', utf8('now v2'), { dataId: 'r-3' })).header.ver).toBe(2);
    },
  );

  it('a crash between storing shares and the commit leaves v1 in force; the re-run commits and the orphan is collected', async () => {
    const nodes = hostileNodes(5);
    const inner = createMemoryMetadataStore();
    let crashOnCommit = true;
    const metadata: MetadataStore = Object.assign(Object.create(inner) as MetadataStore, {
      putKey: async (record: KeyRecord, revision: number | null) => {
        if (crashOnCommit && record.primaryVersion === 2) throw new Error('process killed');
        return inner.putKey(record, revision);
      },
    });
    let now = 1_000_000;
    const keys = new KeyManager({ metadata, nodes, clock: () => now, lockTtlMs: 30_000 });
    await keys.createKey('orders');
    const old = await keys.seal('orders', utf8('v1'), { dataId: 'r-1' });

    await expectKosError(() => keys.rotate('orders'), 'ERR_ROTATION_FAILED');
    const orphan = (await inner.listShareSets({ kid: 'orders', version: 2 }))[0];
    expect(orphan).toBeDefined();
    expect(
      await storedShareCount(
        nodes,
        orphan!.placements.map((p) => p.shareId),
      ),
    ).toBe(5);
    expect((await keys.getKey('orders')).primaryVersion).toBe(1);

    crashOnCommit = false;
    now += 60_000;
    const v2 = await keys.rotate('orders');
    expect(v2.version).toBe(2);
    expect(v2.systemSetId).not.toBe(orphan!.setId);
    // The crashed attempt's set and its shares are gone; the committed one stays.
    expect((await inner.listShareSets({ kid: 'orders', version: 2 })).map((s) => s.setId)).toEqual([v2.systemSetId]);
    expect(
      await storedShareCount(
        nodes,
        orphan!.placements.map((p) => p.shareId),
      ),
    ).toBe(0);
    keys.clearCache();
    expect(text(await keys.open(old))).toBe('v1');
  });

  it('a rotation lock left by a dead instance expires and the rotation proceeds', async () => {
    const nodes = hostileNodes(5);
    const metadata = createMemoryMetadataStore();
    const keys = new KeyManager({ metadata, nodes, lockTtlMs: 150, lockWaitMs: 5_000 });
    await keys.createKey('orders');
    expect(await metadata.acquireLock('rotate.orders', 'dead-instance', 150)).toBe(true);
    const v2 = await keys.rotate('orders');
    expect(v2.version).toBe(2);
  });

  it('a rotation that cannot get the lock in time fails with its own code and changes nothing', async () => {
    const nodes = hostileNodes(5);
    const metadata = createMemoryMetadataStore();
    const keys = new KeyManager({ metadata, nodes, lockWaitMs: 100 });
    await keys.createKey('orders');
    expect(await metadata.acquireLock('rotate.orders', 'busy-instance', 60_000)).toBe(true);
    await expectKosError(() => keys.rotate('orders'), 'ERR_ROTATION_IN_PROGRESS');
    expect((await keys.getKey('orders')).primaryVersion).toBe(1);
  });
});
