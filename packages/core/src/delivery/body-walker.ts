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
