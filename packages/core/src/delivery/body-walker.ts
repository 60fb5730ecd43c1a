import { isCompactEnvelope, isEnvelopeJson } from '../envelope/codec.js';
import { KosError } from '../errors.js';

function tooDeep(): KosError {
  return new KosError('ERR_RESPONSE_ENVELOPE_INVALID', `the response body nests deeper than ${64} levels`);
}

/** Most nesting KOS walks into; deeper bodies are refused rather than risking the stack. */
export const MAX_BODY_DEPTH = 64;

const isEnvelope = (value: unknown): boolean => isCompactEnvelope(value) || isEnvelopeJson(value);

/**
 * Every value in a JSON value that `match` accepts (not looking inside a match), at any depth
 * up to MAX_BODY_DEPTH. Deeper nesting is refused with ERR_RESPONSE_ENVELOPE_INVALID when
 * `refuseDeeper` is set, and otherwise not looked at.
 */
export function findMatching(
  value: unknown,
  match: (value: unknown) => boolean,
  refuseDeeper: boolean,
  depth = 0,
  found: unknown[] = [],
): unknown[] {
  if (depth > MAX_BODY_DEPTH) {
    if (refuseDeeper && typeof value === 'object' && value !== null) throw tooDeep();
    return found;
  }
  if (match(value)) {
    found.push(value);
  } else if (typeof value === 'object' && value !== null) {
    for (const item of Array.isArray(value) ? value : Object.values(value)) {
      findMatching(item, match, refuseDeeper, depth + 1, found);
    }
  }
  return found;
}

/** A copy of `value` with every value `match` accepts replaced by `replace(value)` (the input is not changed). */
export function replaceMatching(
  value: unknown,
  match: (value: unknown) => boolean,
  replace: (value: unknown) => unknown,
  depth = 0,
): unknown {
  if (depth > MAX_BODY_DEPTH) return value;
  if (match(value)) return replace(value);
  if (Array.isArray(value)) return value.map((item) => replaceMatching(item, match, replace, depth + 1));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      const replaced = replaceMatching(item, match, replace, depth + 1);
      // An own "__proto__" field is data (JSON.parse makes it so): keep it as an own property.
      if (key === '__proto__')
        Object.defineProperty(out, key, { value: replaced, enumerable: true, writable: true, configurable: true });
      else out[key] = replaced;
    }
    return out;
  }
  return value;
}

/**
 * Every envelope (JSON form or compact string) in a JSON value, at any depth up to
 * MAX_BODY_DEPTH; a deeper body is refused (ERR_RESPONSE_ENVELOPE_INVALID) rather than passed
 * through with envelopes KOS did not look at.
 */
export function findEnvelopes(value: unknown): unknown[] {
  return findMatching(value, isEnvelope, true);
}

/** A copy of `value` with every envelope replaced by `replace(envelope)` (the input is not changed). */
export function replaceEnvelopes(value: unknown, replace: (envelope: unknown) => unknown): unknown {
  return replaceMatching(value, isEnvelope, replace);
}

/** Where a matched value sits in a snapshot: `holder[key]`, or the root when `holder` is undefined. */
export interface BodySlot {
  readonly holder: Record<string, unknown> | unknown[] | undefined;
  readonly key: string | number;
  readonly value: unknown;
}

/** A response body as JSON.stringify would send it, as plain data, with the envelopes found in it. */
export interface BodySnapshot {
  readonly root: unknown;
  readonly slots: readonly BodySlot[];
}

/**
 * What JSON.stringify serialises for `value` under `key` (SerializeJSONProperty, steps 2–4):
 * `toJSON(key)` applied, boxed primitives unwrapped.
 */
function jsonView(value: unknown, key: string): unknown {
  if ((typeof value === 'object' && value !== null) || typeof value === 'bigint') {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') value = toJSON.call(value, key);
  }
  if (typeof value === 'object' && value !== null) {
    if (value instanceof Number) return Number(value);
    if (value instanceof String) return String(value);
    if (value instanceof Boolean) return value.valueOf();
  }
  return value;
}

const omitted = (value: unknown): boolean =>
  value === undefined || typeof value === 'function' || typeof value === 'symbol';

/**
 * One pass over a route's response body: a plain copy of what JSON.stringify would send
 * (toJSON applied, boxed primitives unwrapped, getters read once, functions and undefined
 * dropped from objects and null in arrays) and every envelope in it, with where it sits. It
 * stands for `JSON.parse(JSON.stringify(body))` followed by `findEnvelopes` without the text
 * round trip. Bodies deeper than MAX_BODY_DEPTH (cycles included) are refused with
 * ERR_RESPONSE_ENVELOPE_INVALID; a BigInt with ERR_RESPONSE_ENVELOPE_INVALID too (JSON cannot
 * carry it).
 */
export function snapshotBody(body: unknown): BodySnapshot {
  const slots: BodySlot[] = [];
  const root = snapshotValue(body, '', undefined, '', 0, slots);
  return { root, slots };
}

/** One value of `snapshotBody` (module level: no closure to allocate per body). */
function snapshotValue(
  raw: unknown,
  key: string,
  holder: BodySlot['holder'],
  slot: string | number,
  depth: number,
  slots: BodySlot[],
): unknown {
  const value = jsonView(raw, key);
  if (typeof value === 'bigint') {
    throw new KosError('ERR_RESPONSE_ENVELOPE_INVALID', 'the response body holds a BigInt, which JSON cannot carry');
  }
  if (typeof value !== 'object' || value === null) {
    if (isCompactEnvelope(value)) slots.push({ holder, key: slot, value });
    return value;
  }
  if (depth > MAX_BODY_DEPTH) throw tooDeep();
  const mark = slots.length;
  let out: Record<string, unknown> | unknown[];
  if (Array.isArray(value)) {
    const list: unknown[] = new Array(value.length);
    for (let i = 0; i < value.length; i++) {
      const item = snapshotValue(value[i], String(i), list, i, depth + 1, slots);
      list[i] = omitted(item) ? null : item;
    }
    out = list;
  } else {
    const record: Record<string, unknown> = {};
    const source = value as Record<string, unknown>;
    for (const name of Object.keys(source)) {
      const item = snapshotValue(source[name], name, record, name, depth + 1, slots);
      if (omitted(item)) continue;
      // An own "__proto__" field is data (JSON.parse makes it so): keep it as an own property.
      if (name === '__proto__')
        Object.defineProperty(record, name, { value: item, enumerable: true, writable: true, configurable: true });
      else record[name] = item;
    }
    out = record;
  }
  if (isEnvelopeJson(out)) {
    // An envelope is replaced whole: nothing inside it is looked at on its own.
    slots.length = mark;
    slots.push({ holder, key: slot, value: out });
  }
  return out;
}

/** Puts `replacements[i]` where `snapshot.slots[i]` was, in the snapshot's own copy; returns the new root. */
export function fillSlots(snapshot: BodySnapshot, replacements: readonly unknown[]): unknown {
  let root = snapshot.root;
  snapshot.slots.forEach((slot, i) => {
    if (slot.holder === undefined) root = replacements[i];
    else if (slot.key === '__proto__')
      Object.defineProperty(slot.holder, slot.key, {
        value: replacements[i],
        enumerable: true,
        writable: true,
        configurable: true,
      });
    else (slot.holder as Record<string | number, unknown>)[slot.key] = replacements[i];
  });
  return root;
}
