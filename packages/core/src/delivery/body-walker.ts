import { isCompactEnvelope, isEnvelopeJson } from '../envelope/codec.js';
import { KosError } from '../errors.js';

function tooDeep(): KosError {
  return new KosError('ERR_RESPONSE_ENVELOPE_INVALID', `the response body nests deeper than ${64} levels`);
}

/** Most nesting KOS walks into; deeper bodies are refused rather than risking the stack. */
export const MAX_BODY_DEPTH = 64;

/**
 * Every envelope (JSON form or compact string) in a JSON value, at any depth up to
 * MAX_BODY_DEPTH; a deeper body is refused (ERR_RESPONSE_ENVELOPE_INVALID) rather than passed
 * through with envelopes KOS did not look at.
 */
export function findEnvelopes(value: unknown, depth = 0, found: unknown[] = []): unknown[] {
  if (depth > MAX_BODY_DEPTH) {
    if (typeof value === 'object' && value !== null) throw tooDeep();
    return found;
  }
  if (isCompactEnvelope(value) || isEnvelopeJson(value)) {
    found.push(value);
  } else if (Array.isArray(value)) {
    for (const item of value) findEnvelopes(item, depth + 1, found);
  } else if (typeof value === 'object' && value !== null) {
    for (const item of Object.values(value)) findEnvelopes(item, depth + 1, found);
  }
  return found;
}

/** A copy of `value` with every envelope replaced by `replace(envelope)` (the input is not changed). */
export function replaceEnvelopes(value: unknown, replace: (envelope: unknown) => unknown, depth = 0): unknown {
  if (depth > MAX_BODY_DEPTH) return value;
  if (isCompactEnvelope(value) || isEnvelopeJson(value)) return replace(value);
  if (Array.isArray(value)) return value.map((item) => replaceEnvelopes(item, replace, depth + 1));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      const replaced = replaceEnvelopes(item, replace, depth + 1);
      // An own "__proto__" field is data (JSON.parse makes it so): keep it as an own property.
      if (key === '__proto__')
        Object.defineProperty(out, key, { value: replaced, enumerable: true, writable: true, configurable: true });
      else out[key] = replaced;
    }
    return out;
  }
  return value;
}
