import {
  createAccessControl,
  createNodeCryptoProvider,
  createWebCryptoProvider,
  encodeEnvelope,
  isKosError,
  KeyManager,
  startRotationScheduler,
  utf8,
} from '@kos/core';
import { createMemoryMetadataStore } from '@kos/kms-adapters';
import { describe, expect, it } from 'vitest';
import { expectKosError } from '../packages/core/test/helpers.js';
import { memoryKeyManager, text } from './support/key-manager.js';
import { memoryNodes } from './support/nodes.js';

const setup = memoryKeyManager;

describe('the key registry', () => {
  it('creates a key with version 1 active and primary, its shares on 5 distinct nodes', async () => {
    const { keys, metadata } = setup();
    const record = await keys.createKey('orders');
    expect(record.primaryVersion).toBe(1);
    expect(record.versions).toEqual([expect.objectContaining({ version: 1, state: 'active', alg: 'A256GCM' })]);
    const [set] = await metadata.listShareSets({ kid: 'orders' });
    expect(set).toMatchObject({ owner: 'system', n: 5, k: 3, version: 1 });
    expect(new Set(set?.placements.map((p) => p.nodeId)).size).toBe(5);
    await expectKosError(() => keys.createKey('orders'), 'ERR_KEY_EXISTS');
  });

  it('seals and opens in every form', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    const envelope = await keys.seal('orders', utf8('{"total":42}'), { dataId: 'order-1' });
    expect(text(await keys.open(envelope, { dataId: 'order-1' }))).toBe('{"total":42}');
    const { encodeEnvelope } = await import('@kos/core');
    for (const form of ['json', 'compact', 'binary'] as const) {
      expect(text(await keys.open(encodeEnvelope(envelope, form)))).toBe('{"total":42}');
    }
  });

  it('rebuilds the DEK from shares after the cache is cleared', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    const envelope = await keys.seal('orders', utf8('x'), { dataId: 'd' });
    keys.clearCache();
    expect(text(await keys.open(envelope))).toBe('x');
  });

  it('refuses unknown keys and versions with their own codes', async () => {
    const { keys } = setup();
    await expectKosError(() => keys.seal('nope', utf8('x'), { dataId: 'd' }), 'ERR_KEY_NOT_FOUND');
    await keys.createKey('orders');
    const envelope = await keys.seal('orders', utf8('x'), { dataId: 'd' });
    const { encodeEnvelope } = await import('@kos/core');
    await expectKosError(() => keys.open({ ...encodeEnvelope(envelope, 'json'), ver: 9 }), 'ERR_KEY_VERSION_NOT_FOUND');
  });
});

describe('key commitments on open', () => {
  /** The node provider, counting key-commitment HMACs (the KCV at rotation is one too). */
  function countingCrypto() {
    const inner = createNodeCryptoProvider();
    const counter = { hmacs: 0 };
    const crypto = {
      ...inner,
      hmacSha256: (key: Uint8Array, data: Uint8Array) => {
        counter.hmacs += 1;
        return inner.hmacSha256(key, data);
      },
    };
    delete (crypto as { hmacSha256Keyed?: unknown }).hmacSha256Keyed;
    return { crypto, counter };
  }

  it('verifies a commitment once per key version, nonce and value, and every other one in full', async () => {
    const { crypto, counter } = countingCrypto();
    const { keys } = setup({ crypto });
    await keys.createKey('orders');
    const envelope = await keys.seal('orders', utf8('{"n":1}'), { dataId: 'o1' });
    const json = encodeEnvelope(envelope, 'json');

    counter.hmacs = 0;
    expect(text(await keys.open(json))).toBe('{"n":1}');
    expect(counter.hmacs).toBe(1);
    // The same envelope again: the verified commitment is remembered.
    expect(text(await keys.open(json))).toBe('{"n":1}');
    expect(counter.hmacs).toBe(1);

    // Same nonce, another commitment value: computed again, and refused.
    const otherKc = `${json.kc.slice(0, -2)}${json.kc.endsWith('AA') ? 'AQ' : 'AA'}`;
    await expectKosError(() => keys.open({ ...json, kc: otherKc }), 'ERR_DECRYPTION_FAILED');
    expect(counter.hmacs).toBe(2);

    // Same nonce and commitment presented as another key version: computed under that
    // version's DEK, and refused.
    await keys.rotate('orders');
    counter.hmacs = 0;
    await expectKosError(() => keys.open({ ...json, ver: 2 }), 'ERR_DECRYPTION_FAILED');
    expect(counter.hmacs).toBe(1);

    // A tampered ciphertext with the remembered nonce and commitment still fails (AEAD).
    const ct = Buffer.from(json.ct, 'base64url');
    ct[0] = (ct[0] as number) ^ 1;
    await expectKosError(() => keys.open({ ...json, ct: ct.toString('base64url') }), 'ERR_DECRYPTION_FAILED');
  });
});

describe('retirement', () => {
  it('never lowers the minimum decryption version when retiring, whatever the order of concurrent calls', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    for (let i = 0; i < 3; i++) await keys.rotate('orders');
    // Two operators at once: one retires below 4, the other below 2.
    await Promise.all([
      keys.setMinDecryptVersion('orders', 4, { onlyRaise: true }),
      keys.setMinDecryptVersion('orders', 2, { onlyRaise: true }),
    ]);
    expect((await keys.getKey('orders')).minDecryptVersion).toBe(4);
    await keys.setMinDecryptVersion('orders', 2, { onlyRaise: true });
    expect((await keys.getKey('orders')).minDecryptVersion).toBe(4);
    // Without onlyRaise (reinstating) it may go down.
    await keys.setMinDecryptVersion('orders', 2);
    expect((await keys.getKey('orders')).minDecryptVersion).toBe(2);
  });
});

describe('rotation', () => {
  it('makes a fresh DEK: old envelopes still open, new ones use the new version', async () => {
    const { keys, events } = setup();
    await keys.createKey('orders');
    const old = await keys.seal('orders', utf8('v1 data'), { dataId: 'a' });
    const dek1 = await keys.getDek('orders', 1);
    const v2 = await keys.rotate('orders');
    expect(v2).toMatchObject({ version: 2, state: 'active' });
    const dek2 = await keys.getDek('orders', 2);
    expect(Buffer.from(dek2).equals(Buffer.from(dek1))).toBe(false);
    const fresh = await keys.seal('orders', utf8('v2 data'), { dataId: 'b' });
    expect(fresh.header.ver).toBe(2);
    expect(text(await keys.open(old))).toBe('v1 data');
    expect((await keys.getKey('orders')).versions.map((v) => [v.version, v.state])).toEqual([
      [1, 'decrypt-only'],
      [2, 'active'],
    ]);
    expect(events).toContainEqual({
      type: 'key.rotated',
      kid: 'orders',
      version: 2,
      previousVersion: 1,
      reason: 'manual',
    });
  });

  it('peekDek answers only from cache, never for a retired version, and hands out a copy', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    await keys.rotate('orders');
    keys.clearCache();
    expect(keys.peekDek('orders', 1)).toBeUndefined();
    const dek = await keys.getDek('orders', 1);
    const peeked = keys.peekDek('orders', 1) as Uint8Array;
    expect(peeked).toEqual(dek);
    peeked.fill(0);
    expect(keys.peekDek('orders', 1)).toEqual(dek);
    expect(keys.peekDek('orders', 9)).toBeUndefined();
    await keys.setMinDecryptVersion('orders', 2);
    expect(keys.peekDek('orders', 1)).toBeUndefined();
    await expectKosError(() => keys.getDek('orders', 1), 'ERR_KEY_VERSION_RETIRED');
  });

  it('peekDek does not answer for a version another instance retired, once the record is read again', async () => {
    let now = Date.now();
    const metadata = createMemoryMetadataStore();
    const nodes = memoryNodes(5);
    const mine = new KeyManager({ metadata, nodes, clock: () => now });
    const other = new KeyManager({ metadata, nodes });
    await mine.createKey('orders');
    await mine.rotate('orders');
    const dek = await mine.getDek('orders', 1);
    await other.setMinDecryptVersion('orders', 2);
    // Within the record's cache time both paths still answer (getDek would too).
    expect(mine.peekDek('orders', 1)).toEqual(dek);
    now += 1_000;
    expect(mine.peekDek('orders', 1)).toBeUndefined();
    await mine.getDek('orders', 2);
    // The record read again says retired; the version's DEK is still in the cache.
    expect(mine.peekDek('orders', 1)).toBeUndefined();
    await expectKosError(() => mine.getDek('orders', 1), 'ERR_KEY_VERSION_RETIRED');
  });

  it('openNow opens only what open verified before, with the DEK cached and a synchronous AEAD', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    const sealed = await keys.seal('orders', utf8('forty-two'), { dataId: 'a' });
    expect(keys.openNow(sealed)).toBeUndefined();
    expect(text(await keys.open(sealed))).toBe('forty-two');
    expect(text(keys.openNow(sealed) as Uint8Array)).toBe('forty-two');
    // Another nonce (another record) under the same version: its commitment was never checked.
    const other = await keys.seal('orders', utf8('other'), { dataId: 'b' });
    expect(keys.openNow(other)).toBeUndefined();
    // An altered ciphertext fails the AEAD: openNow leaves it to open, which names the failure.
    const altered = { ...sealed, ciphertext: sealed.ciphertext.slice() };
    altered.ciphertext[0] = (altered.ciphertext[0] as number) ^ 1;
    expect(keys.openNow(altered)).toBeUndefined();
    await expectKosError(() => keys.open(altered), 'ERR_DECRYPTION_FAILED');
    await keys.rotate('orders');
    await keys.setMinDecryptVersion('orders', 2);
    await keys.getDek('orders', 2);
    expect(keys.openNow(sealed)).toBeUndefined();
    // WebCrypto opens asynchronously: openNow finds out once, wipes that plaintext, never asks again.
    const webCrypto = createWebCryptoProvider();
    const opened: Array<Promise<Uint8Array>> = [];
    const counting = {
      ...webCrypto,
      aeadOpen: (...args: Parameters<typeof webCrypto.aeadOpen>) => {
        const result = Promise.resolve(webCrypto.aeadOpen(...args));
        opened.push(result);
        return result;
      },
    };
    const web = memoryKeyManager({ crypto: counting }).keys;
    await web.createKey('orders');
    const sealedByWeb = await web.seal('orders', utf8('async'), { dataId: 'c' });
    expect(text(await web.open(sealedByWeb))).toBe('async');
    expect(web.openNow(sealedByWeb)).toBeUndefined();
    expect(web.openNow(sealedByWeb)).toBeUndefined();
    expect(opened).toHaveLength(2);
    expect([...(await (opened[1] as Promise<Uint8Array>))].every((byte) => byte === 0)).toBe(true);
  });

  it('refuses a retired version with its own code, and can bring it back', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    const old = await keys.seal('orders', utf8('old'), { dataId: 'a' });
    await keys.rotate('orders');
    await keys.setMinDecryptVersion('orders', 2);
    await expectKosError(() => keys.open(old), 'ERR_KEY_VERSION_RETIRED');
    await expectKosError(() => keys.getDek('orders', 1), 'ERR_KEY_VERSION_RETIRED');
    await keys.setMinDecryptVersion('orders', 1);
    expect(text(await keys.open(old))).toBe('old');
  });

  it('destroys only retired versions, deleting their shares for good', async () => {
    const { keys, metadata } = setup();
    await keys.createKey('orders');
    const old = await keys.seal('orders', utf8('old'), { dataId: 'a' });
    await keys.rotate('orders');
    await expectKosError(() => keys.destroyVersion('orders', 1), 'ERR_KEY_VERSION_STATE');
    await keys.setMinDecryptVersion('orders', 2);
    await keys.destroyVersion('orders', 1);
    expect(await metadata.listShareSets({ kid: 'orders', version: 1 })).toEqual([]);
    await expectKosError(() => keys.open(old), 'ERR_KEY_VERSION_DESTROYED');
    // Lowering the minimum again leaves a destroyed version destroyed.
    await keys.setMinDecryptVersion('orders', 1);
    await expectKosError(() => keys.open(old), 'ERR_KEY_VERSION_DESTROYED');
  });

  it('retires a version from encryption before nonce wear-out', async () => {
    const { keys, events } = setup({ maxOpsPerVersion: 10, opsReserveBlock: 4 });
    await keys.createKey('orders');
    const versions: number[] = [];
    for (let i = 0; i < 25; i++)
      versions.push((await keys.seal('orders', utf8(`m${i}`), { dataId: `d${i}` })).header.ver);
    // 10 ops per version at most, counted in blocks of 4: never more than 10 seals under one version.
    for (const version of new Set(versions))
      expect(versions.filter((v) => v === version).length).toBeLessThanOrEqual(10);
    expect(Math.max(...versions)).toBeGreaterThanOrEqual(3);
    expect(events.filter((e) => e.type === 'key.rotated' && e.reason === 'wear-out').length).toBeGreaterThanOrEqual(2);
    expect(await keys.getOps('orders', 1)).toBeLessThanOrEqual(12);
  });

  it('rotates on schedule when the primary is older than the period', async () => {
    let now = 1_000_000;
    const { keys } = setup({ rotationPeriodMs: 60_000, clock: () => now });
    await keys.createKey('orders');
    await keys.createKey('invoices');
    expect(await keys.rotateDue()).toEqual([]);
    now += 60_000;
    const scheduler = startRotationScheduler(keys, { intervalMs: 3_600_000 });
    try {
      expect((await scheduler.runOnce()).sort()).toEqual(['invoices', 'orders']);
      expect((await keys.getKey('orders')).primaryVersion).toBe(2);
      expect(await scheduler.runOnce()).toEqual([]);
    } finally {
      scheduler.stop();
    }
  });

  it('rewraps an envelope to the primary version', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    const old = await keys.seal('orders', utf8('keep me'), { dataId: 'r-1' });
    await keys.rotate('orders');
    const rewrapped = await keys.rewrap(old, { dataId: 'r-1' });
    expect(rewrapped.header).toMatchObject({ ver: 2, did: 'r-1' });
    await keys.setMinDecryptVersion('orders', 2);
    expect(text(await keys.open(rewrapped, { dataId: 'r-1' }))).toBe('keep me');
  });

  it('two managers racing to rotate the same key produce one new version', async () => {
    const metadata = createMemoryMetadataStore();
    const nodes = memoryNodes(5);
    const a = new KeyManager({ metadata, nodes });
    const b = new KeyManager({ metadata, nodes });
    await a.createKey('orders');
    const [ra, rb] = await Promise.all([a.rotate('orders'), b.rotate('orders')]);
    expect(ra.version).toBe(2);
    expect(rb.version).toBe(2);
    expect((await a.getKey('orders')).versions).toHaveLength(2);
    expect(await metadata.listShareSets({ kid: 'orders', owner: 'system' })).toHaveLength(2);
  });
});

describe('startup validation', () => {
  it.each([
    ['fewer than 2 nodes', { nodes: memoryNodes(1) }, 'ERR_NOT_ENOUGH_NODES'],
    ['a system set larger than the node count', { systemShares: { n: 6, k: 3 } }, 'ERR_NOT_ENOUGH_NODES'],
    ['k above n', { systemShares: { n: 3, k: 4 } }, 'ERR_INVALID_OPTIONS'],
    ['an unknown algorithm', { algorithm: 'DES' as never }, 'ERR_ALG_NOT_ALLOWED'],
    ['a wear-out limit above 2^32', { maxOpsPerVersion: 2 ** 33 }, 'ERR_INVALID_OPTIONS'],
  ] as const)('refuses %s', async (_what, change, code) => {
    await expectKosError(() => setup(change as never), code);
  });

  it('refuses a tier policy whose medium band needs more nodes than exist', async () => {
    const { createTierPolicy } = await import('@kos/core');
    const tierPolicy = createTierPolicy({ shareBands: [{ minScore: 50, n: 7, k: 4 }] });
    await expectKosError(() => setup({ tierPolicy }), 'ERR_NOT_ENOUGH_NODES');
  });

  it('refuses duplicate node ids', async () => {
    const [one] = memoryNodes(1);
    await expectKosError(() => setup({ nodes: [one!, one!] }), 'ERR_INVALID_OPTIONS');
  });
});

describe('client share sets', () => {
  it('splits the same DEK again for a client, owned by it, and any k of its n shares rebuild it', async () => {
    const { keys, metadata } = setup();
    await keys.createKey('orders');
    const set = await keys.provisionClientSet('orders', 1, 'client-7', { n: 4, k: 3 });
    expect(set).toMatchObject({ owner: 'client-7', n: 4, k: 3, version: 1 });
    const system = (await metadata.listShareSets({ kid: 'orders', owner: 'system' }))[0];
    expect(set.setId).not.toBe(system?.setId);
    const dek = await keys.getDek('orders', 1);
    expect(await keys.rebuildFromSet(set)).toEqual(dek);
    // Same (n, k): reused. Other (n, k): replaced.
    expect((await keys.provisionClientSet('orders', 1, 'client-7', { n: 4, k: 3 })).setId).toBe(set.setId);
    const replaced = await keys.provisionClientSet('orders', 1, 'client-7', { n: 5, k: 2 });
    expect(replaced.setId).not.toBe(set.setId);
    expect(await keys.listClientSets('client-7')).toEqual([replaced]);
  });

  it('deletes a client sets and their shares on revocation', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    const set = await keys.provisionClientSet('orders', 1, 'client-7', { n: 3, k: 2 });
    expect(await keys.deleteClientSets('client-7')).toBe(1);
    expect(await keys.listClientSets('client-7')).toEqual([]);
    await expectKosError(() => keys.rebuildFromSet(set), 'ERR_SHARES_INSUFFICIENT');
  });

  it('refuses the reserved owner name and bad ids', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    await expectKosError(() => keys.provisionClientSet('orders', 1, 'system', { n: 3, k: 2 }), 'ERR_INVALID_ID');
    await expectKosError(() => keys.provisionClientSet('orders', 1, '../x', { n: 3, k: 2 }), 'ERR_INVALID_ID');
  });
});

describe('access rights', () => {
  it('default-deny: a client reads only keys it was granted; revoke wins', async () => {
    const metadata = createMemoryMetadataStore();
    const access = createAccessControl({ metadata });
    expect(await access.isAllowed('client-7', 'orders')).toBe(false);
    await access.grant('client-7', 'orders');
    expect(await access.isAllowed('client-7', 'orders')).toBe(true);
    expect(await access.isAllowed('client-7', 'invoices')).toBe(false);
    await access.grant('client-8', '*');
    expect(await access.isAllowed('client-8', 'invoices')).toBe(true);
    await access.revoke('client-8', 'invoices');
    await expectKosError(() => access.assertAllowed('client-8', 'invoices'), 'ERR_ACCESS_DENIED');
  });

  it('remembers records for cacheMs: its own grants and revocations apply at once, others within cacheMs', async () => {
    const metadata = createMemoryMetadataStore();
    let now = 1_000;
    const cached = createAccessControl({ metadata, cacheMs: 500, clock: () => now });
    const elsewhere = createAccessControl({ metadata });
    expect(cached.peekAllowed?.('client-7', 'orders')).toBeUndefined();
    await cached.grant('client-7', 'orders');
    expect(cached.peekAllowed?.('client-7', 'orders')).toBeUndefined();
    expect(await cached.isAllowed('client-7', 'orders')).toBe(true);
    expect(cached.peekAllowed?.('client-7', 'orders')).toBe(true);
    expect(cached.peekAllowed?.('client-7', 'invoices')).toBe(false);
    // Revoked through this instance: at once, with or without waiting.
    await cached.revoke('client-7', 'orders');
    expect(cached.peekAllowed?.('client-7', 'orders')).toBeUndefined();
    expect(await cached.isAllowed('client-7', 'orders')).toBe(false);
    // Granted elsewhere: seen once the remembered record is older than cacheMs.
    await elsewhere.grant('client-7', 'orders');
    now += 499;
    expect(await cached.isAllowed('client-7', 'orders')).toBe(false);
    now += 1;
    expect(cached.peekAllowed?.('client-7', 'orders')).toBeUndefined();
    expect(await cached.isAllowed('client-7', 'orders')).toBe(true);
    expect(cached.peekAllowed?.('../x', 'orders')).toBeUndefined();
  });

  it('does not remember a record read before its own revocation but answered after it', async () => {
    const metadata = createMemoryMetadataStore();
    // The next read is held after it has read the store (so it carries the record before the revocation).
    let hold: Promise<void> | undefined;
    let release = () => {};
    const store = {
      ...metadata,
      async getAccess(clientId: string) {
        const record = await metadata.getAccess(clientId);
        const held = hold;
        hold = undefined;
        if (held) await held;
        return record;
      },
    };
    const access = createAccessControl({ metadata: store, cacheMs: 60_000 });
    await access.grant('client-7', 'orders');
    hold = new Promise((resolve) => {
      release = resolve;
    });
    const reading = access.isAllowed('client-7', 'orders');
    await access.revoke('client-7', 'orders');
    release();
    expect(await reading).toBe(true); // it began before the revocation
    expect(access.peekAllowed?.('client-7', 'orders')).toBeUndefined();
    expect(await access.isAllowed('client-7', 'orders')).toBe(false);
    expect(access.peekAllowed?.('client-7', 'orders')).toBe(false);
  });

  it('remembers nothing by default, and refuses a bad cacheMs', () => {
    const access = createAccessControl({ metadata: createMemoryMetadataStore() });
    expect(access.peekAllowed?.('client-7', 'orders')).toBeUndefined();
    for (const cacheMs of [-1, 1.5, 60_001, Number.NaN]) {
      expect(() => createAccessControl({ metadata: createMemoryMetadataStore(), cacheMs })).toThrow(/cacheMs/);
    }
  });

  it('default-allow: everything except what was revoked', async () => {
    const access = createAccessControl({ metadata: createMemoryMetadataStore(), defaultDeny: false });
    expect(await access.isAllowed('client-7', 'orders')).toBe(true);
    await access.revoke('client-7', 'orders');
    expect(await access.isAllowed('client-7', 'orders')).toBe(false);
    const error = await access.assertAllowed('client-7', 'orders').catch((e: unknown) => e);
    expect(isKosError(error, 'ERR_ACCESS_DENIED')).toBe(true);
  });
});
