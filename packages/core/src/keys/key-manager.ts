import { LRUCache } from 'lru-cache';
import { toBase64url, wipe } from '../bytes.js';
import {
  AEAD_ALGORITHMS,
  type AeadAlgorithm,
  assertAllowedAlgorithm,
  DEFAULT_ALGORITHM,
} from '../crypto/algorithms.js';
import { createNodeCryptoProvider } from '../crypto/node-provider.js';
import type { CryptoProvider, KeyedHmacSha256 } from '../crypto/provider.js';
import { type DecodeOptions, decodeEnvelope, decodeEnvelopeHeader, type Envelope } from '../envelope/codec.js';
import { keyCheckValue } from '../envelope/commitment.js';
import type { EnvelopeHeaderFields } from '../envelope/header.js';
import { openWithKeyUsing, sealWithKeyUsing } from '../envelope/seal.js';
import { isKosError, KosError } from '../errors.js';
import {
  errorCodeOf,
  type KosLogger,
  type KosMetrics,
  noopMetrics,
  type ShareFetchOutcome,
  silentLogger,
} from '../observability/metrics.js';
import { loadTracing, withSpan } from '../observability/tracing.js';
import { GatherTimeoutError } from '../shares/gather.js';
import { assertPlaceable } from '../shares/placement.js';
import { rebuildDek, type ShareFailure } from '../shares/rebuild.js';
import { type ShareSetRecord, SYSTEM_OWNER } from '../shares/share-set.js';
import { assertThreshold, randomId, splitDek } from '../shares/split.js';
import { assertId } from '../stores/ids.js';
import type { MetadataStore, Revisioned } from '../stores/metadata-store.js';
import type { ShareStore } from '../stores/share-store.js';
import type { TierPolicy } from '../trust/tier-policy.js';
import { DekCache, type DekCacheOptions } from './dek-cache.js';
import type { KeyRecord, KeyVersionRecord } from './key-record.js';
import { OpCounter } from './op-counter.js';

/** Events for the audit trail. They name keys, versions and nodes, never key material. */
export type KeyManagerEvent =
  | { type: 'key.rotated'; kid: string; version: number; previousVersion?: number; reason: string }
  | { type: 'key.versions-retired'; kid: string; minDecryptVersion: number }
  | { type: 'key.version-destroyed'; kid: string; version: number }
  | { type: 'shares.rejected'; kid: string; version: number; setId: string; failures: readonly ShareFailure[] }
  | {
      type: 'key.rebuilt';
      kid: string;
      version: number;
      owner: string;
      nodesAsked: readonly string[];
      nodesAnswered: readonly string[];
    }
  | { type: 'client-set.provisioned'; kid: string; version: number; clientId: string; n: number; k: number }
  | { type: 'client-set.deleted'; kid: string; version: number; clientId: string };

export interface KeyManagerOptions {
  readonly metadata: MetadataStore;
  /** The KMS nodes, one share store each. */
  readonly nodes: readonly ShareStore[];
  /** The system share set of every version (default n = min(5, nodes), k = n/2 + 1). */
  readonly systemShares?: { readonly n: number; readonly k: number };
  /** When given, every medium share band must be placeable on `nodes` (checked now). */
  readonly tierPolicy?: TierPolicy;
  /** Algorithm for new versions (default A256GCM). */
  readonly algorithm?: AeadAlgorithm;
  /** Encryptions per version before it is rotated out (default 2^28; GCM limit is 2^32). */
  readonly maxOpsPerVersion?: number;
  /** Operations reserved per metadata round trip (default 1024). */
  readonly opsReserveBlock?: number;
  /** Scheduled rotation: a primary older than this is due (default: none). */
  readonly rotationPeriodMs?: number;
  /** How long a rotation lock lives if its holder dies (default 30 000). */
  readonly lockTtlMs?: number;
  /** How long `rotate` waits for another instance's rotation (default 10 000). */
  readonly lockWaitMs?: number;
  readonly dekCache?: DekCacheOptions;
  /** How long a key record is reused before it is read again (default 1000). */
  readonly keyRecordTtlMs?: number;
  /** Per-node share fetch timeout (default 5000). */
  readonly shareTimeoutMs?: number;
  /** Ask one more node when a node has not answered after this long (default 250). */
  readonly hedgeAfterMs?: number;
  readonly maxCiphertextBytes?: number;
  readonly crypto?: CryptoProvider;
  readonly clock?: () => number;
  readonly onEvent?: (event: KeyManagerEvent) => void;
  /** Counters and timings: DEK cache hits and misses, share fetch latency per node, rotations. */
  readonly metrics?: KosMetrics;
  /** A pino-compatible logger for failed rotations and failing nodes (silent by default). */
  readonly logger?: KosLogger;
}

export interface SealOptions {
  /** The record the data belongs to; bound into the ciphertext. */
  readonly dataId: string;
}

export interface OpenOptions {
  /** When given, the envelope must belong to this record. */
  readonly dataId?: string;
}

export interface RotateOptions {
  readonly reason?: string;
  /** Remove share sets left by crashed rotations of this key first (default true). */
  readonly collectOrphans?: boolean;
  /** Only rotate if this is still the primary version (used for wear-out and schedules). */
  readonly ifPrimaryIs?: number;
}

/** Key state resolved once for a seal or a batch of rewraps. */
interface KeyBatch {
  /** Decryptable versions by DekCache.key(kid, version). */
  readonly versions: Map<string, KeyVersionRecord>;
  /** Primary version, and its DEK, by key id. */
  readonly primaries: Map<string, { readonly version: KeyVersionRecord; readonly key: BatchKey }>;
  /** DEK copies (and an HMAC keyed with each, when the provider has one) by DekCache.key(kid, version); wiped when the batch ends. */
  readonly deks: Map<string, BatchKey>;
  /** Whether to key an HMAC per DEK (pays off from a few envelopes per DEK on). */
  readonly keyedMacs: boolean;
}

interface BatchKey {
  readonly dek: Uint8Array;
  readonly mac: KeyedHmacSha256 | undefined;
}

const DEFAULT_MAX_OPS = 2 ** 28;

function invalid(message: string): KosError {
  return new KosError('ERR_INVALID_OPTIONS', `key manager: ${message}`);
}

function positive(value: number | undefined, fallback: number, name: string): number {
  const resolved = value ?? fallback;
  if (!Number.isFinite(resolved) || resolved <= 0) throw invalid(`${name} must be a positive number`);
  return resolved;
}

/** Whether a version may still decrypt: neither destroyed nor retired, nor below the key's minimum. */
function mayDecrypt(record: KeyRecord, entry: KeyVersionRecord): boolean {
  return entry.state !== 'destroyed' && entry.state !== 'retired' && entry.version >= record.minDecryptVersion;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The key registry and everything that touches a DEK: versions and rotation, sealing and
 * opening envelopes, rebuilding DEKs from verified shares, and client share sets.
 *
 * @example
 * const keys = new KeyManager({ metadata, nodes });
 * await keys.createKey('orders');
 * const envelope = await keys.seal('orders', utf8('{"total":42}'), { dataId: 'order-1' });
 * const plaintext = await keys.open(envelope, { dataId: 'order-1' });
 */
export class KeyManager {
  readonly #metadata: MetadataStore;
  readonly #nodes: ReadonlyMap<string, ShareStore>;
  readonly #system: { n: number; k: number };
  readonly #algorithm: AeadAlgorithm;
  readonly #maxOps: number;
  readonly #rotationPeriodMs: number | undefined;
  readonly #lockTtlMs: number;
  readonly #lockWaitMs: number;
  readonly #keyRecordTtlMs: number;
  /** Whether the crypto provider opened synchronously so far (openNow is tried only then). */
  #openIsSync = true;
  readonly #shareTimeoutMs: number;
  readonly #hedgeAfterMs: number;
  /** The size limit for every envelope this manager reads. */
  readonly #decodeOptions: DecodeOptions;
  readonly #crypto: CryptoProvider;
  readonly #clock: () => number;
  readonly #onEvent: ((event: KeyManagerEvent) => void) | undefined;
  readonly #metrics: KosMetrics;
  readonly #logger: KosLogger;
  readonly #cache: DekCache;
  readonly #ops: OpCounter;
  readonly #records = new Map<string, { value: Revisioned<KeyRecord>; readAt: number }>();
  readonly #rebuilding = new Map<string, Promise<Uint8Array>>();
  /** Key commitments verified by `open` (key-check value, nonce, commitment), bounded. */
  readonly #verifiedCommitments = new LRUCache<string, true>({ max: 10_000 });
  /**
   * Client share sets recently provisioned or found here, so a medium-tier response costs no
   * metadata lookup. Another instance's revocation is seen after at most the TTL; until then
   * its deleted shares make this instance's references fail closed (ERR_SHARE_NOT_FOUND).
   */
  readonly #clientSets = new LRUCache<string, ShareSetRecord>({ max: 10_000, ttl: 30_000 });
  readonly #provisioning = new Map<string, Promise<ShareSetRecord>>();

  constructor(options: KeyManagerOptions) {
    if (!options || typeof options !== 'object') throw invalid('options are required');
    if (!options.metadata) throw invalid('metadata store is required');
    if (!Array.isArray(options.nodes) || options.nodes.length < 2) {
      throw new KosError('ERR_NOT_ENOUGH_NODES', 'key manager: at least 2 KMS nodes are required');
    }
    const nodes = new Map<string, ShareStore>();
    for (const node of options.nodes) {
      if (!node || typeof node.get !== 'function' || typeof node.put !== 'function') {
        throw invalid('every node must be a ShareStore');
      }
      assertId(node.nodeId, 'node id');
      if (nodes.has(node.nodeId)) throw invalid(`node id ${node.nodeId} is used twice`);
      nodes.set(node.nodeId, node);
    }
    const n = options.systemShares?.n ?? Math.min(5, nodes.size);
    const k = options.systemShares?.k ?? Math.floor(n / 2) + 1;
    assertThreshold(n, k, 'key manager: systemShares');
    assertPlaceable([...nodes.values()], n, k, 'the system share set');
    if (options.tierPolicy) {
      for (const band of options.tierPolicy.options.shareBands) {
        assertPlaceable([...nodes.values()], band.n, band.k, `medium band from score ${band.minScore}`);
      }
    }
    const algorithm = options.algorithm ?? DEFAULT_ALGORITHM;
    assertAllowedAlgorithm(algorithm);
    const maxOps = positive(options.maxOpsPerVersion, DEFAULT_MAX_OPS, 'maxOpsPerVersion');
    if (!Number.isInteger(maxOps) || maxOps > 2 ** 32) throw invalid('maxOpsPerVersion must be an integer <= 2^32');
    const block = positive(options.opsReserveBlock, 1024, 'opsReserveBlock');
    this.#metadata = options.metadata;
    this.#nodes = nodes;
    this.#system = { n, k };
    this.#algorithm = algorithm;
    this.#maxOps = maxOps;
    this.#rotationPeriodMs =
      options.rotationPeriodMs === undefined ? undefined : positive(options.rotationPeriodMs, 0, 'rotationPeriodMs');
    this.#lockTtlMs = positive(options.lockTtlMs, 30_000, 'lockTtlMs');
    this.#lockWaitMs = positive(options.lockWaitMs, 10_000, 'lockWaitMs');
    this.#keyRecordTtlMs = options.keyRecordTtlMs ?? 1000;
    this.#shareTimeoutMs = positive(options.shareTimeoutMs, 5000, 'shareTimeoutMs');
    this.#hedgeAfterMs = positive(options.hedgeAfterMs, 250, 'hedgeAfterMs');
    this.#decodeOptions =
      options.maxCiphertextBytes === undefined ? {} : { maxCiphertextBytes: options.maxCiphertextBytes };
    this.#crypto = options.crypto ?? createNodeCryptoProvider();
    this.#clock = options.clock ?? Date.now;
    this.#onEvent = options.onEvent;
    this.#metrics = options.metrics ?? noopMetrics;
    this.#logger = options.logger ?? silentLogger;
    try {
      this.#cache = new DekCache(options.dekCache);
    } catch (error) {
      throw invalid((error as Error).message);
    }
    this.#ops = new OpCounter(this.#metadata, maxOps, Math.floor(block));
    this.#metrics.watchKeys?.(this);
    void loadTracing();
  }

  /** The system set parameters in force. */
  get systemShares(): { readonly n: number; readonly k: number } {
    return { ...this.#system };
  }

  /** Node ids in configuration order. */
  get nodeIds(): string[] {
    return [...this.#nodes.keys()];
  }

  // ---------------------------------------------------------------- registry

  /** Creates a key with its first version. Throws ERR_KEY_EXISTS if it exists. */
  async createKey(kid: string, options: { algorithm?: AeadAlgorithm } = {}): Promise<KeyRecord> {
    assertId(kid, 'key id');
    const algorithm = options.algorithm ?? this.#algorithm;
    assertAllowedAlgorithm(algorithm);
    await this.#rotateLocked(kid, { reason: 'create', create: true, algorithm });
    return this.getKey(kid);
  }

  /** The key record, read fresh from the metadata store. */
  async getKey(kid: string): Promise<KeyRecord> {
    return (await this.#loadKey(kid, true)).value;
  }

  listKeys(): Promise<string[]> {
    return this.#metadata.listKeys();
  }

  /** Operations counted so far on a version. */
  getOps(kid: string, version: number): Promise<number> {
    return this.#metadata.getOps(kid, version);
  }

  /**
   * Rotates to a fresh random DEK (never a re-split of an old one). Two-phase: the new
   * version's share set is recorded and all its shares are stored before the version is
   * committed with a compare-and-set; a crash before the commit leaves the old version in
   * force and the rotation can be re-run. Concurrent rotations (also across KOS instances)
   * are serialised by a lock in the metadata store; a caller that waited for another
   * instance's rotation gets that rotation's version.
   */
  async rotate(kid: string, options: RotateOptions = {}): Promise<KeyVersionRecord> {
    assertId(kid, 'key id');
    return this.#rotateLocked(kid, {
      reason: options.reason ?? 'manual',
      ifPrimaryIs: options.ifPrimaryIs,
      ...(options.collectOrphans === false ? { collectOrphans: false } : {}),
    });
  }

  /** Whether a key's primary version is due for rotation (schedule or wear-out). */
  async isDue(kid: string): Promise<boolean> {
    const record = await this.getKey(kid);
    const primary = this.#version(record, record.primaryVersion);
    if (this.#rotationPeriodMs !== undefined && this.#clock() - primary.createdAt >= this.#rotationPeriodMs)
      return true;
    return (await this.#metadata.getOps(kid, primary.version)) >= this.#maxOps;
  }

  /**
   * Rotates many keys with bounded concurrency (default 16; the metadata and share stores see
   * that many rotations in flight, which a Redis client pipelines). A key that fails does not
   * stop the others; the result lists both.
   */
  async rotateMany(
    kids: readonly string[],
    options: {
      readonly concurrency?: number;
      readonly reason?: string;
      /** Rotate only keys that are due (schedule or wear-out). */
      readonly onlyDue?: boolean;
      readonly onProgress?: (done: number, total: number) => void;
    } = {},
  ): Promise<{ rotated: string[]; failed: Array<{ kid: string; code: string }> }> {
    const concurrency = options.concurrency ?? 16;
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1024) {
      throw new KosError('ERR_INVALID_ARGUMENT', 'concurrency must be 1–1024');
    }
    const rotated: string[] = [];
    const failed: Array<{ kid: string; code: string }> = [];
    let next = 0;
    let done = 0;
    const worker = async () => {
      while (next < kids.length) {
        const kid = kids[next++] as string;
        try {
          const record = await this.getKey(kid);
          if (!options.onlyDue || (await this.isDue(kid))) {
            await this.rotate(kid, { reason: options.reason ?? 'manual', ifPrimaryIs: record.primaryVersion });
            rotated.push(kid);
          }
        } catch (error) {
          failed.push({ kid, code: isKosError(error) ? error.code : 'ERR_INTERNAL' });
        }
        options.onProgress?.(++done, kids.length);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, kids.length) }, worker));
    return { rotated, failed };
  }

  /**
   * Rotates every key that is due; resolves the ids rotated. A key that fails does not stop
   * the others: after the pass, ERR_ROTATION_FAILED lists the keys that failed.
   */
  async rotateDue(options: { readonly concurrency?: number } = {}): Promise<string[]> {
    const { rotated, failed } = await this.rotateMany(await this.listKeys(), {
      reason: 'scheduled',
      onlyDue: true,
      ...(options.concurrency ? { concurrency: options.concurrency } : {}),
    });
    if (failed.length > 0) {
      throw new KosError('ERR_ROTATION_FAILED', `${failed.length} due key(s) could not be rotated`, {
        details: { failed, rotated },
      });
    }
    return rotated;
  }

  /**
   * Sets the minimum decryption version: versions below it are retired (refused with
   * ERR_KEY_VERSION_RETIRED); retired versions at or above it decrypt again. The primary
   * version can never be retired. With `onlyRaise` (retirement) a minimum at or below the
   * current one changes nothing, checked against the record being replaced.
   */
  async setMinDecryptVersion(
    kid: string,
    minVersion: number,
    options: { readonly onlyRaise?: boolean } = {},
  ): Promise<KeyRecord> {
    assertId(kid, 'key id');
    return this.#updateKey(kid, (record) => {
      if (!Number.isInteger(minVersion) || minVersion < 1 || minVersion > record.primaryVersion) {
        throw new KosError('ERR_INVALID_ARGUMENT', 'minimum decryption version must be between 1 and the primary');
      }
      // Retiring never lowers the minimum, decided on the record being replaced (a concurrent
      // retirement to a higher version wins whatever the order).
      if (options.onlyRaise && minVersion <= record.minDecryptVersion) return record;
      const versions = record.versions.map((entry): KeyVersionRecord => {
        if (entry.state === 'destroyed' || entry.state === 'active') return entry;
        return { ...entry, state: entry.version < minVersion ? 'retired' : 'decrypt-only' };
      });
      return { ...record, minDecryptVersion: minVersion, versions };
    }).then((record) => {
      for (const entry of record.versions) if (entry.state === 'retired') this.#cache.delete(kid, entry.version);
      this.#emit({ type: 'key.versions-retired', kid, minDecryptVersion: record.minDecryptVersion });
      return record;
    });
  }

  /** Destroys a retired version: marks it destroyed, then deletes every share of it. */
  async destroyVersion(kid: string, version: number): Promise<KeyRecord> {
    assertId(kid, 'key id');
    const record = await this.#updateKey(kid, (current) => {
      const entry = this.#version(current, version);
      // A destroyed version may be destroyed again: that finishes deleting shares a node kept.
      if (entry.state !== 'retired' && entry.state !== 'destroyed') {
        throw new KosError('ERR_KEY_VERSION_STATE', 'only a retired version can be destroyed');
      }
      return {
        ...current,
        versions: current.versions.map(
          (v): KeyVersionRecord => (v.version === version ? { ...v, state: 'destroyed' } : v),
        ),
      };
    });
    this.#cache.delete(kid, version);
    for (const key of [...this.#clientSets.keys()]) {
      if (key.startsWith(`${kid}\u0000${version}\u0000`)) this.#clientSets.delete(key);
    }
    await this.#discardAll(await this.#metadata.listShareSets({ kid, version }), `destroying ${kid} v${version}`);
    this.#emit({ type: 'key.version-destroyed', kid, version });
    return record;
  }

  // ---------------------------------------------------------------- data

  /** Encrypts under the key's primary version (rotating first if it is worn out). */
  async seal(kid: string, plaintext: Uint8Array, options: SealOptions): Promise<Envelope> {
    assertId(kid, 'key id');
    if (!(plaintext instanceof Uint8Array)) throw new KosError('ERR_INVALID_ARGUMENT', 'plaintext must be bytes');
    const batch = this.#newBatch(false);
    try {
      return await this.#sealPrimary(batch, kid, plaintext, options.dataId);
    } finally {
      this.#endBatch(batch);
    }
  }

  /**
   * Decrypts an envelope in any form. Refuses retired (ERR_KEY_VERSION_RETIRED) and
   * destroyed (ERR_KEY_VERSION_DESTROYED) versions; every cryptographic failure is
   * ERR_DECRYPTION_FAILED.
   */
  async open(input: unknown, options: OpenOptions = {}): Promise<Uint8Array> {
    const envelope = this.decode(input);
    const { kid, ver, alg } = envelope.header;
    const version = await this.#decryptableVersion(kid, ver);
    if (version.alg !== alg) throw new KosError('ERR_DECRYPTION_FAILED', '');
    const dek = await this.#dek(kid, version);
    // A hot record is opened again and again: its key commitment, once verified under this
    // version's DEK (named by its key-check value), is remembered rather than recomputed.
    const commitmentKey = KeyManager.#commitmentKey(version, envelope);
    const verified = this.#verifiedCommitments.has(commitmentKey);
    try {
      const plaintext = await openWithKeyUsing(
        { crypto: this.#crypto, key: dek, envelope, dataId: options.dataId },
        undefined,
        verified,
      );
      // Remembered only after a whole successful open.
      if (!verified) this.#verifiedCommitments.set(commitmentKey, true);
      return plaintext;
    } finally {
      wipe(dek);
    }
  }

  /**
   * What `open` would return for a parsed envelope, without waiting, when everything is at hand:
   * the key record cached and the version allowed to decrypt with this algorithm, its DEK cached,
   * this envelope's key commitment verified before, and a synchronous AEAD (node:crypto).
   * Undefined otherwise — also when decryption fails: `open` then answers, or throws the error.
   */
  openNow(envelope: Envelope): Uint8Array | undefined {
    if (!this.#openIsSync) return undefined;
    const { kid, ver, alg } = envelope.header;
    const version = this.#cachedDecryptableVersion(kid, ver);
    if (!version || version.alg !== alg) return undefined;
    if (!this.#verifiedCommitments.has(KeyManager.#commitmentKey(version, envelope))) return undefined;
    const dek = this.#cache.get(kid, ver);
    if (!dek) return undefined;
    this.#metrics.dekCache(true);
    try {
      const plaintext = openWithKeyUsing({ crypto: this.#crypto, key: dek, envelope }, undefined, true);
      if (plaintext instanceof Uint8Array) return plaintext;
      // An asynchronous AEAD: never asked again (its plaintext is wiped when it arrives).
      this.#openIsSync = false;
      plaintext.then(wipe, () => undefined);
      return undefined;
    } catch {
      return undefined;
    } finally {
      wipe(dek);
    }
  }

  static #commitmentKey(version: KeyVersionRecord, envelope: Envelope): string {
    return `${version.kcv}\u0000${toBase64url(envelope.header.nonce)}\u0000${toBase64url(envelope.header.kc)}`;
  }

  /** Re-encrypts an envelope under the primary version of its key. */
  async rewrap(input: unknown, options: OpenOptions = {}): Promise<Envelope> {
    const [rewrapped] = await this.#rewrapAll([this.decode(input)], options.dataId);
    return rewrapped as Envelope;
  }

  /**
   * Re-encrypts many envelopes (any forms) under the primary versions of their keys, in order.
   * Each gets every check `rewrap` makes — decryptable version, algorithm, key commitment and
   * AAD on open; one operation counted per seal, with rotation on wear-out — but key records
   * and DEKs are looked up once per key version for the whole batch (in parallel), and the
   * DEK copies are wiped when the batch ends. The first failure rejects the batch.
   */
  async rewrapMany(inputs: readonly unknown[]): Promise<Envelope[]> {
    return this.#rewrapAll(
      inputs.map((input) => this.decode(input)),
      undefined,
    );
  }

  async #rewrapAll(envelopes: readonly Envelope[], dataId: string | undefined): Promise<Envelope[]> {
    const batch = this.#newBatch(envelopes.length > 1);
    try {
      // Everything the batch needs that is not cached, fetched concurrently up front.
      const wanted = new Map<string, Promise<unknown>>();
      for (const { header } of envelopes) {
        const versionKey = DekCache.key(header.kid, header.ver);
        if (!wanted.has(versionKey)) {
          wanted.set(
            versionKey,
            this.#decryptableVersion(header.kid, header.ver).then(async (version) => {
              batch.versions.set(versionKey, version);
              if (version.alg === header.alg) await this.#batchDek(batch, header.kid, version);
            }),
          );
        }
        if (!wanted.has(header.kid)) wanted.set(header.kid, this.#batchPrimary(batch, header.kid));
      }
      // Settled, not Promise.all: nothing may still be adding DEKs to the batch once it ends.
      for (const result of await Promise.allSettled(wanted.values())) {
        if (result.status === 'rejected') throw result.reason;
      }
      const out: Envelope[] = [];
      // The key state of the previous envelope: a batch is mostly one key version.
      let last: { kid: string; ver: number; version: KeyVersionRecord } | undefined;
      let lastKey: BatchKey | undefined;
      for (const envelope of envelopes) {
        const { kid, ver, alg, did } = envelope.header;
        if (!last || last.kid !== kid || last.ver !== ver || !lastKey) {
          const versionKey = DekCache.key(kid, ver);
          last = { kid, ver, version: batch.versions.get(versionKey) as KeyVersionRecord };
          lastKey = batch.deks.get(versionKey);
        }
        if (last.version.alg !== alg) throw new KosError('ERR_DECRYPTION_FAILED', '');
        lastKey ??= await this.#batchDek(batch, kid, last.version);
        // node:crypto answers synchronously: no promise per envelope then.
        const opened = openWithKeyUsing({ crypto: this.#crypto, key: lastKey.dek, envelope, dataId }, lastKey.mac);
        const plaintext = opened instanceof Uint8Array ? opened : await opened;
        try {
          // Synchronously when nothing needs waiting for: no promise per envelope.
          const now = this.#sealPrimaryNow(batch, kid, plaintext, did);
          out.push(
            now === undefined
              ? await this.#sealPrimary(batch, kid, plaintext, did)
              : typeof (now as { then?: unknown }).then === 'function'
                ? await now
                : (now as Envelope),
          );
        } finally {
          wipe(plaintext);
        }
      }
      return out;
    } finally {
      this.#endBatch(batch);
    }
  }

  /** Key state held for one seal, rewrap or batch of rewraps; its DEK copies are wiped by #endBatch. */
  #newBatch(keyedMacs: boolean): KeyBatch {
    return { versions: new Map(), primaries: new Map(), deks: new Map(), keyedMacs };
  }

  #endBatch(batch: KeyBatch): void {
    for (const { dek, mac } of batch.deks.values()) {
      mac?.destroy();
      wipe(dek);
    }
    batch.deks.clear();
  }

  async #batchDek(batch: KeyBatch, kid: string, version: KeyVersionRecord): Promise<BatchKey> {
    const key = DekCache.key(kid, version.version);
    const held = batch.deks.get(key);
    if (held) return held;
    const dek = await this.#dek(kid, version);
    const raced = batch.deks.get(key);
    if (raced) {
      wipe(dek);
      return raced;
    }
    const entry: BatchKey = { dek, mac: batch.keyedMacs ? this.#crypto.hmacSha256Keyed?.(dek) : undefined };
    batch.deks.set(key, entry);
    return entry;
  }

  async #batchPrimary(batch: KeyBatch, kid: string): Promise<{ version: KeyVersionRecord; key: BatchKey }> {
    const record = (await this.#loadKey(kid, false)).value;
    const version = this.#version(record, record.primaryVersion);
    const primary = { version, key: await this.#batchDek(batch, kid, version) };
    batch.primaries.set(kid, primary);
    return primary;
  }

  /**
   * #sealPrimary without waiting when the primary and its DEK are in the batch and an operation
   * is left in the reserved block (the envelope itself with a synchronous provider); undefined,
   * with nothing taken, when #sealPrimary must run.
   */
  #sealPrimaryNow(
    batch: KeyBatch,
    kid: string,
    plaintext: Uint8Array,
    dataId: string,
  ): Envelope | Promise<Envelope> | undefined {
    const primary = batch.primaries.get(kid);
    if (!primary || !this.#ops.takeReserved(kid, primary.version.version)) return undefined;
    const { version, key } = primary;
    return sealWithKeyUsing(
      { crypto: this.#crypto, key: key.dek, kid, version: version.version, alg: version.alg, dataId, plaintext },
      key.mac,
    );
  }

  /** Seals under the key's primary version, taking one operation (rotating first if the version is worn out). */
  async #sealPrimary(batch: KeyBatch, kid: string, plaintext: Uint8Array, dataId: string): Promise<Envelope> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const { version, key } = batch.primaries.get(kid) ?? (await this.#batchPrimary(batch, kid));
      if (!(await this.#ops.take(kid, version.version))) {
        await this.#rotateLocked(kid, { reason: 'wear-out', ifPrimaryIs: version.version });
        batch.primaries.delete(kid);
        continue;
      }
      const sealed = sealWithKeyUsing(
        { crypto: this.#crypto, key: key.dek, kid, version: version.version, alg: version.alg, dataId, plaintext },
        key.mac,
      );
      return sealed instanceof Promise ? await sealed : sealed;
    }
    throw new KosError('ERR_ROTATION_FAILED', 'the primary version stayed worn out after rotation');
  }

  /** Parses an envelope with this manager's size limit. */
  decode(input: unknown): Envelope {
    return decodeEnvelope(input, this.#decodeOptions);
  }

  /**
   * An envelope's header, checked as `decode` checks the whole envelope (size limit included),
   * without keeping the ciphertext's bytes: for deliveries that pass the envelope on as it is.
   */
  decodeHeader(input: unknown): EnvelopeHeaderFields {
    return decodeEnvelopeHeader(input, this.#decodeOptions);
  }

  /**
   * A copy of a version's DEK, rebuilt from verified shares (for high-tier delivery). The
   * caller must wipe it when done.
   */
  async getDek(kid: string, version: number): Promise<Uint8Array> {
    assertId(kid, 'key id');
    return this.#dek(kid, await this.#decryptableVersion(kid, version));
  }

  /**
   * What `getDek` would return, without waiting, when the key's record and the version's DEK
   * are both cached and the version may decrypt; undefined otherwise (the caller then calls
   * `getDek`, which reads, rebuilds or throws). The caller must wipe the copy when done.
   */
  peekDek(kid: string, version: number): Uint8Array | undefined {
    if (!this.#cachedDecryptableVersion(kid, version)) return undefined;
    const dek = this.#cache.get(kid, version);
    if (dek) this.#metrics.dekCache(true);
    return dek;
  }

  /** A version that may decrypt, from a key record cached within its TTL; undefined otherwise. */
  #cachedDecryptableVersion(kid: string, version: number): KeyVersionRecord | undefined {
    const cached = this.#records.get(kid);
    if (!cached || this.#clock() - cached.readAt >= this.#keyRecordTtlMs) return undefined;
    const record = cached.value.value;
    const entry = record.versions.find((v) => v.version === version);
    return entry && mayDecrypt(record, entry) ? entry : undefined;
  }

  /** A version that may decrypt (cached record); ERR_KEY_VERSION_RETIRED / _DESTROYED / _NOT_FOUND otherwise. */
  async getVersion(kid: string, version: number): Promise<KeyVersionRecord> {
    assertId(kid, 'key id');
    return this.#decryptableVersion(kid, version);
  }

  /** Rebuilds the DEK from one share set (any owner) with full verification; for checks and tools. */
  async rebuildFromSet(set: ShareSetRecord): Promise<Uint8Array> {
    const version = await this.#decryptableVersion(set.kid, set.version);
    return this.#rebuild(set, version.kcv);
  }

  // ---------------------------------------------------------------- client share sets

  /**
   * The client's own share set of a version, split again from the verified DEK with (n, k)
   * from its score. An existing set with the same (n, k) is reused; a set with other
   * parameters is replaced.
   */
  async provisionClientSet(
    kid: string,
    version: number,
    clientId: string,
    shares: { readonly n: number; readonly k: number },
  ): Promise<ShareSetRecord> {
    assertId(kid, 'key id');
    assertId(clientId, 'client id');
    if (clientId === SYSTEM_OWNER) throw new KosError('ERR_INVALID_ID', 'client id "system" is reserved');
    assertThreshold(shares.n, shares.k, 'client share set');
    assertPlaceable([...this.#nodes.values()], shares.n, shares.k, 'client share set');
    const entry = await this.#decryptableVersion(kid, version);
    const cacheKey = `${kid}\u0000${version}\u0000${clientId}`;
    const cached = this.#clientSets.get(cacheKey);
    if (cached && cached.n === shares.n && cached.k === shares.k) return cached;
    // One provisioning per client and key version at a time in this process.
    let pending = this.#provisioning.get(cacheKey);
    if (!pending) {
      pending = this.#provision(kid, version, entry, clientId, shares).finally(() =>
        this.#provisioning.delete(cacheKey),
      );
      this.#provisioning.set(cacheKey, pending);
    }
    const record = await pending;
    if (record.n !== shares.n || record.k !== shares.k) return this.provisionClientSet(kid, version, clientId, shares);
    this.#clientSets.set(cacheKey, record);
    return record;
  }

  async #provision(
    kid: string,
    version: number,
    entry: KeyVersionRecord,
    clientId: string,
    shares: { readonly n: number; readonly k: number },
  ): Promise<ShareSetRecord> {
    const existing = await this.#metadata.listShareSets({ kid, version, owner: clientId });
    const same = existing.find((set) => set.n === shares.n && set.k === shares.k);
    if (same) return same;
    const dek = await this.#dek(kid, entry);
    let record: ShareSetRecord;
    try {
      record = await this.#storeNewSet(dek, kid, version, clientId, shares.n, shares.k);
    } finally {
      wipe(dek);
    }
    for (const old of existing) await this.#discardSet(old);
    this.#emit({ type: 'client-set.provisioned', kid, version, clientId, n: shares.n, k: shares.k });
    return record;
  }

  /** The client's share sets (all keys and versions, or filtered). */
  listClientSets(clientId: string, filter: { kid?: string; version?: number } = {}): Promise<ShareSetRecord[]> {
    assertId(clientId, 'client id');
    return this.#metadata.listShareSets({ ...filter, owner: clientId });
  }

  /** Deletes a client's share sets (shares on every node, then the records); resolves how many. */
  async deleteClientSets(clientId: string, filter: { kid?: string; version?: number } = {}): Promise<number> {
    for (const key of [...this.#clientSets.keys()]) {
      if (key.endsWith(`\u0000${clientId}`)) this.#clientSets.delete(key);
    }
    const sets = await this.listClientSets(clientId, filter);
    const kept = new Set<string>();
    for (const set of sets) {
      const remaining = await this.#discardSet(set);
      for (const nodeId of remaining) kept.add(nodeId);
      if (remaining.length === 0)
        this.#emit({ type: 'client-set.deleted', kid: set.kid, version: set.version, clientId });
    }
    if (kept.size > 0) {
      throw new KosError(
        'ERR_STORE_IO',
        'client share sets: shares remain on unreachable nodes; run it again when they are back',
        {
          details: { nodes: [...kept].sort() },
        },
      );
    }
    return sets.length;
  }

  /** Drops cached DEKs (they are zeroed). */
  clearCache(): void {
    this.#cache.clear();
    this.#verifiedCommitments.clear();
    this.#records.clear();
    this.#clientSets.clear();
  }

  // ---------------------------------------------------------------- internals

  /** Logs through the injected logger; a logger that throws changes nothing. */
  #log(level: keyof KosLogger, object: object, message: string): void {
    try {
      this.#logger[level](object, message);
    } catch {
      // Logging must not change a key operation's outcome.
    }
  }

  #emit(event: KeyManagerEvent): void {
    try {
      this.#onEvent?.(event);
    } catch {
      // An audit hook failure must not change the key operation's outcome here; fail-closed
      // auditing is the audit layer's decision.
    }
  }

  #version(record: KeyRecord, version: number): KeyVersionRecord {
    const entry = record.versions.find((v) => v.version === version);
    if (!entry) throw new KosError('ERR_KEY_VERSION_NOT_FOUND', 'key version not found', { details: { version } });
    return entry;
  }

  async #loadKey(kid: string, fresh: boolean): Promise<Revisioned<KeyRecord>> {
    const cached = this.#records.get(kid);
    if (!fresh && cached && this.#clock() - cached.readAt < this.#keyRecordTtlMs) return cached.value;
    const value = await this.#metadata.getKey(kid);
    if (!value) throw new KosError('ERR_KEY_NOT_FOUND', 'key not found', { details: { kid } });
    this.#records.set(kid, { value, readAt: this.#clock() });
    return value;
  }

  async #decryptableVersion(kid: string, version: number): Promise<KeyVersionRecord> {
    let record = (await this.#loadKey(kid, false)).value;
    if (!record.versions.some((v) => v.version === version)) record = (await this.#loadKey(kid, true)).value;
    const entry = this.#version(record, version);
    if (entry.state === 'destroyed') throw new KosError('ERR_KEY_VERSION_DESTROYED', 'key version was destroyed');
    if (!mayDecrypt(record, entry)) throw new KosError('ERR_KEY_VERSION_RETIRED', 'key version is retired');
    return entry;
  }

  /** A copy of the DEK of a version (cache, else one rebuild shared by concurrent callers). */
  async #dek(kid: string, version: KeyVersionRecord): Promise<Uint8Array> {
    const cached = this.#cache.get(kid, version.version);
    this.#metrics.dekCache(cached !== undefined);
    if (cached) return cached;
    const key = DekCache.key(kid, version.version);
    let pending = this.#rebuilding.get(key);
    if (!pending) {
      pending = (async () => {
        const set = await this.#metadata.getShareSet(version.systemSetId);
        if (!set) throw new KosError('ERR_STORE_CORRUPT', 'system share set record is missing', { details: { kid } });
        const dek = await this.#rebuild(set, version.kcv);
        this.#cache.set(kid, version.version, dek);
        return dek;
      })().finally(() => this.#rebuilding.delete(key));
      this.#rebuilding.set(key, pending);
    }
    const dek = await pending;
    return new Uint8Array(dek);
  }

  /** Rebuilds a DEK from one share set, inside a `kos.rebuild` span. */
  #rebuild(set: ShareSetRecord, kcv: string): Promise<Uint8Array> {
    return withSpan(
      'kos.rebuild',
      {
        'kos.kid': set.kid,
        'kos.key.version': set.version,
        'kos.share_set.owner': set.owner === SYSTEM_OWNER ? 'system' : 'client',
        'kos.share_set.n': set.n,
        'kos.share_set.k': set.k,
      },
      async (span) => {
        const result = await this.#rebuildFromShares(set, kcv);
        span.setAttribute('kos.nodes.answered', result.usedNodes.length);
        span.setAttribute('kos.nodes.failed', result.failures.length);
        return result.dek;
      },
    );
  }

  /** Fetches one share from its node, timing it for the metrics. */
  async #fetchShare(placement: { nodeId: string; shareId: string }, signal: AbortSignal) {
    const node = this.#nodes.get(placement.nodeId);
    if (!node) throw new KosError('ERR_STORE_IO', 'node is not configured');
    const started = performance.now();
    let outcome: ShareFetchOutcome = 'error';
    try {
      const share = await node.get(placement.shareId, { signal });
      outcome = share ? 'ok' : 'missing';
      return share;
    } catch (error) {
      if (signal.aborted) outcome = signal.reason instanceof GatherTimeoutError ? 'timeout' : 'cancelled';
      throw error;
    } finally {
      this.#metrics.shareFetch(placement.nodeId, (performance.now() - started) / 1000, outcome);
    }
  }

  async #rebuildFromShares(set: ShareSetRecord, kcv: string) {
    try {
      const result = await rebuildDek({
        crypto: this.#crypto,
        set,
        kcv,
        timeoutMs: this.#shareTimeoutMs,
        hedgeAfterMs: this.#hedgeAfterMs,
        extraAttempts: 1,
        fetch: (placement, signal) => this.#fetchShare(placement, signal),
      });
      if (result.failures.length > 0) {
        this.#log(
          'warn',
          { kid: set.kid, version: set.version, failures: result.failures },
          'kos: KMS nodes failed during a DEK rebuild (the rebuild succeeded with other nodes)',
        );
        this.#emit({
          type: 'shares.rejected',
          kid: set.kid,
          version: set.version,
          setId: set.setId,
          failures: result.failures,
        });
      }
      this.#emit({
        type: 'key.rebuilt',
        kid: set.kid,
        version: set.version,
        owner: set.owner,
        nodesAsked: [...new Set([...result.usedNodes, ...result.failures.map((failure) => failure.nodeId)])],
        nodesAnswered: result.usedNodes,
      });
      return result;
    } catch (error) {
      if (isKosError(error, 'ERR_SHARES_INSUFFICIENT')) {
        const failures = (error.details?.failures ?? []) as ShareFailure[];
        this.#log(
          'error',
          { kid: set.kid, version: set.version, code: error.code, failures },
          'kos: a DEK could not be rebuilt: too few KMS nodes gave a verified share',
        );
        this.#emit({ type: 'shares.rejected', kid: set.kid, version: set.version, setId: set.setId, failures });
      }
      throw error;
    }
  }

  /** Records the set, then stores every share; on failure removes what was written. */
  async #storeNewSet(
    dek: Uint8Array,
    kid: string,
    version: number,
    owner: string,
    n: number,
    k: number,
  ): Promise<ShareSetRecord> {
    const { record, shares } = await splitDek({
      crypto: this.#crypto,
      dek,
      kid,
      version,
      owner,
      n,
      k,
      nodes: [...this.#nodes.values()],
      now: this.#clock(),
    });
    // The record goes first so that a crash leaves a findable orphan, never an unknown share.
    await this.#metadata.putShareSet(record);
    const results = await Promise.allSettled(
      shares.map(({ nodeId, share }) => (this.#nodes.get(nodeId) as ShareStore).put(share)),
    );
    for (const { share } of shares) wipe(share.value);
    const failed = results.findIndex((result) => result.status === 'rejected');
    if (failed !== -1) {
      await this.#abandonSet(record);
      const reason = (results[failed] as PromiseRejectedResult).reason;
      throw new KosError('ERR_STORE_IO', 'a KMS node did not store its share', {
        details: { nodeId: shares[failed]?.nodeId ?? 'unknown', code: isKosError(reason) ? reason.code : 'unknown' },
        cause: reason,
      });
    }
    return record;
  }

  /** Deletes a set's shares (best effort on every node) and then its record. */
  /**
   * Deletes a set's shares on every node, then its record. If a node cannot be reached the
   * record stays (so a retry, or the orphan sweep, finds the share again) and the nodes that
   * kept a share are returned; an empty list means the set is gone everywhere.
   */
  async #discardSet(set: ShareSetRecord): Promise<string[]> {
    const results = await Promise.allSettled(
      set.placements.map(async (placement) => {
        const node = this.#nodes.get(placement.nodeId);
        if (!node) throw new KosError('ERR_STORE_IO', 'node is not configured');
        await node.delete(placement.shareId);
      }),
    );
    const kept = set.placements.filter((_, index) => results[index]?.status === 'rejected').map((p) => p.nodeId);
    if (kept.length === 0) await this.#metadata.deleteShareSet(set.setId);
    return kept;
  }

  /** Discards a set nobody will use; if a node kept its share, marks the record for the next sweep. */
  async #abandonSet(set: ShareSetRecord): Promise<void> {
    if ((await this.#discardSet(set)).length > 0) {
      await this.#metadata.putShareSet({ ...set, abandoned: true }).catch(() => undefined);
    }
  }

  /** Discards sets; throws ERR_STORE_IO naming the nodes that kept shares (run again to finish). */
  async #discardAll(sets: readonly ShareSetRecord[], what: string): Promise<void> {
    const kept = new Set<string>();
    for (const set of sets) for (const nodeId of await this.#discardSet(set)) kept.add(nodeId);
    if (kept.size > 0) {
      throw new KosError(
        'ERR_STORE_IO',
        `${what}: shares remain on unreachable nodes; run it again when they are back`,
        {
          details: { nodes: [...kept].sort() },
        },
      );
    }
  }

  async #updateKey(kid: string, change: (record: KeyRecord) => KeyRecord): Promise<KeyRecord> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const current = await this.#loadKey(kid, true);
      const next = { ...change(current.value), updatedAt: this.#clock() };
      try {
        const revision = await this.#metadata.putKey(next, current.revision);
        this.#records.set(kid, { value: { value: next, revision }, readAt: this.#clock() });
        return next;
      } catch (error) {
        if (!isKosError(error, 'ERR_STORE_CONFLICT')) throw error;
      }
    }
    throw new KosError('ERR_STORE_CONFLICT', 'key record kept changing; try again');
  }

  async #acquire(name: string, owner: string): Promise<void> {
    const deadline = this.#clock() + this.#lockWaitMs;
    for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
      if (await this.#metadata.acquireLock(name, owner, this.#lockTtlMs)) return;
      if (this.#clock() >= deadline) {
        throw new KosError('ERR_ROTATION_IN_PROGRESS', 'another rotation of this key is still running');
      }
      await sleep(delay);
    }
  }

  /** A rotation inside a `kos.rotate` span; a failure is logged and counted (by code). */
  #rotateLocked(
    kid: string,
    options: {
      reason: string;
      create?: boolean;
      algorithm?: AeadAlgorithm;
      ifPrimaryIs?: number | undefined;
      collectOrphans?: boolean;
    },
  ): Promise<KeyVersionRecord> {
    return withSpan(
      'kos.rotate',
      { 'kos.kid': kid, 'kos.rotation.reason': options.reason, 'kos.share_set.n': this.#system.n },
      async (span) => {
        try {
          const entry = await this.#rotateOnce(kid, options);
          span.setAttribute('kos.key.version', entry.version);
          return entry;
        } catch (error) {
          const code = errorCodeOf(error);
          // A key that exists (create) or does not (rotate) is the caller's mistake, not a failure.
          if (code !== 'ERR_KEY_EXISTS' && code !== 'ERR_KEY_NOT_FOUND') {
            this.#metrics.rotationFailure?.(code);
            this.#log(
              code === 'ERR_ROTATION_IN_PROGRESS' ? 'warn' : 'error',
              {
                kid,
                reason: options.reason,
                code,
                ...(isKosError(error) && error.details ? { details: error.details } : {}),
              },
              'kos: key rotation failed; the previous version stays in force',
            );
          }
          throw error;
        }
      },
    );
  }

  async #rotateOnce(
    kid: string,
    options: {
      reason: string;
      create?: boolean;
      algorithm?: AeadAlgorithm;
      ifPrimaryIs?: number | undefined;
      collectOrphans?: boolean;
    },
  ): Promise<KeyVersionRecord> {
    // The version this call means to replace: given by the caller, or read now (before waiting
    // for the lock, so a rotation by another instance meanwhile is recognised).
    const before = options.ifPrimaryIs === undefined ? await this.#metadata.getKey(kid) : undefined;
    if (options.create && before) throw new KosError('ERR_KEY_EXISTS', 'key already exists', { details: { kid } });
    if (!options.create && options.ifPrimaryIs === undefined && !before) {
      throw new KosError('ERR_KEY_NOT_FOUND', 'key not found', { details: { kid } });
    }
    const lock = `rotate.${kid}`;
    const owner = randomId(this.#crypto, 'o');
    await this.#acquire(lock, owner);
    try {
      const current = await this.#metadata.getKey(kid);
      if (options.create && current) throw new KosError('ERR_KEY_EXISTS', 'key already exists', { details: { kid } });
      if (!options.create && !current) throw new KosError('ERR_KEY_NOT_FOUND', 'key not found', { details: { kid } });
      if (current) {
        const primary = current.value.primaryVersion;
        // Someone else rotated while we waited, or the version we meant to replace is gone.
        const expected = options.ifPrimaryIs ?? before?.value.primaryVersion;
        if (primary !== expected) return this.#version(current.value, primary);
      }
      if (options.collectOrphans !== false) await this.#collectOrphans(kid, current?.value);
      const previous = current?.value;
      const version = previous ? Math.max(...previous.versions.map((v) => v.version)) + 1 : 1;
      const algorithm =
        options.algorithm ?? (previous ? this.#version(previous, previous.primaryVersion).alg : this.#algorithm);
      const dek = this.#crypto.randomBytes(AEAD_ALGORITHMS[algorithm].keyBytes);
      try {
        const kcv = toBase64url(await keyCheckValue(this.#crypto, dek, kid, version));
        let set: ShareSetRecord;
        try {
          set = await this.#storeNewSet(dek, kid, version, SYSTEM_OWNER, this.#system.n, this.#system.k);
        } catch (error) {
          throw new KosError(
            'ERR_ROTATION_FAILED',
            'rotation failed before commit; the previous version is unchanged',
            {
              details: { kid, ...(isKosError(error) ? { code: error.code } : {}) },
              cause: error,
            },
          );
        }
        const now = this.#clock();
        const entry: KeyVersionRecord = {
          version,
          state: 'active',
          alg: algorithm,
          kcv,
          systemSetId: set.setId,
          createdAt: now,
        };
        const next: KeyRecord = {
          kid,
          primaryVersion: version,
          minDecryptVersion: previous?.minDecryptVersion ?? 1,
          versions: [
            ...(previous?.versions ?? []).map(
              (v): KeyVersionRecord => (v.state === 'active' ? { ...v, state: 'decrypt-only' } : v),
            ),
            entry,
          ],
          createdAt: previous?.createdAt ?? now,
          updatedAt: now,
        };
        let revision: number;
        try {
          revision = await this.#metadata.putKey(next, current?.revision ?? null);
        } catch (error) {
          if (isKosError(error, 'ERR_STORE_CONFLICT')) {
            // Our lock expired and another instance committed first: its version stands.
            await this.#abandonSet(set);
            const winner = await this.#loadKey(kid, true);
            return this.#version(winner.value, winner.value.primaryVersion);
          }
          throw new KosError('ERR_ROTATION_FAILED', 'rotation commit failed', { details: { kid }, cause: error });
        }
        this.#records.set(kid, { value: { value: next, revision }, readAt: now });
        this.#cache.set(kid, version, dek);
        this.#metrics.rotation(kid, version, now);
        this.#emit({
          type: 'key.rotated',
          kid,
          version,
          ...(previous ? { previousVersion: previous.primaryVersion } : {}),
          reason: options.reason,
        });
        return entry;
      } finally {
        wipe(dek);
      }
    } finally {
      await this.#metadata.releaseLock(lock, owner).catch(() => false);
    }
  }

  /**
   * Removes share sets of versions that were never committed (a rotation that crashed). Only
   * sets older than the lock lifetime are touched, so a slow rotation that still holds a lock
   * it thinks is valid keeps its shares.
   */
  async #collectOrphans(kid: string, record: KeyRecord | undefined): Promise<void> {
    const systemSets = new Map(record?.versions.map((v) => [v.version, v.systemSetId]) ?? []);
    const cutoff = this.#clock() - this.#lockTtlMs;
    for (const set of await this.#metadata.listShareSets({ kid })) {
      const orphan =
        !systemSets.has(set.version) || (set.owner === SYSTEM_OWNER && systemSets.get(set.version) !== set.setId);
      if (orphan && (set.abandoned === true || set.createdAt <= cutoff)) await this.#discardSet(set);
    }
  }
}
