import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  createNodeCryptoProvider,
  type EnvelopeJson,
  encodeEnvelope,
  findEnvelopes,
  MAX_BODY_DEPTH,
  sealWithKey,
  snapshotBody,
  utf8,
} from '../src/index.js';
import { expectKosError } from './helpers.js';

// snapshotBody stands for JSON.parse(JSON.stringify(body)) + findEnvelopes in `deliver`: what KOS
// looks at must be exactly what JSON would have sent, or an envelope could leave unshaped.

let json: EnvelopeJson;
let compact: string;

beforeAll(async () => {
  const envelope = await sealWithKey({
    crypto: createNodeCryptoProvider(),
    key: new Uint8Array(32).fill(3),
    kid: 'records',
    version: 1,
    dataId: 'r1',
    plaintext: utf8('{"a":1}'),
  });
  json = encodeEnvelope(envelope, 'json');
  compact = encodeEnvelope(envelope, 'compact');
});

/** The reference the snapshot replaces. */
const roundTrip = (value: unknown): unknown => {
  const text = JSON.stringify(value);
  return text === undefined ? undefined : JSON.parse(text);
};

describe('snapshotBody', () => {
  it('sends what JSON.stringify sends, for any value (toJSON, boxed primitives, dates, maps, typed arrays, holes)', () => {
    fc.assert(
      fc.property(
        fc.anything({
          withBoxedValues: true,
          withDate: true,
          withMap: true,
          withSet: true,
          withTypedArray: true,
          withSparseArray: true,
          withNullPrototype: true,
          withObjectString: true,
        }),
        (value) => {
          expect(JSON.stringify(snapshotBody(value).root)).toBe(JSON.stringify(value));
        },
      ),
      { numRuns: 500, seed: 20261129 },
    );
  });

  it('finds the envelopes findEnvelopes finds in the JSON round trip, in the same order', () => {
    const withEnvelopes = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: 'small' },
        fc.constantFrom<unknown>('plain', 1, null, true),
        fc.constant(null).map(() => ({ ...json })),
        fc.constant(null).map(() => compact),
        fc.array(tie('node'), { maxLength: 4 }),
        fc.dictionary(fc.string({ maxLength: 5 }), tie('node'), { maxKeys: 4 }),
      ),
    })).node;
    fc.assert(
      fc.property(withEnvelopes, (value) => {
        const found = snapshotBody(value).slots.map((slot) => JSON.stringify(slot.value));
        expect(found).toEqual(findEnvelopes(roundTrip(value)).map((envelope) => JSON.stringify(envelope)));
      }),
      { numRuns: 300, seed: 7 },
    );
  });

  it('sees an envelope that only appears through toJSON or a boxed string', () => {
    const viaToJson = { record: { toJSON: () => ({ ...json }) } };
    const viaBoxed = { list: [new String(compact)] };
    const viaBoxedField = { ...json, ct: new String(json.ct) };
    expect(snapshotBody(viaToJson).slots).toHaveLength(1);
    expect(snapshotBody(viaBoxed).slots.map((slot) => slot.value)).toEqual([compact]);
    expect(snapshotBody(viaBoxedField).slots.map((slot) => slot.value)).toEqual([{ ...json }]);
  });

  it('reads each getter once, so a changing getter cannot show KOS one value and the client another', () => {
    let reads = 0;
    const body = {
      get data() {
        reads += 1;
        return reads === 1 ? { ...json } : compact;
      },
    };
    const snapshot = snapshotBody(body);
    expect(reads).toBe(1);
    expect(snapshot.slots.map((slot) => slot.value)).toEqual([{ ...json }]);
  });

  it('does not look inside an envelope', () => {
    const nested = { ...json, did: compact };
    // Not an envelope field value (did must be a string id): the outer object is the one match.
    expect(snapshotBody({ x: nested }).slots.map((slot) => slot.value)).toEqual([nested]);
  });

  it('keeps an own "__proto__" field as data', () => {
    const body = JSON.parse(`{"__proto__":{"kept":true},"x":1}`) as object;
    const root = snapshotBody(body).root as Record<string, unknown>;
    expect(Object.getPrototypeOf(root)).toBe(Object.prototype);
    expect(JSON.stringify(root)).toBe('{"__proto__":{"kept":true},"x":1}');
  });

  it('refuses cycles, bodies deeper than MAX_BODY_DEPTH and BigInts with a typed error', async () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    await expectKosError(() => snapshotBody(cycle), 'ERR_RESPONSE_ENVELOPE_INVALID');
    let deep: unknown = 1;
    for (let i = 0; i <= MAX_BODY_DEPTH + 1; i++) deep = { d: deep };
    await expectKosError(() => snapshotBody(deep), 'ERR_RESPONSE_ENVELOPE_INVALID');
    await expectKosError(() => snapshotBody({ n: 1n }), 'ERR_RESPONSE_ENVELOPE_INVALID');
    let allowed: unknown = 1;
    for (let i = 0; i < MAX_BODY_DEPTH; i++) allowed = { d: allowed };
    expect(JSON.stringify(snapshotBody(allowed).root)).toBe(JSON.stringify(allowed));
  });

  it('copies: the route value is never changed', () => {
    const body = { items: [{ ...json }, compact] };
    const before = JSON.stringify(body);
    const snapshot = snapshotBody(body);
    expect(snapshot.root).not.toBe(body);
    expect(JSON.stringify(body)).toBe(before);
  });
});
