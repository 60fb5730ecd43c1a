import { KeyManager, type KeyManagerEvent, type ShareSetRecord, type StoredShare, utf8 } from '@kos/core';
import { createMemoryMetadataStore } from '@kos/kms-adapters';
import { beforeEach, describe, expect, it } from 'vitest';
import { expectKosError } from '../packages/core/test/helpers.js';
import { type HostileNode, hostileNodes, type Misbehaviour } from './support/nodes.js';

/**
 * A KMS node that lies must never make KOS use a wrong key: its share is refused and named,
 * and the DEK is rebuilt from the honest nodes, or the read fails with a clear error.
 */
describe('a hostile KMS node', () => {
  let nodes: HostileNode[];
  let keys: KeyManager;
  let events: KeyManagerEvent[];
  let envelope: Awaited<ReturnType<KeyManager['seal']>>;
  let metadata: ReturnType<typeof createMemoryMetadataStore>;

  async function systemSet(version: number): Promise<ShareSetRecord> {
    const [set] = await metadata.listShareSets({ kid: 'orders', version, owner: 'system' });
    return set as ShareSetRecord;
  }

  /** The share the node holds for another set (same node, so only the set binding differs). */
  async function shareOfOtherSet(node: HostileNode, set: ShareSetRecord): Promise<StoredShare | undefined> {
    const placement = set.placements.find((p) => p.nodeId === node.nodeId);
    return placement ? node.inner.get(placement.shareId) : undefined;
  }

  function rejections(): Array<{ nodeId: string; reason: string }> {
    return events.flatMap((e) =>
      e.type === 'shares.rejected' ? e.failures.map((f) => ({ nodeId: f.nodeId, reason: f.reason })) : [],
    );
  }

  beforeEach(async () => {
    nodes = hostileNodes(5);
    metadata = createMemoryMetadataStore();
    events = [];
    keys = new KeyManager({
      metadata,
      nodes,
      systemShares: { n: 5, k: 3 },
      shareTimeoutMs: 200,
      hedgeAfterMs: 50,
      onEvent: (e) => events.push(e),
    });
    await keys.createKey('orders');
    envelope = await keys.seal('orders', utf8('the real plaintext'), { dataId: 'r-1' });
    keys.clearCache();
  });

  async function openWith(bad: Misbehaviour, count = 1): Promise<string> {
    const set = await systemSet(envelope.header.ver);
    // Misbehaving nodes are among the ones holding shares of this set, and asked first.
    const holders = set.placements.slice(0, count).map((p) => nodes.find((n) => n.nodeId === p.nodeId) as HostileNode);
    for (const node of holders) node.behaviour = bad;
    return new TextDecoder().decode(await keys.open(envelope, { dataId: 'r-1' }));
  }

  it.each([
    ['a share with x = 0', { kind: 'x-zero' }, 'x-zero'],
    ['a bit-flipped share', { kind: 'flip-bit' }, 'digest-mismatch'],
    ['random garbage', { kind: 'garbage' }, 'x-mismatch'],
    ['no answer (down)', { kind: 'down' }, 'unavailable'],
  ] as const)('returning %s is named and skipped', async (_what, bad, reason) => {
    expect(await openWith(bad)).toBe('the real plaintext');
    const set = await systemSet(1);
    expect(rejections()).toContainEqual({ nodeId: set.placements[0]?.nodeId, reason });
  });

  it('that stalls is hedged around, not waited for', async () => {
    expect(await openWith({ kind: 'stall' })).toBe('the real plaintext');
    const set = await systemSet(1);
    const staller = nodes.find((n) => n.nodeId === set.placements[0]?.nodeId) as HostileNode;
    expect(staller.gets).toContain(set.placements[0]?.shareId);
    // A fourth node was asked beside it and the stalled request was aborted once k shares were in.
    expect(nodes.filter((n) => n.gets.length > 0).length).toBe(4);
  });

  it('that stalls on every node still fails with a clear code after the timeout', async () => {
    for (const node of nodes) node.behaviour = { kind: 'stall' };
    await expectKosError(() => keys.open(envelope), 'ERR_SHARES_INSUFFICIENT');
    expect(rejections().filter((r) => r.reason === 'timeout')).toHaveLength(5);
  });

  it('returning a share of another client set is refused', async () => {
    const clientSet = await keys.provisionClientSet('orders', 1, 'client-9', { n: 5, k: 3 });
    keys.clearCache();
    const set = await systemSet(1);
    const liar = nodes.find((n) => n.nodeId === set.placements[0]?.nodeId) as HostileNode;
    const stolen = await shareOfOtherSet(liar, clientSet);
    expect(stolen).toBeDefined();
    // Relabelled to look like the system share: the digest (bound to the set id) still catches it.
    const systemPlacement = set.placements[0]!;
    liar.behaviour = {
      kind: 'substitute',
      share: () => ({
        ...(stolen as StoredShare),
        setId: set.setId,
        shareId: systemPlacement.shareId,
        x: systemPlacement.x,
      }),
    };
    expect(new TextDecoder().decode(await keys.open(envelope))).toBe('the real plaintext');
    expect(rejections()).toContainEqual({
      nodeId: liar.nodeId,
      reason: expect.stringMatching(/x-mismatch|digest-mismatch/),
    });
  });

  it('returning a stale share from an older version is refused', async () => {
    const v1 = await systemSet(1);
    await keys.rotate('orders');
    const fresh = await keys.seal('orders', utf8('version two'), { dataId: 'r-2' });
    keys.clearCache();
    const v2 = await systemSet(2);
    const liarId = v2.placements[0]!.nodeId;
    const liar = nodes.find((n) => n.nodeId === liarId) as HostileNode;
    const stale = await shareOfOtherSet(liar, v1);
    liar.behaviour = {
      kind: 'substitute',
      share: () => stale && { ...stale, version: 2, setId: v2.setId, shareId: v2.placements[0]!.shareId },
    };
    expect(new TextDecoder().decode(await keys.open(fresh))).toBe('version two');
    expect(rejections().some((r) => r.nodeId === liarId)).toBe(true);
  });

  it('when fewer than k honest nodes remain, fails with a clear error naming every bad node', async () => {
    const set = await systemSet(1);
    const bad = set.placements.slice(0, 3).map((p) => p.nodeId);
    for (const node of nodes) if (bad.includes(node.nodeId)) node.behaviour = { kind: 'flip-bit' };
    const error = await keys.open(envelope).catch((e: unknown) => e);
    await expectKosError(() => Promise.reject(error), 'ERR_SHARES_INSUFFICIENT');
    const failures = (error as { details: { failures: Array<{ nodeId: string; reason: string }> } }).details.failures;
    expect(failures.map((f) => f.nodeId).sort()).toEqual([...bad].sort());
    expect(failures.every((f) => f.reason === 'digest-mismatch')).toBe(true);
    // Nothing secret in what the error carries.
    expect(JSON.stringify({ message: (error as Error).message, details: failures })).not.toMatch(
      /value|[A-Za-z0-9_-]{43}/,
    );
  });

  it('colluding nodes returning consistent wrong shares cannot make KOS use a wrong key', async () => {
    // Three nodes each return a self-consistent share of a different random secret, labelled as the real set.
    const set = await systemSet(1);
    const { split } = await import('shamir-secret-sharing');
    const forged = await split(crypto.getRandomValues(new Uint8Array(32)), 5, 3);
    set.placements.slice(0, 3).forEach((placement, i) => {
      const node = nodes.find((n) => n.nodeId === placement.nodeId) as HostileNode;
      const value = (forged[i] as Uint8Array).slice();
      value[32] = placement.x;
      node.behaviour = {
        kind: 'substitute',
        share: () => ({
          shareId: placement.shareId,
          kid: 'orders',
          version: 1,
          setId: set.setId,
          owner: 'system',
          x: placement.x,
          value,
        }),
      };
    });
    // The two honest nodes are not enough: the read fails, and no envelope ever opens with a wrong key.
    await expectKosError(() => keys.open(envelope), 'ERR_SHARES_INSUFFICIENT');
  });
});
