import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ShareStore, StoreCallOptions, StoredShare } from '@kos/core';
import { createFileShareStore, createMemoryShareStore } from '@kos/kms-adapters';

/** Real memory share stores, one per node. */
export function memoryNodes(count: number, zones?: readonly string[]): ShareStore[] {
  return Array.from({ length: count }, (_, i) =>
    createMemoryShareStore({ nodeId: `node-${i + 1}`, ...(zones ? { zone: zones[i % zones.length] as string } : {}) }),
  );
}

/** Real file share stores in a fresh temporary folder; `cleanup` removes it. */
export async function fileNodes(
  count: number,
): Promise<{ nodes: ShareStore[]; dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'kos-nodes-'));
  const nodes = Array.from({ length: count }, (_, i) =>
    createFileShareStore({ nodeId: `node-${i + 1}`, dir: join(dir, `node-${i + 1}`) }),
  );
  return { nodes, dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export type Misbehaviour =
  | { kind: 'honest' }
  | { kind: 'down' }
  | { kind: 'stall' }
  | { kind: 'x-zero' }
  | { kind: 'flip-bit' }
  | { kind: 'garbage' }
  | { kind: 'substitute'; share: () => StoredShare | undefined }
  | { kind: 'fail-writes-after'; writes: number };

/**
 * A real store behind a switch that makes it misbehave: a KMS node gone bad. Reads can be
 * refused, stalled or answered with chosen bytes; writes can start failing after m.
 */
export class HostileNode implements ShareStore {
  behaviour: Misbehaviour = { kind: 'honest' };
  writes = 0;
  readonly gets: string[] = [];

  constructor(readonly inner: ShareStore) {}

  get nodeId(): string {
    return this.inner.nodeId;
  }

  get zone(): string | undefined {
    return this.inner.zone;
  }

  async put(share: StoredShare, options?: StoreCallOptions): Promise<void> {
    const b = this.behaviour;
    if (b.kind === 'down') throw new Error('connection refused');
    if (b.kind === 'fail-writes-after' && this.writes >= b.writes) throw new Error('disk full');
    this.writes++;
    return this.inner.put(share, options);
  }

  async get(shareId: string, options?: StoreCallOptions): Promise<StoredShare | undefined> {
    this.gets.push(shareId);
    const b = this.behaviour;
    switch (b.kind) {
      case 'down':
        throw new Error('connection refused');
      case 'stall':
        return new Promise((_, reject) => {
          options?.signal?.addEventListener('abort', () => reject(new Error('aborted')));
        });
      case 'substitute':
        return b.share();
      default:
        break;
    }
    const share = await this.inner.get(shareId, options);
    if (!share) return share;
    const value = share.value.slice();
    if (b.kind === 'x-zero') {
      value[value.length - 1] = 0;
      return { ...share, x: 0, value };
    }
    if (b.kind === 'flip-bit') {
      value[3] = (value[3] as number) ^ 0x04;
      return { ...share, value };
    }
    if (b.kind === 'garbage') {
      // Random bytes, but never the real x coordinate (last byte) nor 0: by chance (2 in 256)
      // they would be refused for another reason than the one this misbehaviour stands for.
      const garbage = crypto.getRandomValues(new Uint8Array(33));
      const x = value[value.length - 1] as number;
      garbage[32] = (x % 255) + 1;
      return { ...share, value: garbage };
    }
    return share;
  }

  delete(shareId: string, options?: StoreCallOptions): Promise<boolean> {
    return this.inner.delete(shareId, options);
  }
}

export function hostileNodes(count: number, zones?: readonly string[]): HostileNode[] {
  return memoryNodes(count, zones).map((node) => new HostileNode(node));
}
