import { compactDecrypt } from 'jose';
import { fromBase64url, wipe } from '../bytes.js';
import type { CryptoProvider } from '../crypto/provider.js';
import { createWebCryptoProvider } from '../crypto/web-provider.js';
import { findMatching, replaceMatching } from '../delivery/body-walker.js';
import type { MediumKeyReference } from '../delivery/medium-reference.js';
import { isTieredItem, plaintextValue } from '../delivery/tiered-item.js';
import { decodeEnvelope } from '../envelope/codec.js';
import { openWithKey } from '../envelope/seal.js';
import { isKosError, KosError } from '../errors.js';
import { createDpopProof } from '../grants/dpop.js';
import { decodeShareBody, MAX_SHARE_BODY_BYTES } from '../kms-api/share-body.js';
import { classifyShareError, rebuildDek, type ShareCandidate, type ShareFailure } from '../shares/rebuild.js';
import type { SharePlacement, ShareSetRecord } from '../shares/share-set.js';

/** A high-tier item: the envelope and its DEK (base64url), or the DEK wrapped to the client's key (JWE). */
export interface HighTierItem {
  readonly envelope: unknown;
  readonly dek?: string;
  readonly dekJwe?: string;
}

/** A medium-tier item: the envelope and a reference to the client's shares. */
export interface MediumTierItem {
  readonly envelope: unknown;
  readonly key: MediumKeyReference;
}

/**
 * The client's own key pair, named in its identity token as `cnf.jwk`: KOS wraps high-tier
 * DEKs to it (ECDH-ES JWE) and binds medium-tier grants to it (DPoP signatures). Use a P-256
 * key (ES256 / ECDH-ES), which WebCrypto supports everywhere.
 */
export interface ClientKeyPair {
  /** Signs DPoP proofs (ES256 or EdDSA). */
  readonly privateKey: CryptoKey;
  readonly publicJwk: JsonWebKey;
  readonly alg?: 'EdDSA' | 'ES256';
  /** Decrypts JWE-wrapped DEKs (ECDH-ES); a P-256 key imported for `deriveBits`. */
  readonly decryptionKey?: CryptoKey;
}

export interface OpenerOptions {
  /** fetch to use (default: the global one). */
  readonly fetch?: typeof fetch;
  /** Per-node timeout (default 3000 ms). */
  readonly timeoutMs?: number;
  /** Ask one more node when one has not answered after this long (default 300 ms). */
  readonly hedgeAfterMs?: number;
  /**
   * Share requests sent beyond k from the start (default 1), so one stalled node costs no
   * waiting; the surplus is aborted once k shares are verified.
   */
  readonly extraFetches?: number;
  /** The client's key pair, when its token names one (`cnf.jwk`). */
  readonly clientKey?: ClientKeyPair;
  /** AEAD implementation (default: WebCrypto, @noble where WebCrypto is missing). */
  readonly crypto?: CryptoProvider;
}

export interface Opener {
  /** Decrypts a high- or medium-tier item; a key fetched once is reused for the same key version. */
  open(item: HighTierItem | MediumTierItem): Promise<Uint8Array>;
  /**
   * A copy of a KOS response body with every high- and medium-tier item replaced by its
   * plaintext value (JSON-parsed, as the route sealed it).
   */
  openBody(body: unknown): Promise<unknown>;
  /** Fetches k verified shares of a reference and rebuilds the DEK (copy; wipe it when done). */
  fetchKey(reference: MediumKeyReference): Promise<Uint8Array>;
  /** Nodes that failed on the last key fetch (ids and reasons; nothing secret). */
  readonly lastFailures: readonly ShareFailure[];
  /** Zeroes every key this opener holds. */
  dispose(): void;
}

function isMedium(item: HighTierItem | MediumTierItem): item is MediumTierItem {
  return typeof (item as MediumTierItem).key === 'object' && (item as MediumTierItem).key !== null;
}

async function readLimited(response: Response, limit: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? '0');
  if (declared > limit) {
    // Drop the connection rather than let the node keep pushing bytes at us.
    await response.body?.cancel().catch(() => undefined);
    throw new KosError('ERR_KMS_BODY_TOO_LARGE', 'node answered with an oversize body');
  }
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      throw new KosError('ERR_KMS_BODY_TOO_LARGE', 'node answered with an oversize body');
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return new TextDecoder().decode(all);
}

/**
 * The client side of KOS, for browsers and Node (Web APIs only): opens high-tier items with
 * the DEK they carry, and medium-tier items by fetching the client's shares from the KMS
 * nodes in parallel, verifying each against its digest, stopping at the first k good ones
 * (the rest are aborted, slow nodes hedged around), combining, checking the key-check value
 * and decrypting. Keys are zeroed on `dispose()` (best effort in JavaScript).
 */
export function createOpener(options: OpenerOptions = {}): Opener {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const timeoutMs = options.timeoutMs ?? 3000;
  const hedgeAfterMs = options.hedgeAfterMs ?? 300;
  const extraAttempts = options.extraFetches ?? 1;
  const crypto = options.crypto ?? createWebCryptoProvider();
  const keys = new Map<string, Promise<Uint8Array>>();
  let lastFailures: readonly ShareFailure[] = [];

  async function fetchShare(
    reference: MediumKeyReference,
    placement: SharePlacement,
    url: string,
    signal: AbortSignal,
  ) {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (reference.dpop) {
      if (!options.clientKey)
        throw new KosError('ERR_DPOP_REQUIRED', 'this grant is bound to a key the opener does not have');
      headers.authorization = `DPoP ${reference.grant}`;
      headers.dpop = await createDpopProof({
        privateKey: options.clientKey.privateKey,
        publicJwk: options.clientKey.publicJwk as never,
        alg: options.clientKey.alg ?? (options.clientKey.publicJwk.kty === 'EC' ? 'ES256' : 'EdDSA'),
        method: 'GET',
        url,
        accessToken: reference.grant,
      });
    } else {
      headers.authorization = `Bearer ${reference.grant}`;
    }
    let response: Response;
    try {
      response = await doFetch(url, { method: 'GET', headers, signal, credentials: 'omit', cache: 'no-store' });
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw new KosError('ERR_KMS_UNREACHABLE', `node ${placement.nodeId} is unreachable`, { cause: error });
    }
    const text = await readLimited(response, MAX_SHARE_BODY_BYTES);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new KosError('ERR_KMS_BAD_BODY', `node ${placement.nodeId} answered with a non-JSON body`);
    }
    if (!response.ok) {
      const code = (body as { error?: { code?: unknown } })?.error?.code;
      throw new KosError('ERR_KMS_BAD_STATUS', `node ${placement.nodeId} answered ${response.status}`, {
        details: { status: response.status, ...(typeof code === 'string' ? { nodeCode: code.slice(0, 64) } : {}) },
      });
    }
    return decodeShareBody((body as { share?: unknown }).share, 'ERR_KMS_BAD_BODY') as ShareCandidate;
  }

  async function rebuild(reference: MediumKeyReference): Promise<Uint8Array> {
    if (!Number.isInteger(reference.k) || reference.k < 2 || !Array.isArray(reference.shares)) {
      throw new KosError('ERR_INVALID_ARGUMENT', 'key reference is malformed');
    }
    const urls = new Map(reference.shares.map((share) => [share.shareId, share.url]));
    const set: ShareSetRecord = {
      setId: reference.setId,
      kid: reference.kid,
      version: reference.ver,
      owner: '',
      n: reference.shares.length,
      k: reference.k,
      placements: reference.shares.map(({ nodeId, shareId, x, digest }) => ({ nodeId, shareId, x, digest })),
      createdAt: 0,
    };
    try {
      const result = await rebuildDek({
        crypto,
        set,
        kcv: reference.kcv,
        timeoutMs,
        hedgeAfterMs,
        extraAttempts,
        fetch: (placement, signal) => fetchShare(reference, placement, urls.get(placement.shareId) as string, signal),
        classify: (error) => {
          const nodeCode = isKosError(error) ? error.details?.nodeCode : undefined;
          return typeof nodeCode === 'string' ? { reason: 'unavailable', code: nodeCode } : classifyShareError(error);
        },
      });
      lastFailures = result.failures;
      return result.dek;
    } catch (error) {
      const failures = isKosError(error) ? error.details?.failures : undefined;
      lastFailures = Array.isArray(failures) ? (failures as ShareFailure[]) : [];
      throw error;
    }
  }

  async function highTierKey(item: HighTierItem): Promise<Uint8Array> {
    if (typeof item.dekJwe === 'string') {
      const key = options.clientKey?.decryptionKey;
      if (!key)
        throw new KosError('ERR_INVALID_ARGUMENT', 'this key is wrapped to the client key: pass its decryptionKey');
      try {
        return (await compactDecrypt(item.dekJwe, key, { keyManagementAlgorithms: ['ECDH-ES', 'RSA-OAEP-256'] }))
          .plaintext;
      } catch {
        throw new KosError('ERR_DECRYPTION_FAILED', '');
      }
    }
    if (typeof item.dek !== 'string') throw new KosError('ERR_INVALID_ARGUMENT', 'high-tier item carries no key');
    return fromBase64url(item.dek, 'dek');
  }

  function keyFor(reference: MediumKeyReference): Promise<Uint8Array> {
    const id = `${reference.kid}\u0000${reference.ver}\u0000${reference.setId}`;
    let pending = keys.get(id);
    if (!pending) {
      pending = rebuild(reference);
      pending.catch(() => keys.delete(id));
      keys.set(id, pending);
    }
    return pending;
  }

  return {
    get lastFailures() {
      return lastFailures;
    },
    async fetchKey(reference) {
      return new Uint8Array(await keyFor(reference));
    },
    async open(item) {
      const envelope = decodeEnvelope(item.envelope);
      if (isMedium(item)) {
        const key = await keyFor(item.key);
        if (item.key.kid !== envelope.header.kid || item.key.ver !== envelope.header.ver) {
          throw new KosError('ERR_INVALID_ARGUMENT', 'key reference is for another key version');
        }
        return openWithKey({ crypto, key, envelope });
      }
      const dek = await highTierKey(item);
      try {
        return await openWithKey({ crypto, key: dek, envelope });
      } finally {
        wipe(dek);
      }
    },
    async openBody(body) {
      const items = findMatching(body, isTieredItem, false) as Array<HighTierItem | MediumTierItem>;
      const opened = new Map<unknown, unknown>();
      await Promise.all(
        items.map(async (item) => {
          const plaintext = await this.open(item);
          opened.set(item, plaintextValue(plaintext));
          wipe(plaintext);
        }),
      );
      return replaceMatching(
        body,
        (value) => opened.has(value),
        (value) => opened.get(value),
      );
    },
    dispose() {
      for (const pending of keys.values()) pending.then((key) => wipe(key)).catch(() => undefined);
      keys.clear();
    },
  };
}
