import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ShareSetRecord } from '@kos/core';
import { createOpener } from '@kos/core/client';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  type Deployment,
  integrityText,
  RECORDS_KID,
  redisGet,
  redisSet,
  writeShareFile,
} from '../../test-support/deployment.js';
import { FRAMEWORKS, type Framework } from '../../test-support/frameworks.js';
import { startMisbehavingNode } from '../../test-support/misbehaving-node.js';
import { describeDeployment, expectRefused, useDeployment } from './harness.js';
import { highItem, mediumItem } from './harness-items.js';

type ShareBody = Record<string, unknown> & { value: string; x: number; shareId: string };

const V1 = { diagnosis: 'flu', era: 'before the rotation' };
const V2 = { diagnosis: 'measles', era: 'after the rotation' };
const M2 = '/records/m2';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A share body as `source` but labelled as the share of `placement` in `set` (what a careful forger sends). */
function relabel(source: ShareBody, set: ShareSetRecord, nodeIndex = 0): ShareBody {
  const placement = set.placements[nodeIndex]!;
  const value = Buffer.from(source.value, 'base64url');
  value[value.length - 1] = placement.x;
  return {
    shareId: placement.shareId,
    kid: set.kid,
    version: set.version,
    setId: set.setId,
    owner: set.owner,
    x: placement.x,
    value: value.toString('base64url'),
  };
}

function withValue(body: ShareBody, change: (bytes: Buffer) => void): ShareBody {
  const value = Buffer.from(body.value, 'base64url');
  change(value);
  return { ...body, value: value.toString('base64url') };
}

/**
 * A compromised KMS node, and a node whose stored share was rolled back: against KOS (a
 * KeyManager rebuild with its cache cleared, and low-tier reads through Express, Hono and Koa)
 * and against the browser-side opener of a medium-tier client. Either the right plaintext comes
 * out, with the bad node named and skipped, or ERR_SHARES_INSUFFICIENT — never a wrong plaintext.
 */
describeDeployment('adversarial: malicious and rolled-back KMS nodes', () => {
  const env = useDeployment();
  /** The sets at stake (v1: before the rotation, v2: after). */
  const sets = {} as Record<'system1' | 'system2' | 'carol1' | 'carol2' | 'dave2', ShareSetRecord>;
  let envelope2: unknown;

  const setOf = async (d: Deployment, owner: string, version: number) => {
    const [set] = await d.shareSets({ kid: RECORDS_KID, version, owner });
    expect(set, `${owner} v${version}`).toBeDefined();
    return set as ShareSetRecord;
  };
  /** The share `set` placed on `nodeId`, as that node returns it to KOS. */
  const shareOn = async (d: Deployment, set: ShareSetRecord, nodeId: string) => {
    const placement = set.placements.find((p) => p.nodeId === nodeId)!;
    return (await d.readShare(nodeId, placement.shareId)) as ShareBody;
  };

  beforeAll(async () => {
    const { d } = env;
    await d.seed('m1', V1);
    await mediumItem(d, 'express', 'carol', 70, '/records/m1');
    await d.runtime.kos.keys.rotate(RECORDS_KID, { reason: 'adversarial suite' });
    envelope2 = await d.seed('m2', V2);
    await mediumItem(d, 'hono', 'carol', 70, M2);
    await mediumItem(d, 'koa', 'dave', 70, M2);
    sets.system1 = await setOf(d, 'system', 1);
    sets.system2 = await setOf(d, 'system', 2);
    sets.carol1 = await setOf(d, 'carol', 1);
    sets.carol2 = await setOf(d, 'carol', 2);
    sets.dave2 = await setOf(d, 'dave', 2);
    await d.captureSecrets();
  });

  /** Runs `fn` with each listed node replaced by a fake that answers every request with `{ share: body }`. */
  async function withFakes(d: Deployment, fakes: Array<[string, unknown]>, fn: () => Promise<void>) {
    const started = await Promise.all(
      fakes.map(([, body]) => startMisbehavingNode({ kind: 'json', body: { share: body } })),
    );
    try {
      fakes.forEach(([nodeId], i) => {
        d.routeNode(nodeId, started[i]!.url);
      });
      await fn();
    } finally {
      for (const [nodeId] of fakes) d.routeNode(nodeId, undefined);
      await Promise.all(started.map((fake) => fake.close()));
    }
  }

  /**
   * Runs `fn` with every other node 200 ms slower (below KOS's 250 ms hedge), so the bad node
   * answers first: a rebuild stops at the first k good shares and aborts the rest, so a bad
   * answer that came last would never be looked at, hence never named. (The opener is made
   * deterministic instead: see openerSurvives.)
   */
  async function honestSlow(d: Deployment, badNode: string, fn: () => Promise<void>) {
    const honest = d.nodes.filter((node) => node.nodeId !== badNode);
    for (const node of honest) d.delayNode(node.nodeId, 200);
    try {
      await fn();
    } finally {
      for (const node of honest) d.delayNode(node.nodeId, 0);
    }
  }

  /** Whether a failure matches one of `expected` (`reason` or `reason:code`). */
  const matches = (failure: { reason: string; code?: string | undefined }, expected: readonly string[]) =>
    expected.includes(failure.reason) || expected.includes(`${failure.reason}:${failure.code}`);

  /** KOS rejections recorded in its audit file since `from` records. */
  async function rejections(d: Deployment, from: number, nodeId: string) {
    for (let attempt = 0; attempt < 40; attempt++) {
      const found = (await d.auditRecords())
        .slice(from)
        .filter((record) => record.type === 'shares.rejected')
        .flatMap((record) => (record.failures ?? []) as Array<{ nodeId: string; reason: string; code?: string }>)
        .filter((failure) => failure.nodeId === nodeId);
      if (found.length > 0) return found;
      await sleep(25);
    }
    return [];
  }

  /**
   * KOS rebuilds v2 with a cold cache — KeyManager.open, a low-tier read through `framework`
   * and a high-tier read — and gets the right plaintext and the true DEK; its audit names the
   * bad node with one of `reasons`.
   */
  async function kosSurvives(d: Deployment, badNode: string, reasons: readonly string[], framework: Framework) {
    const from = (await d.auditRecords()).length;
    await honestSlow(d, badNode, async () => {
      d.runtime.kos.keys.clearCache();
      const plaintext = await d.runtime.kos.keys.open(envelope2, { dataId: 'm2' });
      expect(JSON.parse(new TextDecoder().decode(plaintext))).toEqual(V2);
      d.runtime.kos.keys.clearCache();
      const answer = await d.call(framework, M2, { token: await d.mintIdentity({ clientId: 'bob', score: 30 }) });
      expect(answer.status, answer.text).toBe(200);
      expect(answer.body).toEqual({ id: 'm2', data: V2 });
      // A high-tier client is handed the DEK itself: the true one, never one combined from a bad share.
      d.runtime.kos.keys.clearCache();
      const high = await highItem(d, framework, 'alice', M2);
      expect(high.dek === d.secrets.get('DEK records v2'), 'high tier gets the true DEK').toBe(true);
    });
    const named = await rejections(d, from, badNode);
    expect(named.length, `KOS audit names ${badNode}`).toBeGreaterThan(0);
    for (const failure of named) expect(matches(failure, reasons), JSON.stringify(failure)).toBe(true);
  }

  type Item = Awaited<ReturnType<typeof mediumItem>>;

  /**
   * A medium-tier client opens m2 (v2) with its opener: right plaintext, the bad node named.
   * The bad node is put first in the reference and the opener sends no spare request and no
   * hedge, so the bad answer is always looked at before k good ones can be had: its naming does
   * not depend on timing. (Any order and options give the right plaintext; only naming races.)
   */
  async function openerSurvives(item: Item, badNode: string, reasons: readonly string[]) {
    const opener = createOpener({ extraFetches: 0, hedgeAfterMs: 10_000 });
    const shares = [...item.key.shares].sort((a, b) => Number(b.nodeId === badNode) - Number(a.nodeId === badNode));
    try {
      const plaintext = await opener.open({ ...item, key: { ...item.key, shares } });
      expect(JSON.parse(new TextDecoder().decode(plaintext))).toEqual(V2);
      const named = opener.lastFailures.filter((failure) => failure.nodeId === badNode);
      expect(named.length, `opener names ${badNode}: ${JSON.stringify(opener.lastFailures)}`).toBeGreaterThan(0);
      for (const failure of named) expect(matches(failure, reasons), JSON.stringify(failure)).toBe(true);
    } finally {
      opener.dispose();
    }
  }

  /** Gets a fresh reference (a new grant: each is good once per node) before a node goes bad. */
  async function withReference(d: Deployment, client: string, score: number, fn: (item: Item) => Promise<void>) {
    await fn(await mediumItem(d, 'koa', client, score, M2));
  }

  describe('a malicious KMS node (a fake in place of one node)', () => {
    /**
     * Each case: what the fake answers for the share of `set` it is asked for, and how KOS and
     * the opener may name it (`reason` or `reason:code`). KOS's HTTP store already refuses a
     * body for another share id, and both refuse a value whose last byte is not the claimed x,
     * as a bad body (ERR_KMS_BAD_BODY) before the share checks run.
     */
    const BAD_BODY = 'unavailable:ERR_KMS_BAD_BODY';
    const cases: Array<
      [
        string,
        (d: Deployment, set: ShareSetRecord, nodeId: string) => Promise<unknown>,
        { kos: readonly string[]; opener: readonly string[] },
      ]
    > = [
      [
        'an x = 0 share (value ends in 0)',
        async (d, set, nodeId) => withValue(await shareOn(d, set, nodeId), (v) => v.fill(0, v.length - 1)),
        { kos: [BAD_BODY], opener: [BAD_BODY] },
      ],
      [
        'an x = 0 share that also claims x = 0',
        async (d, set, nodeId) => ({
          ...withValue(await shareOn(d, set, nodeId), (v) => v.fill(0, v.length - 1)),
          x: 0,
        }),
        { kos: [BAD_BODY], opener: [BAD_BODY] },
      ],
      [
        'chosen share bytes (labels and x right)',
        async (d, set, nodeId) =>
          withValue(await shareOn(d, set, nodeId), (v) => {
            v.fill(0x41, 0, v.length - 1);
          }),
        { kos: ['digest-mismatch'], opener: ['digest-mismatch'] },
      ],
      [
        "another node's share of the same set (swapped)",
        async (d, set, nodeId) => {
          const other = set.placements.find((p) => p.nodeId !== nodeId)!;
          return shareOn(d, set, other.nodeId);
        },
        { kos: [BAD_BODY], opener: ['x-mismatch'] },
      ],
      [
        "another node's share of the same set, relabelled as this node's",
        async (d, set, nodeId) => {
          const other = set.placements.find((p) => p.nodeId !== nodeId)!;
          return relabel(await shareOn(d, set, other.nodeId), set);
        },
        { kos: ['digest-mismatch'], opener: ['digest-mismatch'] },
      ],
      [
        'its own stale share from before the rotation',
        async (d, set, nodeId) => shareOn(d, set.owner === 'system' ? sets.system1 : sets.carol1, nodeId),
        { kos: [BAD_BODY], opener: ['metadata-mismatch'] },
      ],
      [
        'its own stale share from before the rotation, relabelled as the current one',
        async (d, set, nodeId) =>
          relabel(await shareOn(d, set.owner === 'system' ? sets.system1 : sets.carol1, nodeId), set),
        { kos: ['digest-mismatch'], opener: ['digest-mismatch'] },
      ],
      [
        "a share of another client's set",
        async (d, set, nodeId) => shareOn(d, set.owner === 'system' ? sets.carol2 : sets.dave2, nodeId),
        { kos: [BAD_BODY], opener: ['metadata-mismatch'] },
      ],
      [
        "a share of another client's set, relabelled",
        async (d, set, nodeId) =>
          relabel(await shareOn(d, set.owner === 'system' ? sets.carol2 : sets.dave2, nodeId), set),
        { kos: ['digest-mismatch'], opener: ['digest-mismatch'] },
      ],
    ];

    it.each(cases.map((c, i) => [...c, FRAMEWORKS[i % FRAMEWORKS.length] as Framework] as const))(
      'KOS: %s → skipped and named, right plaintext and DEK (low and high tier through %s)',
      async (_what, forge, reasons, framework) => {
        const { d } = env;
        const badNode = sets.system2.placements[0]!.nodeId;
        await withFakes(d, [[badNode, await forge(d, sets.system2, badNode)]], () =>
          kosSurvives(d, badNode, reasons.kos, framework),
        );
      },
    );

    it.each(cases)('client opener: %s → skipped and named, right plaintext', async (_what, forge, reasons) => {
      const { d } = env;
      const badNode = sets.carol2.placements[0]!.nodeId;
      const body = await forge(d, sets.carol2, badNode);
      await withReference(d, 'carol', 70, (item) =>
        withFakes(d, [[badNode, body]], () => openerSurvives(item, badNode, reasons.opener)),
      );
    });

    it('k colluding nodes with forged shares: ERR_SHARES_INSUFFICIENT, never a wrong plaintext', async () => {
      const { d } = env;
      const forged = async (set: ShareSetRecord, index: number) => {
        const placement = set.placements[index]!;
        return withValue(await shareOn(d, set, placement.nodeId), (v) => v.fill(0x42, 0, v.length - 1));
      };
      const system = await Promise.all(
        [0, 1, 2].map(
          async (i) => [sets.system2.placements[i]!.nodeId, await forged(sets.system2, i)] as [string, unknown],
        ),
      );
      await withFakes(d, system, async () => {
        d.runtime.kos.keys.clearCache();
        await expect(d.runtime.kos.keys.open(envelope2, { dataId: 'm2' })).rejects.toMatchObject({
          code: 'ERR_SHARES_INSUFFICIENT',
        });
        for (const framework of FRAMEWORKS) {
          d.runtime.kos.keys.clearCache();
          const answer = await d.call(framework, M2, { token: await d.mintIdentity({ clientId: 'bob', score: 30 }) });
          expectRefused(answer, 503, 'ERR_SHARES_INSUFFICIENT');
          expect(answer.text).not.toContain('measles');
        }
      });
      const client = await Promise.all(
        [0, 1, 2].map(
          async (i) => [sets.carol2.placements[i]!.nodeId, await forged(sets.carol2, i)] as [string, unknown],
        ),
      );
      await withReference(d, 'carol', 70, (item) =>
        withFakes(d, client, async () => {
          const opener = createOpener();
          await expect(opener.open(item)).rejects.toMatchObject({ code: 'ERR_SHARES_INSUFFICIENT' });
          const named = new Set(opener.lastFailures.map((failure) => failure.nodeId));
          for (const [nodeId] of client) expect(named).toContain(nodeId);
        }),
      );
    });
  });

  describe("rollback of a node's stored share to an older copy", () => {
    /** The place a node keeps a share, and how to read and overwrite it there. */
    const stored = (d: Deployment, nodeId: string, shareId: string) => {
      const node = d.node(nodeId);
      if (node.store === 'file') {
        const path = join(node.sharesDir!, `${shareId}.share.json`);
        return {
          read: () => readFile(path, 'utf8'),
          write: (text: string) => writeFile(path, text, { mode: 0o600 }),
          writeBody: (body: Record<string, unknown>) => writeShareFile(path, body),
        };
      }
      const key = node.redisKey(shareId);
      return {
        read: async () => (await redisGet(d, key)) as string,
        write: (text: string) => redisSet(d, key, text),
        writeBody: (body: Record<string, unknown>) => redisSet(d, key, integrityText({ nodeId, ...body })),
      };
    };

    /** Overwrites the share of `set` on `nodeId` with `text` (or a body), runs `fn`, and restores it. */
    async function rolledBack(
      d: Deployment,
      set: ShareSetRecord,
      nodeId: string,
      replace: { text: string } | { body: Record<string, unknown> },
      fn: () => Promise<void>,
    ) {
      const placement = set.placements.find((p) => p.nodeId === nodeId)!;
      const place = stored(d, nodeId, placement.shareId);
      const original = await place.read();
      try {
        if ('text' in replace) await place.write(replace.text);
        else await place.writeBody(replace.body);
        await fn();
      } finally {
        await place.write(original);
      }
    }

    for (const kind of ['file', 'redis'] as const) {
      it(`${kind}-backed node, share copied back from before a rotation: the node refuses it (ERR_STORE_CORRUPT), KOS skips it`, async () => {
        const { d } = env;
        // A node among the first k + 1 KOS asks, so that it is asked.
        const nodeId = sets.system2.placements.slice(0, 4).find((p) => d.node(p.nodeId).store === kind)!.nodeId;
        const old = sets.system1.placements.find((p) => p.nodeId === nodeId)!;
        const oldText = await stored(d, nodeId, old.shareId).read();
        await rolledBack(d, sets.system2, nodeId, { text: oldText }, async () => {
          const placement = sets.system2.placements.find((p) => p.nodeId === nodeId)!;
          const answer = await d.fetch(`${d.node(nodeId).directUrl}/v1/shares/${placement.shareId}`, {
            headers: { authorization: `KOS-Service ${await d.serviceToken(nodeId)}` },
          });
          expectRefused(answer, 500, 'ERR_STORE_CORRUPT');
          await kosSurvives(d, nodeId, ['unavailable:ERR_KMS_BAD_STATUS'], kind === 'file' ? 'express' : 'koa');
        });
      });

      it(`${kind}-backed node, old share relabelled as the new one (integrity recomputed): digest mismatch, skipped`, async () => {
        const { d } = env;
        const nodeId = sets.system2.placements.slice(0, 4).find((p) => d.node(p.nodeId).store === kind)!.nodeId;
        const index = sets.system2.placements.findIndex((p) => p.nodeId === nodeId);
        const oldBody = await shareOn(d, sets.system1, nodeId);
        await rolledBack(d, sets.system2, nodeId, { body: relabel(oldBody, sets.system2, index) }, () =>
          kosSurvives(d, nodeId, ['digest-mismatch'], kind === 'file' ? 'hono' : 'express'),
        );
      });
    }

    it("a client's share rolled back to its set from before a re-provisioning: the opener skips it", async () => {
      const { d } = env;
      // Score 70: set (5, 3); then 55: a new set (3, 2) replaces it.
      await mediumItem(d, 'express', 'trent', 70, M2);
      const before = await setOf(d, 'trent', 2);
      const oldTexts = new Map<string, string>();
      const oldBodies = new Map<string, ShareBody>();
      for (const placement of before.placements) {
        oldTexts.set(placement.nodeId, await stored(d, placement.nodeId, placement.shareId).read());
        oldBodies.set(placement.nodeId, await shareOn(d, before, placement.nodeId));
      }
      await d.captureSecrets();
      await mediumItem(d, 'express', 'trent', 55, M2);
      const after = await setOf(d, 'trent', 2);
      expect(after.setId).not.toBe(before.setId);
      expect(after.placements).toHaveLength(3);
      const kinds = new Set<string>();
      for (const [index, placement] of after.placements.entries()) {
        const nodeId = placement.nodeId;
        kinds.add(d.node(nodeId).store);
        await withReference(d, 'trent', 55, (item) =>
          rolledBack(d, after, nodeId, { text: oldTexts.get(nodeId)! }, () =>
            openerSurvives(item, nodeId, ['unavailable:ERR_STORE_CORRUPT']),
          ),
        );
        await withReference(d, 'trent', 55, (item) =>
          rolledBack(d, after, nodeId, { body: relabel(oldBodies.get(nodeId)!, after, index) }, () =>
            openerSurvives(item, nodeId, ['digest-mismatch']),
          ),
        );
      }
      expect(kinds).toContain('file');
    });
  });
});
