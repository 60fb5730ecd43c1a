import { CompactEncrypt, decodeJwt, type JWK } from 'jose';
import { LRUCache } from 'lru-cache';
import type { AuditEvent, AuditTrail } from '../audit/audit-trail.js';
import { toBase64url, utf8, wipe } from '../bytes.js';
import { type Envelope, type EnvelopeJson, encodeEnvelope, isCompactEnvelope } from '../envelope/codec.js';
import { ENVELOPE_MAGIC, type EnvelopeHeaderFields } from '../envelope/header.js';
import { isKosError, KosError, toErrorBody } from '../errors.js';
import { jwkThumbprint } from '../grants/dpop.js';
import type { TokenIssuer } from '../grants/token-issuer.js';
import type { KeyManager } from '../keys/key-manager.js';
import { type KosMetrics, noopMetrics } from '../observability/metrics.js';
import {
  failSpan,
  type KosSpan,
  loadTracing,
  type SpanAttributes,
  spansRecorded,
  withSpan,
} from '../observability/tracing.js';
import type { AccessControl } from '../trust/access-control.js';
import type { Identity, IdentitySource, RequestLike } from '../trust/identity.js';
import { createTierPolicy, type TierDecision, type TierPolicy } from '../trust/tier-policy.js';
import { type BodySlot, type BodySnapshot, fillSlots, snapshotBody } from './body-walker.js';
import { createMediumReference, type MediumKeyReference, type NodeDirectory } from './medium-reference.js';
import { type HighItem, type MediumItem, plaintextValue, TIER_HEADER } from './tiered-item.js';

/** The DEK of a high-tier item, as the client gets it: base64url, or wrapped to its key (JWE). */
type HighKey = Pick<HighItem, 'dek' | 'dekJwe'>;

/**
 * What one response's envelopes share: each key version released once (high: only kept when
 * the body holds several envelopes) and each medium reference (also what the audit records).
 */
interface Memos {
  readonly high: Map<string, Promise<HighKey>> | undefined;
  readonly medium: Map<string, Promise<MediumKeyReference>> | undefined;
}

/**
 * The headers of a shaped response: key material (high, medium) is never stored by caches.
 * Written out as literals: `{ ...headers, more }` costs V8 (Node 20) about a microsecond.
 */
function shapedHeaders(tier: KosDecision['tier'], contentType: string): Record<string, string> {
  return tier === 'low'
    ? { [TIER_HEADER]: tier, vary: 'Authorization', 'content-type': contentType }
    : {
        [TIER_HEADER]: tier,
        vary: 'Authorization',
        'cache-control': 'no-store',
        pragma: 'no-cache',
        'content-type': contentType,
      };
}

/** `make()`, once per key version when a response keeps a `memo` (no memo: every call makes its own). */
function memoized<T>(
  memo: Map<string, Promise<T>> | undefined,
  kid: string,
  ver: number,
  make: () => Promise<T>,
): Promise<T> {
  if (!memo) return make();
  const id = `${kid}\u0000${ver}`;
  let pending = memo.get(id);
  if (!pending) {
    pending = make();
    memo.set(id, pending);
  }
  return pending;
}

/** The distinct key ids of a body's envelopes, in order of appearance. */
function distinctKids(envelopes: readonly ReadEnvelope[]): string[] {
  if (envelopes.length === 1) return [(envelopes[0] as ReadEnvelope).header.kid];
  return [...new Set(envelopes.map((envelope) => envelope.header.kid))];
}

/** An envelope as delivery reads it: its checked header, and its ciphertext when read whole. */
type ReadEnvelope = Envelope | { readonly header: EnvelopeHeaderFields };

/** The decision for one request: who, which tier and why. Exposed to route handlers. */
export interface KosDecision extends TierDecision {
  readonly clientId: string;
}

export interface KosOptions {
  readonly keys: KeyManager;
  readonly identity: IdentitySource;
  readonly access: AccessControl;
  /** Signs medium-tier grants. */
  readonly tokens: TokenIssuer;
  /** Public base URL of each KMS node (absolute, or a path resolved against the request URL). */
  readonly nodes: NodeDirectory;
  readonly tiers?: TierPolicy;
  /**
   * When the client's token names a public key (`cnf.jwk`): wrap high-tier DEKs to it (JWE)
   * and bind medium-tier grants to it (DPoP). Default true.
   */
  readonly bindToClientKey?: boolean;
  /**
   * The audit trail: every decision and every release is recorded before the response leaves;
   * in its fail-closed mode a failed write turns the response into 503 ERR_AUDIT_UNAVAILABLE.
   */
  readonly audit?: AuditTrail;
  /** `seal` creates a key that does not exist yet (development convenience; default false). */
  readonly autoCreateKeys?: boolean;
  /** Counters: decisions and key releases by tier, error responses by code (default: none). */
  readonly metrics?: KosMetrics;
}

/** An admitted request: its decision and the identity it was made for. */
export interface KosAdmission {
  readonly decision: KosDecision;
  readonly identity: Identity;
}

/** What a route answered, as an adapter hands it to `deliver`. */
export interface KosRouteResponse {
  readonly status: number;
  /** A JSON value, bytes (binary bodies), or anything else (passed through). */
  readonly body: unknown;
  /**
   * `snapshotBody(body)` taken when the route handed its value over (an adapter that gets the
   * value before it is serialised, and delivers later, takes it then so later changes to the
   * value do not count). Default: taken when `deliver` is called.
   */
  readonly snapshot?: BodySnapshot;
}

/** A response as KOS hands it back to an adapter. */
export interface KosHttpResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  /** A JSON value, bytes (binary bodies), or undefined for an empty body. */
  readonly body: unknown;
  /** Whether KOS changed the body (false: the adapter keeps the route's own response). */
  readonly transformed: boolean;
}

export interface Kos {
  readonly tiers: TierPolicy;
  readonly keys: KeyManager;
  /** Identifies the caller and decides its tier; throws a KosError (401/403) on denial. */
  decide(request: RequestLike): Promise<KosAdmission>;
  /**
   * `decide`'s answer without waiting, when everything it needs is already known: a token the
   * identity source verified before and still remembers, a tier with no share sets to drop,
   * and no audit trail to write. Undefined otherwise — never an error: call `decide`.
   */
  decideNow(request: RequestLike): KosAdmission | undefined;
  /**
   * Shapes a route's response for the caller's tier: every envelope in a JSON body (at any
   * depth) or a binary envelope body becomes the tier's form. Non-envelope bodies pass.
   */
  deliver(
    request: RequestLike,
    identity: Identity,
    decision: KosDecision,
    response: KosRouteResponse,
  ): Promise<KosHttpResponse>;
  /**
   * `deliver`'s answer without waiting, for a JSON body when everything is at hand: each key's
   * access record (AccessControl `cacheMs`), and per envelope its opening (low, `openNow`), its
   * key record and DEK (high, unwrapped) or a key-bound medium reference still valid; no audit
   * trail to write, no spans recorded. Undefined otherwise — never an error: call `deliver`.
   */
  deliverNow(
    request: RequestLike,
    identity: Identity,
    decision: KosDecision,
    response: KosRouteResponse,
  ): KosHttpResponse | undefined;
  /** Headers every response of a decided request carries. */
  decisionHeaders(decision: KosDecision): Record<string, string>;
  /** The one JSON error response (`{ error: { code, message } }`) for any failure. */
  errorResponse(error: unknown): KosHttpResponse;
  /** Seals a JSON value for a write route (JSON form, ready to store). */
  seal(kid: string, value: unknown, options: { dataId: string }): Promise<EnvelopeJson>;
  /** Revokes a client: no key access, and its share sets are deleted on every node. */
  revokeClient(clientId: string): Promise<void>;
}

const JSON_TYPE = 'application/json; charset=utf-8';

function isBinaryEnvelope(body: unknown): body is Uint8Array {
  return (
    body instanceof Uint8Array &&
    body.length > 4 &&
    body[0] === ENVELOPE_MAGIC[0] &&
    body[1] === ENVELOPE_MAGIC[1] &&
    body[2] === ENVELOPE_MAGIC[2]
  );
}

/**
 * The JWE key management algorithm for a client key, or undefined when the key cannot receive
 * an encrypted key (an Ed25519 signing key, say: it still binds grants through DPoP).
 */
function keyWrapAlgorithm(jwk: JWK): 'RSA-OAEP-256' | 'ECDH-ES' | undefined {
  if (jwk.kty === 'RSA') return 'RSA-OAEP-256';
  if (jwk.kty === 'EC' && ['P-256', 'P-384', 'P-521'].includes(jwk.crv as string)) return 'ECDH-ES';
  if (jwk.kty === 'OKP' && jwk.crv === 'X25519') return 'ECDH-ES';
  return undefined;
}

/** The grant's `jti` (not secret; pseudonymised by the audit trail). */
function grantId(grant: string): string | undefined {
  try {
    const { jti } = decodeJwt(grant);
    return typeof jti === 'string' ? jti : undefined;
  } catch {
    return undefined;
  }
}

function invalid(message: string): KosError {
  return new KosError('ERR_INVALID_OPTIONS', `kos: ${message}`);
}

/**
 * The framework-agnostic heart of the middleware: identity → tier decision → access check →
 * tiered delivery. Adapters translate their request and response to and from these calls.
 */
export function createKos(options: KosOptions): Kos {
  if (!options || typeof options !== 'object') throw invalid('options are required');
  const { keys, identity: identitySource, access, tokens, nodes } = options;
  if (!keys) throw invalid('keys (a KeyManager) are required');
  if (!identitySource || typeof identitySource.identify !== 'function') throw invalid('identity is required');
  if (!access || typeof access.assertAllowed !== 'function') throw invalid('access is required');
  if (!tokens || typeof tokens.issueGrant !== 'function') throw invalid('tokens (a TokenIssuer) are required');
  if (!(nodes instanceof Map)) throw invalid('nodes must be a Map of node id to URL');
  for (const nodeId of keys.nodeIds) {
    if (!nodes.has(nodeId)) throw invalid(`node ${nodeId} has no public URL in nodes`);
  }
  const tiers = options.tiers ?? createTierPolicy();
  for (const band of tiers.options.shareBands) {
    if (band.n > keys.nodeIds.length) {
      throw new KosError('ERR_NOT_ENOUGH_NODES', `kos: medium band from ${band.minScore} needs ${band.n} nodes`);
    }
  }
  const bind = options.bindToClientKey ?? true;
  const audit = options.audit;
  const metrics = options.metrics ?? noopMetrics;
  void loadTracing();
  const record = async (event: AuditEvent): Promise<void> => {
    if (audit) await audit.record(event);
  };

  const boundReferences = new LRUCache<string, MediumKeyReference>({ max: 10_000, ttl: 60_000 });
  const forgetReferences = (clientId: string) => {
    for (const key of [...boundReferences.keys()]) if (key.startsWith(`${clientId}\u0000`)) boundReferences.delete(key);
  };
  /** Clients known to hold no share set (so a non-medium request need not look them up). */
  const withoutSets = new Map<string, number>();
  const SETS_CHECK_TTL_MS = 60_000;

  /** Whether the client was recently found to hold no share set. */
  function knownWithoutSets(clientId: string): boolean {
    const checked = withoutSets.get(clientId);
    return checked !== undefined && Date.now() - checked < SETS_CHECK_TTL_MS;
  }

  /** Deletes the client's share sets unless it is known to hold none (then: nothing to wait for). */
  function dropSetsIfAny(clientId: string): Promise<void> | undefined {
    return knownWithoutSets(clientId) ? undefined : dropSets(clientId);
  }

  async function dropSets(clientId: string): Promise<void> {
    forgetReferences(clientId);
    try {
      await keys.deleteClientSets(clientId);
    } catch (error) {
      // A node is down: the sets stay recorded and the next request tries again. Serving this
      // (non-medium) request does not depend on it.
      if (isKosError(error, 'ERR_STORE_IO')) return;
      throw error;
    }
    withoutSets.set(clientId, Date.now());
    if (withoutSets.size > 10_000) withoutSets.delete(withoutSets.keys().next().value as string);
  }

  // Node URLs that are absolute are the same for every request; relative ones (the embedded
  // default mounts nodes on the app itself) resolve against the request's origin, remembered
  // per origin (bounded: the origin comes from the client's Host header).
  const absoluteNodes = [...nodes.values()].every((url) => URL.canParse(url));
  const relativeToPath = [...nodes.values()].some((url) => !URL.canParse(url) && !url.startsWith('/'));
  const directories = new LRUCache<string, NodeDirectory>({ max: 64 });
  /** A directory's URLs as one string (part of the key-bound grant cache key). */
  const directoryKeys = new WeakMap<NodeDirectory, string>();
  const directoryKey = (directory: NodeDirectory): string => {
    let key = directoryKeys.get(directory);
    if (key === undefined) {
      key = [...directory.values()].join(' ');
      directoryKeys.set(directory, key);
    }
    return key;
  };
  const ORIGIN = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/;

  function nodeDirectoryFor(request: RequestLike): NodeDirectory {
    if (absoluteNodes) return nodes;
    const origin = ORIGIN.exec(request.url)?.[0];
    const cacheKey = relativeToPath ? request.url : origin;
    const cached = cacheKey === undefined ? undefined : directories.get(cacheKey);
    if (cached) return cached;
    let base: URL | undefined;
    try {
      base = new URL(request.url);
    } catch {
      base = undefined;
    }
    const out = new Map<string, string>();
    for (const [nodeId, url] of nodes) out.set(nodeId, base ? new URL(url, base).toString() : url);
    if (cacheKey !== undefined && base) directories.set(cacheKey, out);
    return out;
  }

  /** The client key's RFC 7638 thumbprint, once per key object (identities are cached per token). */
  const thumbprints = new WeakMap<object, { readonly pending: Promise<string>; value?: string }>();
  function thumbprintOf(jwk: JWK): Promise<string> {
    let entry = thumbprints.get(jwk);
    if (!entry) {
      const made: { readonly pending: Promise<string>; value?: string } = { pending: jwkThumbprint(jwk) };
      made.pending.then(
        (value) => {
          made.value = value;
        },
        () => thumbprints.delete(jwk),
      );
      thumbprints.set(jwk, made);
      entry = made;
    }
    return entry.pending;
  }

  /** Whether a high-tier DEK for this identity is wrapped to its key (JWE). */
  const wrapsDek = (identity: Identity): boolean =>
    bind && identity.publicJwk !== undefined && keyWrapAlgorithm(identity.publicJwk as JWK) !== undefined;

  /** The high-tier item for an envelope and its key, members in the wire format's order (no spread). */
  const highItemOf = (envelope: unknown, key: HighKey): HighItem =>
    key.dekJwe === undefined
      ? { kosTier: 'high', envelope, dek: key.dek as string }
      : { kosTier: 'high', envelope, dekJwe: key.dekJwe };

  /** The key part of a high-tier item: the DEK, or the DEK wrapped to the client's key. */
  async function releaseDek(kid: string, ver: number, identity: Identity): Promise<HighKey> {
    const dek = await keys.getDek(kid, ver);
    try {
      if (wrapsDek(identity)) {
        const jwk = identity.publicJwk as JWK;
        const dekJwe = await new CompactEncrypt(dek)
          .setProtectedHeader({ alg: keyWrapAlgorithm(jwk) as string, enc: 'A256GCM', kid: `${kid}.${ver}` })
          .encrypt(jwk);
        return { dekJwe };
      }
      return { dek: toBase64url(dek) };
    } finally {
      wipe(dek);
    }
  }

  /** A high-tier item; `memo` (bodies with several envelopes) releases each key version once. */
  async function highItem(
    envelope: unknown,
    kid: string,
    ver: number,
    identity: Identity,
    memo: Map<string, Promise<HighKey>> | undefined,
  ): Promise<HighItem> {
    return highItemOf(envelope, await memoized(memo, kid, ver, () => releaseDek(kid, ver, identity)));
  }

  /** The low-tier plaintext values of a body now, or undefined when an envelope cannot be opened without waiting. */
  function lowValuesNow(envelopes: readonly ReadEnvelope[]): unknown[] | undefined {
    const values: unknown[] = [];
    for (const envelope of envelopes) {
      // parseAll read it whole for this tier.
      const plaintext = keys.openNow(envelope as Envelope);
      if (!plaintext) return undefined;
      values.push(plaintextValue(plaintext));
      wipe(plaintext);
    }
    return values;
  }

  /** The high-tier items of a body now (DEKs unwrapped), or undefined when a DEK is not cached. */
  function highItemsNow(slots: readonly BodySlot[], envelopes: readonly ReadEnvelope[]): HighItem[] | undefined {
    const released = slots.length > 1 ? new Map<string, string>() : undefined;
    const items: HighItem[] = [];
    for (let i = 0; i < slots.length; i++) {
      const { kid, ver } = (envelopes[i] as ReadEnvelope).header;
      // Several envelopes: each key version released once (one envelope: no key to build).
      const id = released && `${kid}\u0000${ver}`;
      let dek = id === undefined ? undefined : released?.get(id);
      if (dek === undefined) {
        const bytes = keys.peekDek(kid, ver);
        if (!bytes) return undefined;
        dek = toBase64url(bytes);
        wipe(bytes);
        if (id !== undefined) released?.set(id, dek);
      }
      items.push(highItemOf((slots[i] as BodySlot).value, { dek }));
    }
    return items;
  }

  /** Where a key-bound medium reference is remembered. */
  const boundReferenceKey = (
    kid: string,
    ver: number,
    decision: KosDecision,
    dpopJkt: string,
    directory: NodeDirectory,
  ): string =>
    `${decision.clientId}\u0000${kid}\u0000${ver}\u0000${decision.n}\u0000${decision.k}\u0000${dpopJkt}\u0000${directoryKey(directory)}`;

  /** A remembered key-bound reference with more than ten seconds left. */
  function boundReferenceNow(cacheKey: string): MediumKeyReference | undefined {
    const cached = boundReferences.get(cacheKey);
    return cached && cached.expiresAt - 10 > Date.now() / 1000 ? cached : undefined;
  }

  /** The medium-tier items of a body now: only remembered key-bound references (bearer grants are signed per response). */
  function mediumItemsNow(
    slots: readonly BodySlot[],
    envelopes: readonly ReadEnvelope[],
    request: RequestLike,
    identity: Identity,
    decision: KosDecision,
  ): MediumItem[] | undefined {
    const dpopJkt = bind && identity.publicJwk ? thumbprints.get(identity.publicJwk as object)?.value : undefined;
    if (dpopJkt === undefined) return undefined;
    const directory = nodeDirectoryFor(request);
    const items: MediumItem[] = [];
    for (let i = 0; i < slots.length; i++) {
      const { kid, ver } = (envelopes[i] as ReadEnvelope).header;
      const key = boundReferenceNow(boundReferenceKey(kid, ver, decision, dpopJkt, directory));
      if (!key) return undefined;
      items.push({ kosTier: 'medium', envelope: (slots[i] as BodySlot).value, key });
    }
    // No `withoutSets` to clear: a remembered reference means the full path made it (and
    // cleared it), and whatever marks the client set-free since (dropSets, revokeClient)
    // forgets its references first.
    return items;
  }

  /** The share references of a medium-tier item (a key-bound grant is reused until near expiry). */
  async function mediumReference(
    kid: string,
    ver: number,
    request: RequestLike,
    identity: Identity,
    decision: KosDecision,
  ): Promise<MediumKeyReference> {
    const nodesForRequest = nodeDirectoryFor(request);
    const dpopJkt = bind && identity.publicJwk ? await thumbprintOf(identity.publicJwk as JWK) : undefined;
    // A key-bound grant may be reused by its holder until it expires (each use needs a
    // fresh DPoP proof): reuse it rather than sign again. Bearer grants are single-use.
    const cacheKey = dpopJkt ? boundReferenceKey(kid, ver, decision, dpopJkt, nodesForRequest) : undefined;
    const cached = cacheKey ? boundReferenceNow(cacheKey) : undefined;
    if (cached) return cached;
    const reference = await createMediumReference({
      keys,
      tokens,
      nodes: nodesForRequest,
      clientId: decision.clientId,
      kid,
      version: ver,
      n: decision.n as number,
      k: decision.k as number,
      dpopJkt,
    });
    if (cacheKey) boundReferences.set(cacheKey, reference);
    return reference;
  }

  /**
   * A medium-tier item; `memo` (bodies with several envelopes, or an audit trail, which records
   * every reference) asks for each key version's references once.
   */
  async function mediumItem(
    envelope: unknown,
    kid: string,
    ver: number,
    request: RequestLike,
    identity: Identity,
    decision: KosDecision,
    memo: Map<string, Promise<MediumKeyReference>> | undefined,
  ): Promise<MediumItem> {
    const pending = memoized(memo, kid, ver, () => mediumReference(kid, ver, request, identity, decision));
    withoutSets.delete(decision.clientId);
    return { kosTier: 'medium', envelope, key: await pending };
  }

  /**
   * Reads every envelope found in a body, with all of decode's checks: whole when this server
   * decrypts it (low tier), otherwise only its header (high and medium pass the envelope on as
   * it is, so the ciphertext's bytes are checked but not kept).
   */
  function parseAll(found: readonly unknown[], tier: KosDecision['tier']): ReadEnvelope[] {
    return found.map((value) => {
      try {
        return tier === 'low' ? keys.decode(value) : { header: keys.decodeHeader(value) };
      } catch (error) {
        throw new KosError('ERR_RESPONSE_ENVELOPE_INVALID', 'a stored envelope in the response could not be read', {
          details: { code: isKosError(error) ? error.code : 'unknown' },
        });
      }
    });
  }

  /**
   * A body's envelopes, read with all of parseAll's checks, with their distinct key ids;
   * undefined for a body without any. Throws what the body or an envelope cannot be.
   */
  function readEnvelopes(
    snapshot: BodySnapshot | Error | undefined,
    tier: KosDecision['tier'],
  ): { snapshot: BodySnapshot; slots: readonly BodySlot[]; envelopes: ReadEnvelope[]; kids: string[] } | undefined {
    if (snapshot instanceof Error) throw snapshot;
    if (snapshot === undefined || snapshot.slots.length === 0) return undefined;
    const envelopes = parseAll(
      snapshot.slots.map((slot) => slot.value),
      tier,
    );
    return { snapshot, slots: snapshot.slots, envelopes, kids: distinctKids(envelopes) };
  }

  async function shapeOne(
    original: unknown,
    envelope: ReadEnvelope,
    request: RequestLike,
    identity: Identity,
    decision: KosDecision,
    memos: Memos,
  ): Promise<unknown> {
    const { kid, ver } = envelope.header;
    switch (decision.tier) {
      case 'low': {
        // parseAll read it whole for this tier.
        const plaintext = await keys.open(envelope as Envelope);
        try {
          return plaintextValue(plaintext);
        } finally {
          wipe(plaintext);
        }
      }
      case 'high':
        return highItem(original, kid, ver, identity, memos.high);
      case 'medium':
        return mediumItem(original, kid, ver, request, identity, decision, memos.medium);
    }
  }

  function decisionFacts(decision: KosDecision) {
    return {
      clientId: decision.clientId,
      tier: decision.tier,
      band: decision.band,
      ...(decision.n === undefined ? {} : { n: decision.n, k: decision.k as number }),
    };
  }

  /** Records what left the server, before it leaves (fail-closed: throws ERR_AUDIT_UNAVAILABLE). */
  async function recordRelease(
    decision: KosDecision,
    kids: readonly string[],
    references: Map<string, Promise<MediumKeyReference>> | undefined,
  ) {
    if (audit) await auditRelease(decision, kids, references);
    // Counted once the release is on the record (a failed audit write answers 503 instead).
    metrics.keyRelease(decision.tier);
  }

  async function auditRelease(
    decision: KosDecision,
    kids: readonly string[],
    // Kept for every medium response while an audit trail is configured.
    references: Map<string, Promise<MediumKeyReference>> | undefined,
  ) {
    const facts = decisionFacts(decision);
    if (decision.tier === 'medium' && references) {
      for (const pending of references.values()) {
        const reference = await pending;
        const jti = grantId(reference.grant);
        await record({
          type: 'grant.issued',
          outcome: 'ok',
          ...facts,
          kid: reference.kid,
          version: reference.ver,
          nodesAsked: reference.shares.map((share) => share.nodeId),
          ...(jti ? { jti } : {}),
        });
      }
    }
    await record({
      type: 'key.released',
      outcome: 'ok',
      ...facts,
      kids,
      reason: decision.tier === 'low' ? 'plaintext' : decision.tier === 'high' ? 'dek' : 'share references',
    });
  }

  /**
   * The JSON view of a route's body, taken now (before any await: what the route handed over is
   * what is delivered); undefined for bodies KOS does not look into, the error for bodies JSON
   * cannot carry (thrown inside `deliver`'s error handling).
   */
  function takeSnapshot(response: KosRouteResponse): BodySnapshot | Error | undefined {
    if (response.snapshot) return response.snapshot;
    const body = response.body;
    const walkable =
      (typeof body === 'object' && body !== null && !(body instanceof Uint8Array)) || isCompactEnvelope(body);
    if (!walkable) return undefined;
    try {
      return snapshotBody(body);
    } catch (error) {
      return error instanceof Error ? error : new KosError('ERR_INTERNAL', 'the response body could not be read');
    }
  }

  /** A response with no envelope in it: the route's own, with the decision's headers. */
  const passedThrough = (decision: KosDecision, response: KosRouteResponse): KosHttpResponse => ({
    status: response.status,
    headers: kos.decisionHeaders(decision),
    body: response.body,
    transformed: false,
  });

  /** Shapes one response for its tier (the body of `deliver`, inside its span). */
  async function deliverInSpan(
    request: RequestLike,
    identity: Identity,
    decision: KosDecision,
    response: KosRouteResponse,
    snapshot: BodySnapshot | Error | undefined,
    span: KosSpan,
  ): Promise<KosHttpResponse> {
    try {
      if (isBinaryEnvelope(response.body)) {
        const memos: Memos = { high: undefined, medium: audit ? new Map() : undefined };
        const envelope = parseAll([response.body], 'low')[0] as Envelope;
        span.setAttribute('kos.kids', [envelope.header.kid]);
        span.setAttribute('kos.envelopes', 1);
        await access.assertAllowed(decision.clientId, envelope.header.kid);
        if (decision.tier === 'low') {
          const plaintext = await keys.open(envelope);
          await recordRelease(decision, [envelope.header.kid], memos.medium);
          return {
            status: response.status,
            headers: shapedHeaders(decision.tier, 'application/octet-stream'),
            body: plaintext,
            transformed: true,
          };
        }
        const item = await shapeOne(encodeEnvelope(envelope, 'compact'), envelope, request, identity, decision, memos);
        await recordRelease(decision, [envelope.header.kid], memos.medium);
        return {
          status: response.status,
          headers: shapedHeaders(decision.tier, JSON_TYPE),
          body: item,
          transformed: true,
        };
      }
      const read = readEnvelopes(snapshot, decision.tier);
      if (!read) return passedThrough(decision, response);
      const { slots, envelopes, kids } = read;
      span.setAttribute('kos.kids', kids);
      span.setAttribute('kos.envelopes', envelopes.length);
      for (const kid of kids) await access.assertAllowed(decision.clientId, kid);
      const several = slots.length > 1;
      const memos: Memos = {
        high: several ? new Map() : undefined,
        medium: several || audit ? new Map() : undefined,
      };
      const shaped =
        slots.length === 1
          ? [
              await shapeOne(
                (slots[0] as BodySlot).value,
                envelopes[0] as ReadEnvelope,
                request,
                identity,
                decision,
                memos,
              ),
            ]
          : await Promise.all(
              slots.map((slot, i) =>
                shapeOne(slot.value, envelopes[i] as ReadEnvelope, request, identity, decision, memos),
              ),
            );
      const body = fillSlots(read.snapshot, shaped);
      await recordRelease(decision, kids, memos.medium);
      return {
        status: response.status,
        headers: shapedHeaders(decision.tier, JSON_TYPE),
        body,
        transformed: true,
      };
    } catch (error) {
      failSpan(span, isKosError(error) ? error.code : 'ERR_INTERNAL');
      if (!isKosError(error, 'ERR_AUDIT_UNAVAILABLE')) {
        await record({
          type: 'key.released',
          outcome: 'error',
          code: isKosError(error) ? error.code : 'ERR_INTERNAL',
          ...decisionFacts(decision),
        }).catch(() => undefined);
      }
      const failed = kos.errorResponse(error);
      return { ...failed, headers: { ...failed.headers, ...kos.decisionHeaders(decision) } };
    }
  }

  /** `decideNow`'s answer (it may throw where `decide` would refuse: the caller takes that as undefined). */
  function admissionNow(request: RequestLike): KosAdmission | undefined {
    if (audit || !identitySource.peek) return undefined;
    const identity = identitySource.peek(request);
    if (!identity) return undefined;
    const tierDecision = tiers.decide(identity.score);
    if (tierDecision.tier !== 'medium' && !knownWithoutSets(identity.clientId)) return undefined;
    metrics.decision(tierDecision.tier);
    return { decision: { clientId: identity.clientId, ...tierDecision }, identity };
  }

  /** `deliverNow`'s answer (it may throw where `deliver` would answer an error: taken as undefined). */
  function deliveryNow(
    request: RequestLike,
    identity: Identity,
    decision: KosDecision,
    response: KosRouteResponse,
  ): KosHttpResponse | undefined {
    // What never has an answer now, known before the body is read (so the full path does not
    // read it a second time): no remembered access records, a DEK wrapped to the client's key
    // (JWE), a bearer medium grant (signed per response).
    if (audit || !access.peekAllowed || isBinaryEnvelope(response.body) || spansRecorded()) return undefined;
    if (decision.tier === 'high' ? wrapsDek(identity) : decision.tier === 'medium' && !(bind && identity.publicJwk)) {
      return undefined;
    }
    const snapshot = takeSnapshot(response);
    const read = readEnvelopes(snapshot, decision.tier);
    if (!read) return passedThrough(decision, response);
    const { slots, envelopes, kids } = read;
    for (const kid of kids) {
      if (access.peekAllowed?.(decision.clientId, kid) !== true) return undefined;
    }
    const items =
      decision.tier === 'low'
        ? lowValuesNow(envelopes)
        : decision.tier === 'high'
          ? highItemsNow(slots, envelopes)
          : mediumItemsNow(slots, envelopes, request, identity, decision);
    if (!items) return undefined;
    metrics.keyRelease(decision.tier);
    return {
      status: response.status,
      headers: shapedHeaders(decision.tier, JSON_TYPE),
      body: fillSlots(read.snapshot, items),
      transformed: true,
    };
  }

  const kos: Kos = {
    tiers,
    keys,
    async decide(request) {
      try {
        const identity = await identitySource.identify(request);
        let tierDecision: TierDecision;
        try {
          tierDecision = tiers.decide(identity.score);
        } catch (error) {
          // Below the deny floor: out of medium too, so the client's share sets go.
          if (isKosError(error, 'ERR_SCORE_BELOW_FLOOR')) await dropSetsIfAny(identity.clientId);
          throw error;
        }
        const decision: KosDecision = { clientId: identity.clientId, ...tierDecision };
        // Out of medium: the client's share sets go now, whatever the route answers (a 404, a
        // redirect, text), so its outstanding grants stop working.
        if (decision.tier !== 'medium') {
          const dropping = dropSetsIfAny(decision.clientId);
          if (dropping) await dropping;
        }
        if (audit) await record({ type: 'decision', outcome: 'ok', ...decisionFacts(decision) });
        metrics.decision(decision.tier);
        return { decision, identity };
      } catch (error) {
        if (isKosError(error, 'ERR_AUDIT_UNAVAILABLE')) throw error;
        await record({ type: 'denied', outcome: 'denied', code: isKosError(error) ? error.code : 'ERR_INTERNAL' });
        throw error;
      }
    },

    decideNow(request) {
      try {
        return admissionNow(request);
      } catch {
        // A custom identity source or policy that throws: the full path answers (or names it).
        return undefined;
      }
    },

    deliverNow(request, identity, decision, response) {
      try {
        return deliveryNow(request, identity, decision, response);
      } catch {
        return undefined;
      }
    },

    decisionHeaders(decision) {
      return { [TIER_HEADER]: decision.tier, vary: 'Authorization' };
    },

    deliver(request, identity, decision, response) {
      // Read now, before anything awaits: what the route handed over is what gets delivered.
      const snapshot = takeSnapshot(response);
      const attributes: SpanAttributes = { 'kos.tier': decision.tier, 'kos.band': decision.band };
      if (decision.n !== undefined) {
        attributes['kos.share_set.n'] = decision.n;
        attributes['kos.share_set.k'] = decision.k as number;
      }
      return withSpan('kos.deliver', attributes, (span) =>
        deliverInSpan(request, identity, decision, response, snapshot, span),
      );
    },

    errorResponse(error) {
      const body = toErrorBody(error);
      metrics.error(body.error.code);
      const status = isKosError(error) ? error.status : 500;
      return { status, headers: { 'content-type': JSON_TYPE, 'cache-control': 'no-store' }, body, transformed: true };
    },

    async seal(kid, value, sealOptions) {
      const plaintext = utf8(JSON.stringify(value));
      try {
        return encodeEnvelope(await keys.seal(kid, plaintext, sealOptions), 'json');
      } catch (error) {
        if (!options.autoCreateKeys || !isKosError(error, 'ERR_KEY_NOT_FOUND')) throw error;
        await keys.createKey(kid).catch((raced: unknown) => {
          if (!isKosError(raced, 'ERR_KEY_EXISTS')) throw raced;
        });
        return encodeEnvelope(await keys.seal(kid, plaintext, sealOptions), 'json');
      } finally {
        wipe(plaintext);
      }
    },

    async revokeClient(clientId) {
      await record({ type: 'client.revoked', clientId, outcome: 'ok' });
      await access.revoke(clientId, '*');
      await keys.deleteClientSets(clientId);
      for (const key of [...boundReferences.keys()])
        if (key.startsWith(`${clientId}\u0000`)) boundReferences.delete(key);
      withoutSets.set(clientId, Date.now());
    },
  };
  return kos;
}
