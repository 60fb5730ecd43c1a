/**
 * Shared settings and checks of the fuzz suites (tests/fuzz/*.fuzz.test.ts).
 *
 * Every property runs with a FIXED seed and a modest number of runs, so CI is short and
 * repeatable. For a long run:
 *
 *   FUZZ_RUNS=20000 npx vitest run tests/fuzz
 *   FUZZ_RUNS=5000 FUZZ_SEED=$RANDOM npx vitest run tests/fuzz     # another corner of the space
 *
 * A failure prints fast-check's seed, path and shrunk counterexample; replay it with the
 * same FUZZ_SEED (and FUZZ_RUNS), then keep the counterexample as a named regression case.
 */
import { ERROR_STATUS, isKosError, type KosErrorCode, toBase64url } from '@kos/core';
import fc from 'fast-check';

// Read once: the long-run knobs (not build inputs, so not declared to turbo).
const { FUZZ_RUNS: runsSetting, FUZZ_SEED: seedSetting } = process.env;
/** Runs per property (default 200). */
export const FUZZ_RUNS = positiveInt(runsSetting, 200);
/** Seed of every property (default fixed). */
export const FUZZ_SEED = int(seedSetting, 0x6b05);

function int(value: string | undefined, fallback: number): number {
  if (value === undefined || value.trim() === '') return fallback;
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed)) throw new Error(`expected an integer, got ${JSON.stringify(value)}`);
  return parsed;
}

function positiveInt(value: string | undefined, fallback: number): number {
  const parsed = int(value, fallback);
  if (parsed < 1) throw new Error(`FUZZ_RUNS must be at least 1, got ${parsed}`);
  return parsed;
}

/**
 * fast-check parameters for one property: the fixed seed and FUZZ_RUNS scaled by `share`
 * (expensive properties — real HTTP, three frameworks — run a fraction of the default).
 * `timeLimitMs` (scaled like the runs) bounds the whole property, shrinking included: a
 * failure found is still reported (with the smallest counterexample reached by then).
 */
export function fuzzParams<T>(share = 1, timeLimitMs?: number): fc.Parameters<T> {
  return {
    seed: FUZZ_SEED,
    numRuns: Math.max(1, Math.round(FUZZ_RUNS * share)),
    ...(timeLimitMs === undefined ? {} : { interruptAfterTimeLimit: Math.ceil((timeLimitMs * FUZZ_RUNS) / 200) }),
  };
}

/** Vitest timeout for a property: generous enough for FUZZ_RUNS, fixed in CI. */
export function fuzzTimeout(baseMs: number, share = 1): number {
  return Math.max(baseMs, Math.ceil((baseMs * FUZZ_RUNS * share) / 200));
}

/** Rejects with a "hang" error when `work` does not settle within `ms` (no property may hang). */
export async function within<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`HANG: ${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Outcome of a call that must either succeed or throw a typed KosError. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; code: KosErrorCode; error: Error };

/**
 * Runs `action` (bounded by `ms`); anything thrown that is not a KosError fails the property
 * (with the foreign error as cause), as does a hang.
 */
export async function typedOutcome<T>(action: () => T | Promise<T>, ms = 5_000, what = 'call'): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await within(Promise.resolve().then(action), ms, what) };
  } catch (error) {
    if (isKosError(error)) return { ok: false, code: error.code, error };
    throw new Error(`${what} threw a non-KosError: ${describeError(error)}`, { cause: error });
  }
}

export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

/** Throws (failing the property) unless `code` is one of `allowed`. */
export function expectCode(code: string, allowed: readonly string[], context: string): void {
  if (!allowed.includes(code)) throw new Error(`${context}: unexpected code ${code} (allowed: ${allowed.join(', ')})`);
}

/** A status KOS may answer with: one of the ERROR_STATUS table, or 200 / 201 / 204. */
export const ALLOWED_STATUSES: ReadonlySet<number> = new Set([200, 201, 204, ...Object.values(ERROR_STATUS)]);

/**
 * Checks a KOS error body: exactly `{ error: { code, message } }`, a known code (never the
 * ERR_INTERNAL of an untyped exception), a string message, the status of that code.
 */
export function assertErrorBody(status: number, body: unknown, context: string): KosErrorCode {
  const fail = (why: string) => {
    throw new Error(`${context}: ${why} (status ${status}, body ${preview(body)})`);
  };
  if (typeof body !== 'object' || body === null || Array.isArray(body)) fail('error body is not an object');
  const outer = body as Record<string, unknown>;
  if (Object.keys(outer).join() !== 'error') fail('error body must have exactly one field, error');
  const inner = outer.error as Record<string, unknown> | null;
  if (typeof inner !== 'object' || inner === null || Array.isArray(inner)) fail('error is not an object');
  const fields = Object.keys(inner as object).sort();
  if (fields.join() !== 'code,message') fail('error must have exactly code and message');
  const { code, message } = inner as { code: unknown; message: unknown };
  if (typeof code !== 'string' || !/^ERR_[A-Z_]+$/.test(code)) fail('code does not match /^ERR_/');
  if (!Object.hasOwn(ERROR_STATUS, code as string)) fail(`code ${String(code)} is not in ERROR_STATUS`);
  if (typeof message !== 'string' || message.length === 0) fail('message is not a non-empty string');
  if (code === 'ERR_INTERNAL') fail('ERR_INTERNAL: an untyped exception reached the client');
  if (ERROR_STATUS[code as KosErrorCode] !== status) {
    fail(`status ${status} is not the status of ${String(code)} (${ERROR_STATUS[code as KosErrorCode]})`);
  }
  return code as KosErrorCode;
}

/** Fails when `text` contains any of the secrets (base64url strings or raw bytes as latin1/base64url). */
export function assertNoSecret(text: string, secrets: Iterable<string>, context: string): void {
  for (const secret of secrets) {
    if (secret.length >= 8 && text.includes(secret)) {
      throw new Error(`${context}: response contains secret material (${secret.slice(0, 4)}…)`);
    }
  }
}

/**
 * Forms under which secret bytes may leak: hex, standard base64, and base64url at each of the
 * three byte alignments (inside a longer base64url string only the characters made of the
 * secret's bits alone are fixed: those are the forms).
 */
export function secretForms(bytes: Uint8Array): string[] {
  const forms = new Set<string>([Buffer.from(bytes).toString('base64'), Buffer.from(bytes).toString('hex')]);
  for (const pad of [0, 1, 2]) {
    const encoded = toBase64url(new Uint8Array([...new Uint8Array(pad), ...bytes]));
    forms.add(encoded.slice(Math.ceil((pad * 8) / 6), Math.floor(((pad + bytes.length) * 8) / 6)));
  }
  return [...forms].filter((form) => form.length >= 16);
}

export function preview(value: unknown, max = 300): string {
  let text: string | undefined;
  try {
    text =
      typeof value === 'string'
        ? value
        : JSON.stringify(value, (_key, item) => (item instanceof Uint8Array ? `<${item.length} bytes>` : item));
  } catch {
    text = undefined;
  }
  if (text === undefined) {
    try {
      text = String(value);
    } catch {
      text = Object.prototype.toString.call(value);
    }
  }
  return text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text;
}

// ---------------------------------------------------------------------------------------------
// Generators shared by several suites
// ---------------------------------------------------------------------------------------------

const BASE64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * `arb` one time in `oneIn`, else null (fc.option's `freq` is the other way round: it gives nil
 * one time in `freq`).
 */
export function sometimes<T>(arb: fc.Arbitrary<T>, oneIn: number): fc.Arbitrary<T | null> {
  return fc.oneof({ arbitrary: fc.constant(null), weight: oneIn - 1 }, { arbitrary: arb, weight: 1 });
}

/** Strings over the base64url alphabet (valid or not: any length, any tail bits). */
export const base64urlish = (maxLength = 64): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...BASE64URL_ALPHABET), maxLength });

/** Canonical base64url of random bytes (lengths spread over the whole range, not just small ones). */
export const base64urlBytes = (maxLength = 64, minLength = 0): fc.Arbitrary<string> =>
  fc.uint8Array({ minLength, maxLength, size: 'max' }).map((bytes) => toBase64url(bytes));

const ID_FIRST = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** Valid ids (ID_PATTERN) — built from characters, as fc.stringMatching is slow to generate. */
export const validId: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom(...ID_FIRST), fc.string({ unit: fc.constantFrom(...`${ID_FIRST}._-`), maxLength: 12 }))
  .map(([first, rest]) => first + rest);

/** Lower-case ids such as record ids: `[a-z0-9-]{1,20}`. */
export const simpleId: fc.Arbitrary<string> = fc.string({
  unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789-'),
  minLength: 1,
  maxLength: 20,
});

/** Strings that stress parsers: unicode incl. lone surrogates, control chars, very long runs. */
export const nastyString: fc.Arbitrary<string> = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    '\uD800',
    '\uDFFF',
    '\uFFFD',
    '../../etc/passwd',
    '..%2f..%2fetc',
    '%2e%2e',
    '__proto__',
    'constructor',
    'toString',
    'null',
    'NaN',
    'kos1.',
    '{',
    '{"kos":1}',
    'a'.repeat(129),
    'é',
  ),
  fc
    .tuple(fc.constantFrom('a', '\u00e9', '%', '/', '\uD83D\uDE00'), fc.integer({ min: 100, max: 5000 }))
    .map(([c, n]) => c.repeat(n)),
);

/** Any JSON-ish value, including numbers JSON cannot carry and keys with special meaning. */
export const junkValue: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom(null, undefined, true, false, 0, -0, -1, 1, 2 ** 32, 2 ** 53, -(2 ** 31), 1.5, 1e308),
    fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY),
    fc.integer(),
    fc.double(),
    nastyString,
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(
      fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('__proto__', 'kos', 'ct', 'toJSON')),
      tie('value'),
      {
        maxKeys: 4,
      },
    ),
  ),
})).value;

/** encodeURIComponent that never throws (lone surrogates become %EF%BF%BD, as UTF-8 encoding does). */
export function percentEncode(text: string): string {
  return Array.from(text, (c) =>
    /^[A-Za-z0-9\-_.!~*'()]$/.test(c)
      ? c
      : Array.from(Buffer.from(c, 'utf8'), (byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  ).join('');
}
