import type { KeyRegistryReader, KosMetrics, ShareFetchOutcome, Tier } from '@kos/core';
import { KosError } from '@kos/core';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export interface PrometheusMetricsOptions {
  /** Where the metrics are registered (default: a new registry, not prom-client's global one). */
  readonly registry?: Registry;
  /** Prefix of every metric name (default `kos_`). */
  readonly prefix?: string;
  /**
   * Most key ids exported by `kos_key_primary_age_seconds` (default 1000). With more keys, the
   * keys with the oldest primary versions are exported; `kos_key_primary_age_max_seconds` and
   * `kos_keys` always cover every key.
   */
  readonly maxKeyAgeKids?: number;
  /** How long key ages read from the key registry are reused between scrapes (default 60 000 ms). */
  readonly keyRegistryRefreshMs?: number;
  /** Buckets (seconds) of `kos_share_fetch_seconds`. */
  readonly shareFetchBuckets?: readonly number[];
  /** Also collect prom-client's process metrics (CPU, memory, event loop lag) with the same prefix (default false). */
  readonly defaultMetrics?: boolean;
  readonly clock?: () => number;
}

/** KOS metrics in a Prometheus registry. */
export interface PrometheusMetrics extends KosMetrics {
  readonly registry: Registry;
  /** The content type of `metricsText()` (`text/plain; version=0.0.4; charset=utf-8`). */
  readonly contentType: string;
  /** The registry in the Prometheus text exposition format (what `GET /metrics` answers). */
  metricsText(): Promise<string>;
  rotationFailure(code: string): void;
  watchKeys(registry: KeyRegistryReader): void;
}

export const DEFAULT_SHARE_FETCH_BUCKETS: readonly number[] = Object.freeze([
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]);

const TIERS: readonly Tier[] = ['low', 'medium', 'high'];
const OUTCOMES: readonly ShareFetchOutcome[] = ['ok', 'missing', 'error', 'timeout', 'cancelled'];
/** Error codes are a closed set in KOS; anything else is folded so a bad caller cannot blow up cardinality. */
const CODE_PATTERN = /^ERR_[A-Z0-9_]{1,64}$/;
const MAX_CODES = 200;
/** Key ids read from the registry at once. */
const READ_CONCURRENCY = 32;

function invalid(message: string): KosError {
  return new KosError('ERR_INVALID_OPTIONS', `prometheus metrics: ${message}`);
}

/**
 * KOS metrics through prom-client (an optional peer dependency: install `prom-client`):
 *
 * | metric | type | labels |
 * |---|---|---|
 * | `kos_decisions_total` | counter | `tier` |
 * | `kos_key_releases_total` | counter | `tier` |
 * | `kos_dek_cache_requests_total` | counter | `result` = `hit` or `miss` |
 * | `kos_dek_cache_hit_ratio` | gauge | — (since start; NaN before the first request) |
 * | `kos_share_fetch_seconds` | histogram | `node`, `outcome` |
 * | `kos_errors_total` | counter | `code` |
 * | `kos_rotations_total` | counter | — |
 * | `kos_rotation_failures_total` | counter | `code` |
 * | `kos_key_primary_age_seconds` | gauge | `kid` (at most `maxKeyAgeKids`, oldest first) |
 * | `kos_key_primary_age_max_seconds` | gauge | — (oldest primary over all keys) |
 * | `kos_keys` | gauge | — |
 *
 * Labels hold tiers, error codes, node ids and key ids only — never client ids, tokens,
 * shares or key bytes.
 */
export function createPrometheusMetrics(options: PrometheusMetricsOptions = {}): PrometheusMetrics {
  const prefix = options.prefix ?? 'kos_';
  if (typeof prefix !== 'string' || !/^([a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(prefix)) {
    throw invalid('prefix must be a valid Prometheus metric name prefix');
  }
  const maxKids = options.maxKeyAgeKids ?? 1000;
  if (!Number.isInteger(maxKids) || maxKids < 0 || maxKids > 100_000) throw invalid('maxKeyAgeKids must be 0–100000');
  const refreshMs = options.keyRegistryRefreshMs ?? 60_000;
  if (!Number.isFinite(refreshMs) || refreshMs < 0) throw invalid('keyRegistryRefreshMs must be >= 0');
  const clock = options.clock ?? Date.now;
  const registry = options.registry ?? new Registry();
  const registers = [registry];
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix });

  const decisions = new Counter({
    name: `${prefix}decisions_total`,
    help: 'Requests identified and decided, by tier.',
    labelNames: ['tier'],
    registers,
  });
  const releases = new Counter({
    name: `${prefix}key_releases_total`,
    help: 'Responses that released key material in the tier form (low: plaintext, medium: share references, high: the DEK), by tier.',
    labelNames: ['tier'],
    registers,
  });
  const cacheRequests = new Counter({
    name: `${prefix}dek_cache_requests_total`,
    help: 'DEK lookups: served from the cache (hit) or rebuilt from KMS shares (miss).',
    labelNames: ['result'],
    registers,
  });
  let hits = 0;
  let misses = 0;
  new Gauge({
    name: `${prefix}dek_cache_hit_ratio`,
    help: 'DEK cache hits / lookups since start (NaN before the first lookup). For a windowed ratio use rate() of kos_dek_cache_requests_total.',
    registers,
    collect() {
      this.set(hits + misses === 0 ? Number.NaN : hits / (hits + misses));
    },
  });
  const shareFetch = new Histogram({
    name: `${prefix}share_fetch_seconds`,
    help: 'Time to fetch one share from a KMS node, by node and outcome (ok, missing, error, timeout, cancelled).',
    labelNames: ['node', 'outcome'],
    buckets: [...(options.shareFetchBuckets ?? DEFAULT_SHARE_FETCH_BUCKETS)],
    registers,
  });
  const errors = new Counter({
    name: `${prefix}errors_total`,
    help: 'Error responses KOS sent, by stable error code.',
    labelNames: ['code'],
    registers,
  });
  const rotations = new Counter({
    name: `${prefix}rotations_total`,
    help: 'Key versions made primary (rotations and key creations) by this process.',
    registers,
  });
  const rotationFailures = new Counter({
    name: `${prefix}rotation_failures_total`,
    help: 'Rotations that failed (the previous version stayed in force), by error code.',
    labelNames: ['code'],
    registers,
  });

  // Children bound once: the hot path costs a map lookup and an add, no allocation.
  const decisionBy = new Map(TIERS.map((tier) => [tier, decisions.labels(tier)]));
  const releaseBy = new Map(TIERS.map((tier) => [tier, releases.labels(tier)]));
  const hit = cacheRequests.labels('hit');
  const miss = cacheRequests.labels('miss');
  const fetchBy = new Map<string, Map<string, Histogram.Internal<string>>>();
  const errorBy = new Map<string, Counter.Internal>();
  const failureBy = new Map<string, Counter.Internal>();
  const boundCode = (code: string) => (CODE_PATTERN.test(code) ? code : 'ERR_INTERNAL');
  const child = (counter: Counter, by: Map<string, Counter.Internal>, code: string) => {
    let bound = by.get(code);
    if (!bound) {
      const label = by.size >= MAX_CODES ? 'ERR_INTERNAL' : boundCode(code);
      bound = by.get(label) ?? counter.labels(label);
      by.set(label, bound);
    }
    return bound;
  };

  // Key ages: primary creation time per key id, from rotations seen here and from the key registry.
  let primaryCreated = new Map<string, number>();
  const readers = new Set<KeyRegistryReader>();
  let readAt = Number.NEGATIVE_INFINITY;
  let reading: Promise<void> | undefined;

  async function readRegistry(): Promise<void> {
    const fresh = new Map<string, number>();
    for (const reader of readers) {
      const kids = await reader.listKeys();
      for (let i = 0; i < kids.length; i += READ_CONCURRENCY) {
        await Promise.all(
          kids.slice(i, i + READ_CONCURRENCY).map(async (kid) => {
            try {
              const record = await reader.getKey(kid);
              const primary = record.versions.find((v) => v.version === record.primaryVersion);
              if (primary) fresh.set(kid, Math.max(primary.createdAt, fresh.get(kid) ?? 0));
            } catch {
              // Deleted meanwhile or unreadable: left out of this read.
            }
          }),
        );
      }
    }
    // A rotation seen while reading is newer than what was read.
    for (const [kid, created] of primaryCreated) {
      const read = fresh.get(kid);
      if (read !== undefined && created > read) fresh.set(kid, created);
    }
    primaryCreated = fresh;
    readAt = clock();
  }

  async function refreshKeys(): Promise<void> {
    if (readers.size === 0 || clock() - readAt < refreshMs) return;
    reading ??= readRegistry()
      .catch(() => undefined) // keep the last good values; kos_key_registry_read_age_seconds grows
      .finally(() => {
        reading = undefined;
      });
    await reading;
  }

  const ages = new Gauge({
    name: `${prefix}key_primary_age_seconds`,
    help: `Age of each key's primary version (time since its last rotation), for at most ${maxKids} keys, oldest first.`,
    labelNames: ['kid'],
    registers,
    async collect() {
      await refreshKeys();
      this.reset();
      if (maxKids === 0) return;
      const now = clock();
      let entries = [...primaryCreated];
      if (entries.length > maxKids) entries = entries.sort((a, b) => a[1] - b[1]).slice(0, maxKids);
      for (const [kid, created] of entries) this.labels(kid).set(Math.max(0, (now - created) / 1000));
    },
  });
  new Gauge({
    name: `${prefix}key_primary_age_max_seconds`,
    help: 'Age of the oldest primary version over all keys (alert on this against the rotation period).',
    registers,
    async collect() {
      await refreshKeys();
      let oldest = Number.POSITIVE_INFINITY;
      for (const created of primaryCreated.values()) if (created < oldest) oldest = created;
      this.set(primaryCreated.size === 0 ? 0 : Math.max(0, (clock() - oldest) / 1000));
    },
  });
  new Gauge({
    name: `${prefix}keys`,
    help: 'Keys known to this process (from the key registry, else from rotations seen).',
    registers,
    async collect() {
      await refreshKeys();
      this.set(primaryCreated.size);
    },
  });
  new Gauge({
    name: `${prefix}key_registry_read_age_seconds`,
    help: 'Time since the key ages were last read from the key registry (grows when reads fail).',
    registers,
    async collect() {
      await refreshKeys();
      this.set(Number.isFinite(readAt) ? Math.max(0, (clock() - readAt) / 1000) : Number.NaN);
    },
  });
  void ages;

  return {
    registry,
    get contentType() {
      return registry.contentType;
    },
    metricsText: () => registry.metrics(),
    decision(tier) {
      (decisionBy.get(tier) ?? decisions.labels(String(tier))).inc();
    },
    keyRelease(tier) {
      (releaseBy.get(tier) ?? releases.labels(String(tier))).inc();
    },
    dekCache(wasHit) {
      if (wasHit) {
        hits++;
        hit.inc();
      } else {
        misses++;
        miss.inc();
      }
    },
    shareFetch(nodeId, seconds, outcome) {
      if (!Number.isFinite(seconds) || seconds < 0) return;
      let byOutcome = fetchBy.get(nodeId);
      if (!byOutcome) {
        byOutcome = new Map(OUTCOMES.map((o) => [o, shareFetch.labels(nodeId, o)]));
        fetchBy.set(nodeId, byOutcome);
      }
      (byOutcome.get(outcome) ?? shareFetch.labels(nodeId, String(outcome))).observe(seconds);
    },
    error(code) {
      child(errors, errorBy, code).inc();
    },
    rotation(kid, _version, createdAtMs) {
      rotations.inc();
      const known = primaryCreated.get(kid);
      if (known === undefined || createdAtMs > known) primaryCreated.set(kid, createdAtMs);
    },
    rotationFailure(code) {
      child(rotationFailures, failureBy, code).inc();
    },
    watchKeys(reader) {
      readers.add(reader);
      readAt = Number.NEGATIVE_INFINITY;
    },
  };
}
