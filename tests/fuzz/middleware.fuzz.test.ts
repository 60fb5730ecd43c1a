/**
 * Fuzzing the KOS middleware in Express, Hono and Koa (issue 5, item 4; DESIGN invariants
 * 11, 14, 15): apps built with `test-support/frameworks.ts` and a configured runtime (as in
 * `tests/middleware/conformance.test.ts`), served on loopback and called over real HTTP.
 *
 * Two kinds of input:
 * - REQUESTS: arbitrary Authorization (junk, and real tokens with any score), spoofed
 *   x-trust-score, cookies, huge headers (within Node's limits), query strings, JSON and
 *   non-JSON bodies, junk Host headers, paths under the KMS mount prefix — against routes that
 *   return envelopes, lists, nested envelopes, compact strings, binary envelopes and plain JSON;
 * - ROUTE RESPONSES: what the route returns is fuzzed (arbitrary JSON holding real envelopes,
 *   corrupted envelopes, envelope-like objects, compact strings, binary bodies).
 *
 * Every answer is either a KOS error `{ error: { code, message } }` with a typed code (never
 * ERR_INTERNAL) and its status, or a well-formed response for the caller's tier (the tier
 * from the signed token only): low tier = the route's body with every envelope replaced by its
 * plaintext; high/medium = every envelope replaced by its tiered item. Never a 500 without a
 * code, never a crash; no response carries share bytes, and a low- or medium-tier response
 * never carries a DEK.
 *
 * Fixed seed, 200 runs per property by default (each run calls all three frameworks); long run:
 *
 *   FUZZ_RUNS=5000 npx vitest run tests/fuzz/middleware.fuzz.test.ts
 *   FUZZ_RUNS=20000 FUZZ_SEED=7 npx vitest run tests/fuzz/middleware.fuzz.test.ts
 */
import { Agent, createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  createAccessControl,
  decodeEnvelope,
  type EnvelopeJson,
  encodeEnvelope,
  isCompactEnvelope,
  isEnvelopeJson,
  isValidId,
  type KosErrorCode,
  type ShareStore,
  type StoreCallOptions,
  type StoredShare,
  toBase64url,
  utf8,
} from '@kos/core';
import { createKosRuntime, createMemoryMetadataStore, type KosRuntime } from '@kos/kms-adapters';
import fc from 'fast-check';
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildApp,
  FRAMEWORKS,
  type Framework,
  type RouteResult,
  type TestRoute,
} from '../../test-support/frameworks.js';
import { memoryNodes } from '../support/nodes.js';
import {
  assertErrorBody,
  assertNoSecret,
  fuzzParams,
  fuzzTimeout,
  junkValue,
  nastyString,
  percentEncode,
  preview,
  secretForms,
  sometimes,
  within,
} from './fuzz-support.js';

const ISSUER = 'https://idp.test';
const AUDIENCE = 'records-api';

const IDENTITY_CODES: readonly KosErrorCode[] = [
  'ERR_UNAUTHENTICATED',
  'ERR_TOKEN_INVALID',
  'ERR_TOKEN_EXPIRED',
  'ERR_SCORE_INVALID',
  'ERR_SCORE_BELOW_FLOOR',
];
const DELIVERY_CODES: readonly KosErrorCode[] = [
  'ERR_RESPONSE_ENVELOPE_INVALID',
  'ERR_ACCESS_DENIED',
  'ERR_DECRYPTION_FAILED',
  'ERR_KEY_NOT_FOUND',
  'ERR_KEY_VERSION_NOT_FOUND',
  'ERR_KEY_VERSION_RETIRED',
  'ERR_KEY_VERSION_DESTROYED',
];

type Tier = 'low' | 'medium' | 'high';

/** Clients granted the `records` key (everyone else, e.g. mallory, may read no key). */
const GRANTED: readonly string[] = ['alice', 'bob'];

/** The tier DESIGN gives a score (50 and 80 are medium); below 10 is refused (runtime config). */
function tierOf(score: number): Tier | 'denied' {
  if (score < 10) return 'denied';
  if (score < 50) return 'low';
  return score <= 80 ? 'medium' : 'high';
}

/** A share store that remembers every share value it is given (to scan responses for them). */
class RecordingStore implements ShareStore {
  constructor(
    readonly inner: ShareStore,
    readonly seen: Set<string>,
  ) {}
  get nodeId() {
    return this.inner.nodeId;
  }
  get zone() {
    return this.inner.zone;
  }
  put(share: StoredShare, options?: StoreCallOptions) {
    for (const form of secretForms(share.value)) this.seen.add(form);
    return this.inner.put(share, options);
  }
  get(shareId: string, options?: StoreCallOptions) {
    return this.inner.get(shareId, options);
  }
  delete(shareId: string, options?: StoreCallOptions) {
    return this.inner.delete(shareId, options);
  }
}

/** Canonical JSON (sorted own keys, `__proto__` included) to compare bodies exactly. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${canonical((value as Record<string, unknown>)[key])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** Own-property copy helper that keeps a `__proto__` key as data (as JSON.parse does). */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

interface Answer {
  status: number;
  headers: Record<string, string | undefined>;
  bytes: Buffer;
  text: string;
}

function call(
  agent: Agent,
  port: number,
  request: { method: string; path: string; headers: Record<string, string>; body?: Buffer | undefined },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, method: request.method, path: request.path, headers: request.headers, agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const headers: Record<string, string | undefined> = {};
          for (const [name, value] of Object.entries(res.headers)) {
            headers[name] = Array.isArray(value) ? value.join(', ') : value;
          }
          const bytes = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers, bytes, text: bytes.toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(request.body);
  });
}

/** A KOS error body, if the answer is one. */
function kosError(answer: Answer): { code: string } | undefined {
  if (!String(answer.headers['content-type'] ?? '').includes('json')) return undefined;
  try {
    const parsed = JSON.parse(answer.text) as { error?: { code?: unknown } };
    if (typeof parsed?.error?.code === 'string') return parsed.error as { code: string };
  } catch {
    // not JSON
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Fixture: one runtime, three apps, seeded records
// ---------------------------------------------------------------------------------------------

interface Good {
  /** What the low tier must deliver in its place. */
  readonly plaintext: unknown;
  readonly kid: string;
  readonly ver: number;
}

interface Fixture {
  runtime: KosRuntime;
  identityKey: CryptoKey;
  servers: Record<Framework, { server: Server; port: number }>;
  agent: Agent;
  shareForms: Set<string>;
  /** base64url DEK per `kid/ver`, and every form it may leak in. */
  deks: Map<string, { b64: string; forms: string[] }>;
  /** Real envelopes, JSON form (canonical JSON) or compact string → what they hold. */
  goodJson: Map<string, Good>;
  goodCompact: Map<string, Good>;
  goodBinary: Map<string, Good & { bytes: Uint8Array }>;
  jsonEnvelopes: EnvelopeJson[];
  compactEnvelopes: string[];
  binaryEnvelopes: Uint8Array[];
  /** The route response of /fuzz for the current run. */
  current: RouteResult;
  routeRuns: number;
  records: Map<string, unknown>;
}

const RECORD_VALUES: readonly unknown[] = [
  { diagnosis: 'flu', n: 1 },
  { diagnosis: 'cold', n: 2, tags: ['a', 'b'] },
  'plain text secret',
  42,
  null,
  [1, { deep: true }],
  { unicode: 'caf\u00e9 \uD83D\uDE00', empty: '' },
];

async function createFixture(): Promise<Fixture> {
  const identity = await generateKeyPair('EdDSA', { extractable: true });
  const signing = await generateKeyPair('EdDSA', { extractable: true });
  const metadata = createMemoryMetadataStore();
  const shareForms = new Set<string>();
  const nodes = memoryNodes(5).map((store) => new RecordingStore(store, shareForms));
  const access = createAccessControl({ metadata, defaultDeny: true });
  for (const client of GRANTED) {
    await access.grant(client, 'records');
    await access.grant(client, 'ghost');
  }
  const runtime = await createKosRuntime({
    config: {
      issuer: 'https://kos.test',
      signingKey: signing.privateKey,
      identity: { key: await exportJWK(identity.publicKey), algorithms: ['EdDSA'], issuer: ISSUER, audience: AUDIENCE },
      metadata,
      nodes: nodes.map((store) => ({ nodeId: store.nodeId, store, publicUrl: `https://kms.test/${store.nodeId}` })),
      access,
      tiers: { denyBelow: 10 },
      autoCreateKeys: true,
    },
  });
  const keys = runtime.kos.keys;
  await keys.createKey('records');
  await keys.createKey('other');

  const fixture: Fixture = {
    runtime,
    identityKey: identity.privateKey,
    servers: {} as Fixture['servers'],
    agent: new Agent({ keepAlive: true, maxSockets: 8 }),
    shareForms,
    deks: new Map(),
    goodJson: new Map(),
    goodCompact: new Map(),
    goodBinary: new Map(),
    jsonEnvelopes: [],
    compactEnvelopes: [],
    binaryEnvelopes: [],
    current: { json: {} },
    routeRuns: 0,
    records: new Map(),
  };

  const sealValue = async (kid: string, value: unknown, dataId: string) => {
    const json = await runtime.kos.seal(kid, value, { dataId });
    const envelope = decodeEnvelope(json);
    const good = { plaintext: value, kid, ver: envelope.header.ver };
    const compact = encodeEnvelope(envelope, 'compact');
    fixture.goodJson.set(canonical(json), good);
    fixture.goodCompact.set(compact, good);
    fixture.jsonEnvelopes.push(json);
    fixture.compactEnvelopes.push(compact);
    return json;
  };
  for (const [i, value] of RECORD_VALUES.entries()) {
    fixture.records.set(`r${i + 1}`, { id: `r${i + 1}`, data: await sealValue('records', value, `r${i + 1}`) });
  }
  await keys.rotate('records');
  await sealValue('records', { rotated: true }, 'r-v2');
  await sealValue('other', { not: 'yours' }, 'other-1');
  for (const text of ['raw bytes', '']) {
    const envelope = await keys.seal('records', utf8(text), { dataId: `blob-${text.length}` });
    const bytes = encodeEnvelope(envelope, 'binary');
    fixture.binaryEnvelopes.push(bytes);
    fixture.goodBinary.set(Buffer.from(bytes).toString('hex'), {
      plaintext: text,
      kid: 'records',
      ver: envelope.header.ver,
      bytes,
    });
  }
  for (const [kid, ver] of [
    ['records', 1],
    ['records', 2],
    ['other', 1],
  ] as const) {
    const dek = await keys.getDek(kid, ver);
    fixture.deks.set(`${kid}/${ver}`, { b64: toBase64url(dek), forms: secretForms(dek) });
  }

  const routes: TestRoute[] = [
    {
      method: 'GET',
      path: '/records/:id',
      handle: ({ params }) => {
        fixture.routeRuns++;
        const record = fixture.records.get(params.id as string);
        return record ? { json: record } : { status: 404, json: { error: 'not found' } };
      },
    },
    {
      method: 'GET',
      path: '/records',
      handle: () => {
        fixture.routeRuns++;
        return { json: [...fixture.records.values()] };
      },
    },
    {
      method: 'GET',
      path: '/nested',
      handle: () => {
        fixture.routeRuns++;
        return { json: { page: 1, items: [{ meta: { deep: [{ secret: fixture.jsonEnvelopes[0] }] } }] } };
      },
    },
    {
      method: 'GET',
      path: '/compact',
      handle: () => {
        fixture.routeRuns++;
        return { json: { value: fixture.compactEnvelopes[1], list: fixture.compactEnvelopes.slice(0, 2) } };
      },
    },
    {
      method: 'GET',
      path: '/blob',
      handle: () => {
        fixture.routeRuns++;
        return { bytes: fixture.binaryEnvelopes[0] as Uint8Array, type: 'application/vnd.kos.envelope' };
      },
    },
    {
      method: 'GET',
      path: '/plain',
      handle: () => {
        fixture.routeRuns++;
        return { json: { hello: 'world', n: 1 } };
      },
    },
    {
      method: 'GET',
      path: '/other-key',
      handle: () => {
        fixture.routeRuns++;
        return { json: { id: 'other', data: fixture.jsonEnvelopes.at(-1) } };
      },
    },
    {
      method: 'POST',
      path: '/echo',
      handle: ({ body }) => {
        fixture.routeRuns++;
        return { json: { got: body ?? null } };
      },
    },
    {
      method: 'GET',
      path: '/fuzz',
      handle: () => {
        fixture.routeRuns++;
        return fixture.current;
      },
    },
  ];

  for (const framework of FRAMEWORKS) {
    const server = createServer(buildApp(framework, runtime, routes));
    server.maxHeadersCount = 0;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    fixture.servers[framework] = { server, port: (server.address() as AddressInfo).port };
  }
  return fixture;
}

async function closeFixture(fixture: Fixture | undefined): Promise<void> {
  if (!fixture) return;
  fixture.agent.destroy();
  for (const { server } of Object.values(fixture.servers)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  await fixture.runtime.close();
}

function token(fixture: Fixture, clientId: string, score: unknown, expOffset = 300): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ trust_score: score })
    .setProtectedHeader({ alg: 'EdDSA' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(clientId)
    .setIssuedAt(now)
    .setExpirationTime(now + expOffset)
    .sign(fixture.identityKey);
}

// ---------------------------------------------------------------------------------------------
// The model of a correct delivery
// ---------------------------------------------------------------------------------------------

type EnvelopeVerdict = { good: Good; kind: 'json' | 'compact' } | { good: undefined };

function verdict(fixture: Fixture, value: unknown): EnvelopeVerdict {
  if (typeof value === 'string') {
    const good = fixture.goodCompact.get(value);
    return good ? { good, kind: 'compact' } : { good: undefined };
  }
  const good = fixture.goodJson.get(canonical(value));
  return good ? { good, kind: 'json' } : { good: undefined };
}

const isEnvelopeLike = (value: unknown) => isCompactEnvelope(value) || isEnvelopeJson(value);

/** Every envelope-like value at ANY depth (DESIGN invariant 15: "every envelope found"). */
function envelopesIn(value: unknown, out: unknown[] = []): unknown[] {
  if (isEnvelopeLike(value)) out.push(value);
  else if (Array.isArray(value)) for (const item of value) envelopesIn(item, out);
  else if (typeof value === 'object' && value !== null) for (const item of Object.values(value)) envelopesIn(item, out);
  return out;
}

/** The route body with each envelope replaced by `replace(envelope)`, at any depth. */
function replaceAll(value: unknown, replace: (envelope: unknown) => unknown): unknown {
  if (isEnvelopeLike(value)) return replace(value);
  if (Array.isArray(value)) return value.map((item) => replaceAll(item, replace));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) setOwn(out, key, replaceAll(item, replace));
    return out;
  }
  return value;
}

interface Caller {
  readonly clientId: string;
  readonly tier: Tier;
}

/**
 * Checks one answer to a decided request (valid identity) whose route returned `routeBody`
 * (a JSON value) with `routeStatus`. Returns a label for the tally.
 */
/** Nesting depth of a JSON value (a scalar is 0). */
function depthOf(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0;
  let deepest = 0;
  for (const item of Object.values(value)) deepest = Math.max(deepest, depthOf(item));
  return deepest + 1;
}

function checkJsonDelivery(
  fixture: Fixture,
  caller: Caller,
  routeBody: unknown,
  routeStatus: number,
  answer: Answer,
  context: string,
): string {
  const envelopes = envelopesIn(routeBody);
  const verdicts = envelopes.map((envelope) => verdict(fixture, envelope));
  const allGood = verdicts.every((v) => v.good !== undefined);
  const accessible = verdicts.every((v) => v.good === undefined || v.good.kid !== 'other');
  const error = kosError(answer);
  if (error) {
    const code = assertErrorBody(answer.status, JSON.parse(answer.text), context);
    if (envelopes.length === 0) throw new Error(`${context}: ${code} for a body without envelopes`);
    if (!DELIVERY_CODES.includes(code)) throw new Error(`${context}: unexpected delivery code ${code}`);
    // A body nested deeper than the walker goes is refused on purpose (never passed through).
    const tooDeep = code === 'ERR_RESPONSE_ENVELOPE_INVALID' && depthOf(routeBody) > 64;
    if (allGood && accessible && !tooDeep)
      throw new Error(`${context}: ${code} although every envelope is real and readable`);
    if (allGood && !accessible && code !== 'ERR_ACCESS_DENIED') {
      throw new Error(`${context}: ${code} instead of ERR_ACCESS_DENIED`);
    }
    return `error ${code}`;
  }
  if (answer.status >= 500) throw new Error(`${context}: ${answer.status} without a code: ${preview(answer.text)}`);
  if (answer.status !== routeStatus) throw new Error(`${context}: status ${answer.status}, route said ${routeStatus}`);
  if (answer.headers['kos-tier'] !== caller.tier) {
    throw new Error(`${context}: kos-tier ${answer.headers['kos-tier']}, expected ${caller.tier}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(answer.text);
  } catch {
    throw new Error(`${context}: body is not JSON: ${preview(answer.text)}`);
  }
  if (envelopes.length === 0) {
    if (canonical(body) !== canonical(routeBody)) {
      throw new Error(`${context}: a body without envelopes was changed: ${preview(answer.text)}`);
    }
    return 'pass-through';
  }
  if (caller.tier === 'low' && !(allGood && accessible)) {
    throw new Error(
      `${context}: low tier delivered a body holding a bad or unreadable envelope: ${preview(answer.text)}`,
    );
  }
  if (!accessible) throw new Error(`${context}: delivered an envelope of a key the client may not read`);
  if (caller.tier !== 'low' && answer.headers['cache-control'] !== 'no-store') {
    throw new Error(`${context}: ${caller.tier}-tier response is cacheable`);
  }
  const expected = replaceAll(routeBody, (envelope) => {
    if (caller.tier === 'low') return (verdict(fixture, envelope).good as Good).plaintext;
    return { kosTier: caller.tier, envelope };
  });
  // High and medium items carry key material checked separately: compare their skeletons.
  const skeleton = (value: unknown): unknown =>
    JSON.parse(JSON.stringify(value, (key, item) => (key === 'dek' || key === 'key' ? undefined : item)) ?? 'null');
  if (caller.tier === 'low') {
    if (canonical(body) !== canonical(expected)) {
      throw new Error(
        `${context}: low-tier body differs from the route body with plaintexts: got ${preview(answer.text, 400)}, expected ${preview(canonical(expected), 400)}`,
      );
    }
  } else if (canonical(skeleton(body)) !== canonical(skeleton(expected))) {
    throw new Error(
      `${context}: ${caller.tier}-tier body is not the route body with tiered items: ${preview(answer.text, 400)}`,
    );
  }
  if (caller.tier === 'high') checkHighItems(fixture, body, context);
  if (caller.tier === 'medium') checkMediumItems(body, context);
  return `${caller.tier} delivered`;
}

function tieredItems(value: unknown, out: Record<string, unknown>[] = []): Record<string, unknown>[] {
  if (Array.isArray(value)) for (const item of value) tieredItems(item, out);
  else if (typeof value === 'object' && value !== null) {
    const record = value as Record<string, unknown>;
    if (record.kosTier === 'high' || record.kosTier === 'medium') out.push(record);
    else for (const item of Object.values(record)) tieredItems(item, out);
  }
  return out;
}

function checkHighItems(fixture: Fixture, body: unknown, context: string): void {
  for (const item of tieredItems(body)) {
    const envelope = decodeEnvelope(item.envelope);
    const dek = fixture.deks.get(`${envelope.header.kid}/${envelope.header.ver}`);
    if (!dek || item.dek !== dek.b64) throw new Error(`${context}: high-tier item without the right DEK`);
  }
}

function checkMediumItems(body: unknown, context: string): void {
  for (const item of tieredItems(body)) {
    const envelope = decodeEnvelope(item.envelope);
    const key = item.key as { kid?: unknown; ver?: unknown; grant?: unknown; shares?: unknown } | undefined;
    if (!key || key.kid !== envelope.header.kid || key.ver !== envelope.header.ver || typeof key.grant !== 'string') {
      throw new Error(`${context}: medium-tier item without a matching key reference`);
    }
    if (!Array.isArray(key.shares) || key.shares.length === 0)
      throw new Error(`${context}: medium item without shares`);
  }
}

/** No response carries share bytes; low and medium never carry a DEK; nobody gets a DEK it may not read. */
function checkSecrets(fixture: Fixture, caller: Caller | undefined, answer: Answer, context: string): void {
  const latin1 = answer.bytes.toString('latin1');
  assertNoSecret(answer.text, fixture.shareForms, `${context}: share bytes`);
  for (const [name, dek] of fixture.deks) {
    const allowed = caller?.tier === 'high' && name.startsWith('records/');
    if (!allowed) {
      assertNoSecret(answer.text, dek.forms, `${context}: DEK ${name} in a ${caller?.tier ?? 'refused'} response`);
      assertNoSecret(latin1, dek.forms, `${context}: DEK ${name}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

const scoreArb = fc.oneof(
  fc.integer({ min: 0, max: 100 }),
  fc.constantFrom(9.999, 10, 49, 49.999, 50, 80, 80.001, 81, 100),
  fc.double({ min: 0, max: 100, noNaN: true }),
);

/** Route-body JSON: objects and arrays of junk, real envelopes, corrupted and envelope-like values. */
function routeJson(fixture: Fixture, options: { maxDepth: number; protoKeys: boolean }): fc.Arbitrary<unknown> {
  const good = fc.oneof(fc.constantFrom(...fixture.jsonEnvelopes), fc.constantFrom(...fixture.compactEnvelopes));
  const corrupted = fc.oneof(
    fc
      .tuple(
        fc.constantFrom(...fixture.jsonEnvelopes),
        fc.constantFrom<keyof EnvelopeJson>('kos', 'alg', 'kid', 'ver', 'nonce', 'kc', 'did', 'ct'),
        junkValue,
      )
      .map(([envelope, field, value]) => ({ ...envelope, [field]: value })),
    fc
      .tuple(fc.constantFrom(...fixture.jsonEnvelopes), fc.constantFrom('did', 'ver', 'kid'))
      .map(([envelope, field]) => ({
        ...envelope,
        ...(field === 'did' ? { did: 'moved' } : field === 'ver' ? { ver: 7 } : { kid: 'ghost' }),
      })),
    fc
      .tuple(fc.constantFrom(...fixture.jsonEnvelopes), fc.nat(), fc.constantFrom('A', 'B', '_', '-'))
      .map(([envelope, at, char]) => {
        const ct = envelope.ct;
        const i = at % ct.length;
        return { ...envelope, ct: ct.slice(0, i) + char + ct.slice(i + 1) };
      }),
    fc
      .tuple(fc.constantFrom(...fixture.compactEnvelopes), fc.nat(), fc.constantFrom('A', 'B', '_', '-', '.'))
      .map(([compact, at, char]) => {
        const i = 5 + (at % (compact.length - 5));
        return compact.slice(0, i) + char + compact.slice(i + 1);
      }),
    fc.constantFrom(
      'kos1.',
      'kos1.AAAA',
      'kos1.!!',
      { kos: 1, ct: 'AAAA' },
      { kos: null, ct: '' },
      { kos: 2, ct: 'x' },
    ),
    fc.record({ kos: junkValue, ct: fc.string() }),
  );
  const leaf = fc.oneof(
    {
      arbitrary: junkValue.filter((v) => v !== undefined && !(typeof v === 'number' && !Number.isFinite(v))),
      weight: 3,
    },
    { arbitrary: good, weight: 3 },
    { arbitrary: corrupted, weight: 1 },
    { arbitrary: nastyString, weight: 1 },
  );
  const key = options.protoKeys
    ? fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('__proto__', 'constructor', 'kos', 'ct', 'toJSON'))
    : fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('constructor', 'kos', 'ct', 'envelope', 'kosTier'));
  const tree = fc.letrec<{ node: unknown; array: unknown[]; object: Record<string, unknown> }>((tie) => ({
    node: fc.oneof({ depthSize: 'small', maxDepth: options.maxDepth }, leaf, tie('array'), tie('object')),
    array: fc.array(tie('node'), { maxLength: 4 }),
    object: fc.array(fc.tuple(key, tie('node')), { maxLength: 4 }).map((entries) => {
      const out: Record<string, unknown> = {};
      for (const [name, value] of entries) setOwn(out, name, value);
      return out;
    }),
  }));
  // Top level: an object or an array. (A bare string is text to Koa, JSON to Express and Hono:
  // Koa sends a top-level compact envelope untransformed, by design of its adapter.)
  const top = fc.oneof(tree.object, tree.array);
  return options.protoKeys ? top : top.filter((value) => !canonical(value).includes('"__proto__"'));
}

/** JSON round trip as the frameworks do it (drops undefined, NaN → null). */
function asJson(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value) ?? 'null');
}

const runTimeout = fuzzTimeout(60_000);

describe('fuzz: middleware (Express, Hono, Koa)', () => {
  let fixture: Fixture;
  const tally = new Map<string, number>();
  const count = (label: string) => tally.set(label, (tally.get(label) ?? 0) + 1);

  beforeAll(async () => {
    fixture = await createFixture();
  }, 60_000);

  afterAll(async () => {
    console.info('middleware outcomes:', Object.fromEntries([...tally].sort()));
    await closeFixture(fixture);
  });

  /** Calls the same request on all three apps. */
  async function everywhere(request: {
    method: string;
    path: string;
    headers: Record<string, string>;
    body?: Buffer | undefined;
  }): Promise<Record<Framework, Answer>> {
    const out = {} as Record<Framework, Answer>;
    for (const framework of FRAMEWORKS) {
      out[framework] = await within(
        call(fixture.agent, fixture.servers[framework].port, request),
        10_000,
        `${framework} ${request.method} ${preview(request.path, 60)}`,
      );
    }
    return out;
  }

  describe('regressions (shrunk counterexamples kept as named cases)', () => {
    const lowTier = async () => ({ authorization: `Bearer ${await token(fixture, 'alice', 10)}` });

    it.each(FRAMEWORKS)(
      '%s: an envelope nested 65 levels deep is delivered as plaintext or refused',
      async (framework) => {
        // body-walker.ts findEnvelopes/replaceEnvelopes stop at MAX_BODY_DEPTH (64) and hand the
        // rest back unchanged, although the comment says deeper bodies are refused: a low-tier
        // client gets the raw envelope instead of the plaintext (DESIGN invariant 15).
        let nested: unknown = fixture.jsonEnvelopes[0];
        for (let i = 0; i < 65; i++) nested = { d: nested };
        fixture.current = { json: { top: nested } };
        const answer = await call(fixture.agent, fixture.servers[framework].port, {
          method: 'GET',
          path: '/fuzz',
          headers: await lowTier(),
        });
        const refused = kosError(answer) !== undefined;
        expect(refused || !answer.text.includes('"kos":1')).toBe(true);
      },
    );

    it.each(FRAMEWORKS)('%s: a "__proto__" field next to an envelope survives delivery', async (framework) => {
      // body-walker.ts replaceEnvelopes: `out[key] = …` with key "__proto__" sets the prototype
      // of the copy instead of a field, so the field (here holding an envelope) vanishes.
      fixture.current = { json: JSON.parse(`[{"__proto__":[${JSON.stringify(fixture.jsonEnvelopes[0])}]}]`) };
      const answer = await call(fixture.agent, fixture.servers[framework].port, {
        method: 'GET',
        path: '/fuzz',
        headers: await lowTier(),
      });
      expect(answer.text).toBe('[{"__proto__":[{"diagnosis":"flu","n":1}]}]');
    });

    it('koa: a request under the KMS mount prefix with an unparsable Host gets a typed error, not ERR_INTERNAL', async () => {
      // packages/koa/src/kos-middleware.ts calls runtime.handleKms without `path`, so
      // kos-runtime.ts handleKms runs new URL(request.url) on `http://<Host><path>` and the
      // TypeError becomes 500 ERR_INTERNAL (no token needed). Express passes `path`; Hono's
      // server refuses the Host first.
      const answer = await call(fixture.agent, fixture.servers.koa.port, {
        method: 'GET',
        path: '/kos/kms/node-1/v1/health',
        headers: { host: 'x:99999' },
      });
      expect(answer.status).toBeLessThan(500);
      expect(kosError(answer)?.code).not.toBe('ERR_INTERNAL');
    });
  });

  describe('fuzzed route responses', () => {
    async function runRouteProperty(body: fc.Arbitrary<unknown>, share: number, label: string) {
      await fc.assert(
        fc.asyncProperty(
          body,
          fc.constantFrom(200, 201),
          fc.constantFrom('alice', 'bob', 'mallory'),
          scoreArb,
          async (routeBody, routeStatus, clientId, score) => {
            const tier = tierOf(score);
            if (tier === 'denied') return;
            const json = asJson(routeBody);
            fixture.current = { json: routeBody, status: routeStatus };
            const authorization = `Bearer ${await token(fixture, clientId, score)}`;
            const answers = await everywhere({ method: 'GET', path: '/fuzz', headers: { authorization } });
            for (const framework of FRAMEWORKS) {
              const answer = answers[framework];
              const context = `${label} ${framework} ${clientId}@${score} route ${preview(json, 300)}`;
              const caller = { clientId, tier };
              const outcome =
                clientId === 'mallory'
                  ? checkMallory(json, routeStatus, answer, caller, context)
                  : checkJsonDelivery(fixture, caller, json, routeStatus, answer, context);
              checkSecrets(fixture, caller, answer, context);
              count(`route ${outcome}`);
            }
          },
        ),
        fuzzParams(share, 40_000),
      );
    }

    /** mallory may read no key: any envelope means ERR_ACCESS_DENIED (or a bad-envelope code). */
    function checkMallory(json: unknown, routeStatus: number, answer: Answer, caller: Caller, context: string) {
      const envelopes = envelopesIn(json);
      if (envelopes.length === 0) return checkJsonDelivery(fixture, caller, json, routeStatus, answer, context);
      const error = kosError(answer);
      if (!error) throw new Error(`${context}: a client without access got ${answer.status} ${preview(answer.text)}`);
      const code = assertErrorBody(answer.status, JSON.parse(answer.text), context);
      if (code !== 'ERR_ACCESS_DENIED' && code !== 'ERR_RESPONSE_ENVELOPE_INVALID') {
        throw new Error(`${context}: ${code} for a client without access`);
      }
      return `error ${code}`;
    }

    it(
      'arbitrary JSON with real, corrupted and envelope-like values: plaintexts, tiered items or a typed error',
      async () => {
        await runRouteProperty(routeJson(fixture, { maxDepth: 6, protoKeys: false }), 1, 'json');
      },
      runTimeout,
    );

    it(
      'envelopes nested deeper than the walker goes are transformed or refused, never passed through',
      async () => {
        // body-walker.ts: "deeper bodies are refused rather than risking the stack".
        const deep = fc
          .tuple(
            fc.integer({ min: 60, max: 200 }),
            fc.constantFrom(...fixture.jsonEnvelopes, ...fixture.compactEnvelopes),
            fc.boolean(),
          )
          .map(([depth, envelope, arrays]) => {
            let value: unknown = envelope;
            for (let i = 0; i < depth; i++) value = arrays ? [value] : { d: value };
            return { top: value };
          });
        await runRouteProperty(deep, 0.1, 'deep');
      },
      runTimeout,
    );

    it(
      'bodies with "__proto__" keys keep every field (own keys are data, not prototypes)',
      async () => {
        await runRouteProperty(routeJson(fixture, { maxDepth: 4, protoKeys: true }), 0.25, 'proto');
      },
      runTimeout,
    );

    it(
      'binary route bodies: real, patched, truncated and random envelopes',
      async () => {
        const bytes = fc.oneof(
          fc.constantFrom(...fixture.binaryEnvelopes),
          fc
            .tuple(fc.constantFrom(...fixture.binaryEnvelopes), fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 4 }))
            .map(([original, at, patch]) => {
              const copy = original.slice();
              copy.set(patch.subarray(0, copy.length - (at % copy.length)), at % copy.length);
              return copy;
            }),
          fc
            .tuple(fc.constantFrom(...fixture.binaryEnvelopes), fc.nat())
            .map(([original, at]) => original.slice(0, at % original.length)),
          fc.uint8Array({ maxLength: 100 }).map((tail) => new Uint8Array([0x4b, 0x4f, 0x53, ...tail])),
          fc.uint8Array({ maxLength: 100 }),
        );
        await fc.assert(
          fc.asyncProperty(
            bytes,
            fc.constantFrom('application/vnd.kos.envelope', 'application/octet-stream'),
            fc.constantFrom('alice', 'mallory'),
            scoreArb,
            async (routeBytes, type, clientId, score) => {
              const tier = tierOf(score);
              if (tier === 'denied') return;
              fixture.current = { bytes: routeBytes, type };
              const authorization = `Bearer ${await token(fixture, clientId, score)}`;
              const answers = await everywhere({ method: 'GET', path: '/fuzz', headers: { authorization } });
              const good = fixture.goodBinary.get(Buffer.from(routeBytes).toString('hex'));
              const magic =
                routeBytes.length > 4 && routeBytes[0] === 0x4b && routeBytes[1] === 0x4f && routeBytes[2] === 0x53;
              for (const framework of FRAMEWORKS) {
                const answer = answers[framework];
                const context = `binary ${framework} ${clientId}@${score} ${Buffer.from(routeBytes).toString('hex').slice(0, 120)}`;
                const caller = { clientId, tier };
                checkSecrets(fixture, caller, answer, context);
                const error = kosError(answer);
                if (error) {
                  const code = assertErrorBody(answer.status, JSON.parse(answer.text), context);
                  if (!magic) throw new Error(`${context}: ${code} for bytes that are no envelope`);
                  if (good && clientId === 'alice') throw new Error(`${context}: ${code} for a real envelope`);
                  if (!DELIVERY_CODES.includes(code)) throw new Error(`${context}: unexpected code ${code}`);
                  count(`binary error ${code}`);
                  continue;
                }
                if (answer.status >= 500) throw new Error(`${context}: ${answer.status} without a code`);
                if (answer.headers['kos-tier'] !== tier) throw new Error(`${context}: wrong tier header`);
                if (!magic) {
                  if (!answer.bytes.equals(Buffer.from(routeBytes))) throw new Error(`${context}: bytes were changed`);
                  count('binary pass-through');
                  continue;
                }
                if (clientId === 'mallory') throw new Error(`${context}: a client without access got an envelope`);
                if (tier === 'low') {
                  if (!good) throw new Error(`${context}: low tier delivered a bad binary envelope`);
                  if (answer.bytes.toString('utf8') !== good.plaintext) throw new Error(`${context}: wrong plaintext`);
                } else {
                  const item = JSON.parse(answer.text) as { kosTier?: unknown; envelope?: unknown };
                  if (item.kosTier !== tier) throw new Error(`${context}: not a ${tier} item`);
                  if (typeof item.envelope !== 'string' || !sameEnvelope(item.envelope, routeBytes)) {
                    throw new Error(`${context}: the item's envelope is not the route's`);
                  }
                  if (tier === 'high') checkHighItems(fixture, { item }, context);
                }
                count(`binary ${tier} delivered`);
              }
            },
          ),
          fuzzParams(0.5, 30_000),
        );
      },
      runTimeout,
    );
  });

  describe('fuzzed requests', () => {
    const STATIC_ROUTES = [
      '/records/r1',
      '/records/r3',
      '/records',
      '/nested',
      '/compact',
      '/plain',
      '/other-key',
      '/blob',
    ];

    /** What each static route returns, as JSON (for the model). */
    function staticBody(path: string): unknown {
      switch (path) {
        case '/records/r1':
        case '/records/r3':
          return asJson(fixture.records.get(path.slice('/records/'.length)));
        case '/records':
          return asJson([...fixture.records.values()]);
        case '/nested':
          return asJson({ page: 1, items: [{ meta: { deep: [{ secret: fixture.jsonEnvelopes[0] }] } }] });
        case '/compact':
          return { value: fixture.compactEnvelopes[1], list: fixture.compactEnvelopes.slice(0, 2) };
        case '/plain':
          return { hello: 'world', n: 1 };
        case '/other-key':
          return asJson({ id: 'other', data: fixture.jsonEnvelopes.at(-1) });
        default:
          return undefined;
      }
    }

    const authorization = fc.oneof(
      {
        arbitrary: fc.record({
          kind: fc.constant('valid' as const),
          client: fc.constantFrom('alice', 'bob', 'mallory'),
          score: scoreArb,
        }),
        weight: 4,
      },
      {
        arbitrary: fc.record({
          kind: fc.constant('signed-junk' as const),
          client: fc.oneof(
            fc.constantFrom('alice', '', '../x'),
            nastyString.map((text) => text.slice(0, 300)),
          ),
          score: fc.oneof(fc.constantFrom(-1, 101, '90', null, 1e308), junkValue),
          expOffset: fc.constantFrom(300, -600),
        }),
        weight: 1,
      },
      {
        arbitrary: fc.record({
          kind: fc.constant('junk' as const),
          header: fc.oneof(
            fc.string(),
            fc.constantFrom('Bearer', 'Bearer ', 'bearer x.y.z', 'Basic YWxpY2U6eA==', 'Bearer a.b.c'),
            fc.string({ minLength: 4000, maxLength: 6000 }).map((s) => `Bearer ${s}`),
          ),
        }),
        weight: 1,
      },
      { arbitrary: fc.constant({ kind: 'none' as const }), weight: 1 },
    );

    const headerValue = (max: number) =>
      fc.string({ maxLength: max }).map((value) => value.replace(/[^\t\x20-\x7e\x80-\xff]/g, '?'));

    const MOUNT_PATHS = ['/kos/kms/node-1/v1/health', '/kos/kms/node-1/v1/shares/x', '/kos/kms/', '/kos/kms/x/y'];
    const junkHost = fc.oneof(fc.constantFrom('evil.test', 'a b', '[::1', 'x:99999', '%', '\u00e9'), headerValue(30));

    async function runRequestProperty(paths: fc.Arbitrary<string>, hosts: fc.Arbitrary<string | null>, share: number) {
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            auth: authorization,
            path: paths,
            query: sometimes(
              fc.oneof(
                fc.constantFrom('trust_score=100', 'score=99&tier=high', 'x=%zz', 'a[]=1&a[]=2', '__proto__[x]=1'),
                nastyString.map((text) =>
                  percentEncode(text)
                    .slice(0, 2_000)
                    .replace(/%[0-9A-F]?$/, ''),
                ),
              ),
              2,
            ),
            trustHeader: sometimes(fc.oneof(fc.constantFrom('100', '99', 'high', '-1'), headerValue(20)), 2),
            cookie: sometimes(fc.oneof(fc.constantFrom('trust_score=100; tier=high'), headerValue(200)), 3),
            huge: sometimes(fc.integer({ min: 1000, max: 6000 }), 6),
            host: hosts,
            body: sometimes(
              fc.oneof(
                junkValue.map((value) => ({
                  type: 'application/json',
                  bytes: Buffer.from(JSON.stringify(value) ?? ''),
                })),
                fc
                  .uint8Array({ maxLength: 200 })
                  .map((bytes) => ({ type: 'application/octet-stream', bytes: Buffer.from(bytes) })),
                fc.string({ maxLength: 100 }).map((text) => ({ type: 'application/json', bytes: Buffer.from(text) })),
                fc.string({ maxLength: 100 }).map((text) => ({ type: 'text/plain', bytes: Buffer.from(text) })),
              ),
              3,
            ),
          }),
          async (input) => {
            const headers: Record<string, string> = {};
            let caller: Caller | undefined;
            let expectIdentityError = true;
            const auth = input.auth;
            if (auth.kind === 'valid') {
              headers.authorization = `Bearer ${await token(fixture, auth.client, auth.score)}`;
              const tier = tierOf(auth.score);
              if (tier !== 'denied') {
                caller = { clientId: auth.client, tier };
                expectIdentityError = false;
              }
            } else if (auth.kind === 'signed-junk') {
              headers.authorization = `Bearer ${await token(fixture, auth.client, auth.score, auth.expOffset)}`;
              // Junk by intent, but some of it is a real identity (e.g. sub "null", score 10).
              const score = auth.score;
              const tier = typeof score === 'number' && score >= 0 && score <= 100 ? tierOf(score) : 'denied';
              if (isValidId(auth.client) && auth.expOffset > 0 && tier !== 'denied') {
                caller = { clientId: auth.client, tier };
                expectIdentityError = false;
              }
            } else if (auth.kind === 'junk') {
              headers.authorization = auth.header.replace(/[^\t\x20-\x7e\x80-\xff]/g, '?');
            }
            if (input.trustHeader !== null) headers['x-trust-score'] = input.trustHeader;
            if (input.cookie !== null) headers.cookie = input.cookie;
            if (input.huge !== null) headers['x-filler'] = 'f'.repeat(input.huge);
            if (input.host !== null && input.host !== '') headers.host = input.host;
            if (input.body !== null) {
              headers['content-type'] = input.body.type;
              headers['content-length'] = String(input.body.bytes.length);
            }
            const path = input.query === null ? input.path : `${input.path}?${input.query}`;
            const before = fixture.routeRuns;
            const answers = await everywhere({ method: 'GET', path, headers, body: input.body?.bytes });
            for (const framework of FRAMEWORKS) {
              const answer = answers[framework];
              const context = `request ${framework} GET ${preview(path, 80)} auth=${preview(auth, 120)} host=${preview(input.host, 30)}`;
              checkSecrets(fixture, caller, answer, context);
              count(
                `request ${checkRequestAnswer(input.path, caller, expectIdentityError, answer, context, input.body, headers.host !== undefined)}`,
              );
            }
            if (expectIdentityError && fixture.routeRuns !== before) {
              throw new Error(`a route ran for a request that must be refused before it: ${preview(auth)}`);
            }
          },
        ),
        fuzzParams(share, 40_000),
      );
    }

    it(
      'arbitrary headers, query strings and bodies: identity only from the signed token, typed answers',
      async () => {
        await runRequestProperty(
          fc.oneof(
            { arbitrary: fc.constantFrom(...STATIC_ROUTES), weight: 6 },
            { arbitrary: fc.constant('/nope'), weight: 1 },
          ),
          sometimes(junkHost, 6),
          1,
        );
      },
      runTimeout,
    );

    it(
      'requests under the KMS mount prefix with arbitrary Host headers: typed answers, never ERR_INTERNAL',
      async () => {
        await runRequestProperty(fc.constantFrom(...MOUNT_PATHS), sometimes(junkHost, 2), 0.25);
      },
      runTimeout,
    );

    /** Routes with envelopes the caller may not read (mallory reads nothing; nobody reads `other`). */
    function deniedRoute(path: string, caller: Caller | undefined): boolean {
      if (!STATIC_ROUTES.includes(path) || path === '/plain') return false;
      return !GRANTED.includes(caller?.clientId ?? '') || path === '/other-key';
    }

    function checkRequestAnswer(
      path: string,
      caller: Caller | undefined,
      expectIdentityError: boolean,
      answer: Answer,
      context: string,
      body: { type: string; bytes: Buffer } | null,
      hostSet: boolean,
    ): string {
      const error = kosError(answer);
      if (!error && answer.status === 400 && hostSet && answer.text.length < 40) {
        // @hono/node-server refuses a Host it cannot build a URL from, before any middleware.
        return 'adapter 400 (bad Host)';
      }
      if (error) {
        const code = assertErrorBody(answer.status, JSON.parse(answer.text), context);
        if (expectIdentityError) {
          if (!IDENTITY_CODES.includes(code)) throw new Error(`${context}: ${code} for a bad identity`);
          return `identity error ${code}`;
        }
        if (deniedRoute(path, caller)) {
          if (code !== 'ERR_ACCESS_DENIED') throw new Error(`${context}: ${code} instead of ERR_ACCESS_DENIED`);
          return `error ${code}`;
        }
        throw new Error(`${context}: ${code} for a readable route`);
      }
      if (answer.status >= 500) throw new Error(`${context}: ${answer.status} without a code: ${preview(answer.text)}`);
      if (expectIdentityError) throw new Error(`${context}: answered ${answer.status} without a valid identity`);
      const who = caller as Caller;
      if (answer.status >= 400) {
        // Not KOS: the framework (unknown route) or the app's JSON body parser (Express), both
        // before the route: no data.
        const parserError = body?.type.includes('json');
        if (answer.status === 404 && !STATIC_ROUTES.includes(path)) return 'framework 404';
        if (answer.status === 400 && parserError) return 'app 400 (body parser)';
        throw new Error(`${context}: unexpected ${answer.status} ${preview(answer.text)}`);
      }
      if (deniedRoute(path, who)) throw new Error(`${context}: ${answer.status} instead of ERR_ACCESS_DENIED`);
      if (path === '/blob') {
        if (answer.headers['kos-tier'] !== who.tier) throw new Error(`${context}: wrong tier header`);
        if (who.tier === 'low' && answer.text !== 'raw bytes') throw new Error(`${context}: wrong low-tier bytes`);
        return `${who.tier} blob`;
      }
      return checkJsonDelivery(fixture, who, staticBody(path), 200, answer, context);
    }

    it(
      'client-posted JSON echoed by the route (the client controls the route body)',
      async () => {
        await fc.assert(
          fc.asyncProperty(
            routeJson(fixture, { maxDepth: 4, protoKeys: false }).filter(
              (value) => typeof value === 'object' && value !== null && !Array.isArray(value),
            ),
            fc.constantFrom('alice', 'mallory'),
            scoreArb,
            async (posted, clientId, score) => {
              const tier = tierOf(score);
              if (tier === 'denied') return;
              const text = JSON.stringify(posted);
              const headers = {
                authorization: `Bearer ${await token(fixture, clientId, score)}`,
                'content-type': 'application/json',
                'content-length': String(Buffer.byteLength(text)),
              };
              const answers = await everywhere({ method: 'POST', path: '/echo', headers, body: Buffer.from(text) });
              const routeBody = { got: JSON.parse(text) };
              for (const framework of FRAMEWORKS) {
                const answer = answers[framework];
                const context = `echo ${framework} ${clientId}@${score} posted ${preview(text, 300)}`;
                const caller = { clientId, tier };
                checkSecrets(fixture, caller, answer, context);
                if (clientId === 'mallory' && envelopesIn(routeBody).length > 0) {
                  const code = kosError(answer)
                    ? assertErrorBody(answer.status, JSON.parse(answer.text), context)
                    : 'none';
                  if (code !== 'ERR_ACCESS_DENIED' && code !== 'ERR_RESPONSE_ENVELOPE_INVALID') {
                    throw new Error(`${context}: ${code} for a client without access`);
                  }
                  count(`echo error ${code}`);
                  continue;
                }
                count(`echo ${checkJsonDelivery(fixture, caller, routeBody, 200, answer, context)}`);
              }
            },
          ),
          fuzzParams(0.5, 30_000),
        );
      },
      runTimeout,
    );
  });
});

/** Whether a compact envelope is the binary one. */
function sameEnvelope(compact: string, bytes: Uint8Array): boolean {
  return Buffer.from(encodeEnvelope(decodeEnvelope(compact), 'binary')).equals(Buffer.from(bytes));
}

describe('fuzz oracle self-check', () => {
  it('the secret scan finds key bytes embedded at any byte alignment of a base64url string', () => {
    for (let trial = 0; trial < 60; trial++) {
      const secret = globalThis.crypto.getRandomValues(new Uint8Array(32 + (trial % 3)));
      const forms = secretForms(secret);
      for (let before = 0; before < 4; before++) {
        for (let after = 0; after < 4; after++) {
          const around = (n: number) => globalThis.crypto.getRandomValues(new Uint8Array(n));
          const text = toBase64url(new Uint8Array([...around(before), ...secret, ...around(after)]));
          expect(() => assertNoSecret(`{"x":"${text}"}`, forms, 'self-check')).toThrow(/secret material/);
        }
      }
    }
  });
});
