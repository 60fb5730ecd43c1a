import { decodeEnvelope, type Envelope, type EnvelopeForm, encodeEnvelope, toBase64url, utf8 } from '@kos/core';
import { describe, expect, it } from 'vitest';
import { expectKosError } from '../packages/core/test/helpers.js';
import { memoryKeyManager, text } from './support/key-manager.js';

const setup = memoryKeyManager;

describe('KeyManager.rewrapMany', () => {
  it('rewraps envelopes of several keys and versions, in any form, in order', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    await keys.createKey('users');
    const inputs: unknown[] = [];
    const expected: Array<{ did: string; plain: string; kid: string }> = [];
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 6; i++) {
        const kid = i % 2 ? 'users' : 'orders';
        const did = `${kid}-${round}-${i}`;
        const plain = `value ${round} ${i}`;
        const envelope = await keys.seal(kid, utf8(plain), { dataId: did });
        inputs.push(encodeEnvelope(envelope, (['json', 'compact', 'binary'] as const)[i % 3] as EnvelopeForm));
        expected.push({ did, plain, kid });
      }
      await keys.rotate('orders');
    }
    await keys.rotate('users');
    const out = await keys.rewrapMany(inputs);
    expect(out).toHaveLength(inputs.length);
    for (const [i, envelope] of out.entries()) {
      const want = expected[i] as (typeof expected)[number];
      expect(envelope.header).toMatchObject({ kid: want.kid, did: want.did, ver: want.kid === 'orders' ? 3 : 2 });
      expect(text(await keys.open(envelope, { dataId: want.did }))).toBe(want.plain);
    }
    // Old versions can be retired now: nothing still needs them.
    await keys.setMinDecryptVersion('orders', 3);
    await keys.setMinDecryptVersion('users', 2);
    for (const [i, envelope] of out.entries()) {
      expect(text(await keys.open(envelope))).toBe(expected[i]?.plain);
    }
    expect(await keys.rewrapMany([])).toEqual([]);
  });

  it('counts one operation per seal and rotates on wear-out in the middle of a batch', async () => {
    const { keys, events } = setup({ maxOpsPerVersion: 10, opsReserveBlock: 4 });
    await keys.createKey('orders');
    const old: Envelope[] = [];
    for (let i = 0; i < 8; i++) old.push(await keys.seal('orders', utf8(`v${i}`), { dataId: `d${i}` }));
    await keys.rotate('orders');
    const inputs = Array.from({ length: 25 }, (_, i) => old[i % old.length]);
    const out = await keys.rewrapMany(inputs);
    const versions = out.map((envelope) => envelope.header.ver);
    // Never more than 10 seals under one version, versions only go up.
    for (const version of new Set(versions)) {
      expect(versions.filter((v) => v === version).length).toBeLessThanOrEqual(10);
    }
    expect([...versions].sort((a, b) => a - b)).toEqual(versions);
    expect(Math.max(...versions)).toBeGreaterThanOrEqual(4);
    expect(events.filter((e) => e.type === 'key.rotated' && e.reason === 'wear-out').length).toBeGreaterThanOrEqual(2);
    for (const [i, envelope] of out.entries()) {
      expect(text(await keys.open(envelope, { dataId: `d${i % 8}` }))).toBe(`v${i % 8}`);
    }
    // The counter saw every seal.
    expect(await keys.getOps('orders', versions[0] as number)).toBeGreaterThanOrEqual(
      versions.filter((v) => v === versions[0]).length,
    );
  });

  it('rejects the whole batch when one envelope is on a retired version', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    const v1 = await keys.seal('orders', utf8('a'), { dataId: 'a' });
    await keys.rotate('orders');
    const v2 = await keys.seal('orders', utf8('b'), { dataId: 'b' });
    await keys.rotate('orders');
    await keys.setMinDecryptVersion('orders', 2);
    await expectKosError(() => keys.rewrapMany([v2, v1]), 'ERR_KEY_VERSION_RETIRED');
  });

  it('checks the key commitment and the associated data of every envelope', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    const good = await keys.seal('orders', utf8('a'), { dataId: 'a' });
    const other = await keys.seal('orders', utf8('b'), { dataId: 'b' });
    await keys.rotate('orders');
    const json = encodeEnvelope(good, 'json');
    // Another nonce's commitment: the commitment check fails before the AEAD runs.
    const wrongCommitment = { ...json, kc: toBase64url(other.header.kc) };
    await expectKosError(() => keys.rewrapMany([good, wrongCommitment]), 'ERR_DECRYPTION_FAILED');
    // The ciphertext moved to another record: the AAD (data id) no longer matches.
    const moved = { ...json, did: 'b' };
    await expectKosError(() => keys.rewrapMany([moved, good]), 'ERR_DECRYPTION_FAILED');
    const flipped = encodeEnvelope(good, 'binary');
    flipped[flipped.length - 1] = (flipped.at(-1) as number) ^ 1;
    await expectKosError(() => keys.rewrapMany([flipped]), 'ERR_DECRYPTION_FAILED');
    await expectKosError(() => keys.rewrapMany([{ ...json, kos: 2 }]), 'ERR_ENVELOPE_UNSUPPORTED_VERSION');
  });

  it('rewrap checks the expected data id, and decodes its input once', async () => {
    const { keys } = setup();
    await keys.createKey('orders');
    const envelope = await keys.seal('orders', utf8('a'), { dataId: 'a' });
    await keys.rotate('orders');
    await expectKosError(() => keys.rewrap(envelope, { dataId: 'b' }), 'ERR_DATA_ID_MISMATCH');
    const compact = encodeEnvelope(envelope, 'compact');
    const rewrapped = await keys.rewrap(compact, { dataId: 'a' });
    expect(decodeEnvelope(encodeEnvelope(rewrapped, 'compact')).header).toMatchObject({ ver: 2, did: 'a' });
  });
});
