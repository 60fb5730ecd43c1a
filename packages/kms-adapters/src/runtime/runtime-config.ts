import type {
  AccessControl,
  IdentitySource,
  JwtIdentityOptions,
  KosLogger,
  KosMetrics,
  MetadataStore,
  ShareStore,
  TierPolicyOptions,
} from '@kos/core';
import { isValidId, KosError } from '@kos/core';
import type { CryptoKey, KeyObject } from 'jose';
import type { AuditConfig } from '../audit/audit-setup.js';
import { checkRedisConnectionConfig, type RedisConnectionConfig } from '../redis/redis-connection.js';

/** A KMS node KOS talks to, given as a ready store or as a kind the runtime builds. */
export type NodeConfig =
  | {
      readonly nodeId: string;
      readonly zone?: string;
      /** A ready ShareStore; `publicUrl` says where clients reach it. */
      readonly store: ShareStore;
      readonly publicUrl: string;
    }
  | {
      readonly nodeId: string;
      readonly zone?: string;
      readonly kind: 'http';
      /** The node's URL as KOS reaches it. */
      readonly url: string;
      /** The node's URL as clients reach it (default: `url`). */
      readonly publicUrl?: string;
      /** PEM CA, client certificate and key (mutual TLS), as text or file paths (`…File`). */
      readonly ca?: string;
      readonly cert?: string;
      readonly key?: string;
      readonly caFile?: string;
      readonly certFile?: string;
      readonly keyFile?: string;
    }
  | {
      readonly nodeId: string;
      readonly zone?: string;
      /** A node run inside this process and mounted on the app under `/kos/kms/<nodeId>`. */
      readonly kind: 'file';
      readonly dir: string;
    }
  | ({
      readonly nodeId: string;
      readonly zone?: string;
      /**
       * A Redis-backed node run inside this process and mounted on the app: one server (`url`),
       * a Sentinel-managed master (`sentinels` + `name`) or a Redis Cluster (`cluster`).
       */
      readonly kind: 'redis';
    } & RedisConnectionConfig);

/** Metadata on Redis: one server (`url`), a Sentinel-managed master (`sentinels` + `name`) or a Cluster (`cluster`). */
export type RedisMetadataConfig = { readonly kind: 'redis' } & RedisConnectionConfig;

export type MetadataConfig =
  | MetadataStore
  | { readonly kind: 'file'; readonly dir: string }
  | RedisMetadataConfig
  | { readonly kind: 'memory' };

/**
 * Prometheus metrics through prom-client (an optional peer dependency that must then be
 * installed): the runtime's `metricsText()` answers `GET /metrics`.
 */
export interface PrometheusRuntimeConfig {
  readonly prometheus: true;
  /** Metric name prefix (default `kos_`). */
  readonly prefix?: string;
  /** Most key ids exported by `kos_key_primary_age_seconds` (default 1000, oldest first). */
  readonly maxKeyAgeKids?: number;
  /** How long key ages read from the key registry are reused between scrapes (default 60 000 ms). */
  readonly keyRegistryRefreshMs?: number;
  /** Also export prom-client's process metrics (default false). */
  readonly defaultMetrics?: boolean;
}

/** A metrics sink, Prometheus, or `false` for none. */
export type MetricsConfig = KosMetrics | PrometheusRuntimeConfig | false;

/**
 * Everything KOS needs. In development `createKosRuntime()` with no configuration fills all
 * of it from a local `.kos/` folder; in production every field marked required must be given.
 */
export interface KosRuntimeConfig {
  /** Issuer name of this KOS deployment (`iss` of grants and service tokens). Required. */
  readonly issuer?: string;
  /** Private key signing grants and service tokens (Ed25519). Required: a key or a JWK file. */
  readonly signingKey?: CryptoKey | KeyObject;
  readonly signingKeyFile?: string;
  /** How callers are identified. Required: a verified JWT configuration or an IdentitySource. */
  readonly identity?:
    | IdentitySource
    | (Omit<JwtIdentityOptions, 'key'> & { key?: JwtIdentityOptions['key']; jwksFile?: string });
  /** Key registry, share-set records, access rights, replay cache, locks. Required. */
  readonly metadata?: MetadataConfig;
  /** The KMS nodes (at least as many as the largest n). Required. */
  readonly nodes?: readonly NodeConfig[];
  readonly tiers?: TierPolicyOptions;
  /**
   * Access rights: an AccessControl, or its options — whether unknown clients are denied
   * (default true in production) and `cacheMs` (default 0), how long each client's access
   * record is remembered: warm requests are then answered without waiting, and revocations
   * made elsewhere (another instance, the CLI) apply within it.
   */
  readonly access?: AccessControl | { readonly defaultDeny?: boolean; readonly cacheMs?: number };
  readonly systemShares?: { readonly n: number; readonly k: number };
  /** Create a key on the first seal that names it (default: true only in the embedded default). */
  readonly autoCreateKeys?: boolean;
  /** Where in-process nodes are mounted on the app (default `/kos/kms`). */
  readonly mountPrefix?: string;
  /** The audit trail (hash-chained file, logger, custom sinks; fail-closed mode). */
  readonly audit?: AuditConfig;
  /** Metrics (default: none; the embedded default enables Prometheus when prom-client is installed). */
  readonly metrics?: MetricsConfig;
  /**
   * A pino-compatible logger for start-up, failed rotations, failing KMS nodes and failed audit
   * writes (default: silent). Nothing secret is logged: ids, codes and reasons only.
   */
  readonly logger?: KosLogger;
  /**
   * Scheduled rotation: a key whose primary version is older than this is due (`kos status`
   * says so, `kos rotate --due` rotates it). Integer milliseconds, at least 1000. Default: none
   * (keys rotate on wear-out only).
   */
  readonly rotationPeriodMs?: number;
  /**
   * When given, this instance itself looks for due keys this often and rotates them (the core
   * `startRotationScheduler`; stopped by `close()`). Integer milliseconds, 1000–86 400 000.
   * Default: no in-process scheduler (run `kos rotate --due` from cron instead).
   */
  readonly rotationCheckIntervalMs?: number;
}

/** Top-level fields of a configuration (a JSON file with any other field is refused: a typo must not pass silently). */
export const CONFIG_FIELDS: readonly string[] = [
  'issuer',
  'signingKey',
  'signingKeyFile',
  'identity',
  'metadata',
  'nodes',
  'tiers',
  'access',
  'systemShares',
  'autoCreateKeys',
  'mountPrefix',
  'audit',
  'metrics',
  'logger',
  'rotationPeriodMs',
  'rotationCheckIntervalMs',
];

const NODE_KINDS = ['http', 'file', 'redis'];
const METADATA_KINDS = ['file', 'redis', 'memory'];
const MIN_ROTATION_PERIOD_MS = 1000;
const MAX_CHECK_INTERVAL_MS = 86_400_000;

function invalidConfig(message: string, option: string): KosError {
  return new KosError('ERR_INVALID_OPTIONS', `KOS configuration: ${message}`, { details: { option } });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkInteger(value: unknown, option: string, min: number, max: number): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidConfig(`${option} must be an integer number of milliseconds, ${min}–${max}`, option);
  }
}

/**
 * Refuses configuration fields of the wrong shape before anything connects anywhere: store
 * kinds and their fields (a Redis connection: exactly one of url, sentinels + name, cluster;
 * no unknown fields), node entries, the rotation settings. With `strict` (a JSON file), unknown
 * top-level fields are refused too (fields starting with `$` are comments).
 *
 * @throws KosError ERR_INVALID_OPTIONS naming the field (`details.option`).
 */
export function checkRuntimeConfig(config: KosRuntimeConfig, options: { strict?: boolean } = {}): void {
  if (!isPlainObject(config)) throw invalidConfig('the configuration must be an object', 'config');
  if (options.strict) {
    for (const key of Object.keys(config)) {
      if (!CONFIG_FIELDS.includes(key) && !key.startsWith('$')) {
        throw invalidConfig(`${key} is not a known field (${CONFIG_FIELDS.join(', ')})`, key);
      }
    }
  }
  const metadata = config.metadata as unknown;
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) throw invalidConfig('metadata must be an object', 'metadata');
    if (typeof metadata.getKey !== 'function') {
      if (!METADATA_KINDS.includes(metadata.kind as string)) {
        throw invalidConfig(
          `metadata.kind must be one of ${METADATA_KINDS.join(', ')} (or a MetadataStore)`,
          'metadata.kind',
        );
      }
      if (metadata.kind === 'redis') checkRedisConnectionConfig(metadata, 'metadata', ['kind']);
      if (metadata.kind === 'file' && (typeof metadata.dir !== 'string' || metadata.dir === '')) {
        throw invalidConfig('metadata.dir is required with kind file', 'metadata.dir');
      }
    }
  }
  const nodes = config.nodes as unknown;
  if (nodes !== undefined && !Array.isArray(nodes)) throw invalidConfig('nodes must be a list', 'nodes');
  for (const [index, node] of ((nodes as unknown[] | undefined) ?? []).entries()) {
    const at = `nodes[${index}]`;
    if (!isPlainObject(node)) throw invalidConfig(`${at} must be an object`, at);
    if (!isValidId(node.nodeId)) throw invalidConfig(`${at}.nodeId must be a valid id`, `${at}.nodeId`);
    if (node.zone !== undefined && !isValidId(node.zone))
      throw invalidConfig(`${at}.zone must be a valid id`, `${at}.zone`);
    if (node.store !== undefined) {
      if (typeof node.publicUrl !== 'string')
        throw invalidConfig(`${at}: a ready store needs publicUrl`, `${at}.publicUrl`);
      continue;
    }
    if (!NODE_KINDS.includes(node.kind as string)) {
      throw invalidConfig(`${at}.kind must be one of ${NODE_KINDS.join(', ')}`, `${at}.kind`);
    }
    if (node.kind === 'http' && typeof node.url !== 'string') throw invalidConfig(`${at}.url is required`, `${at}.url`);
    if (node.kind === 'file' && (typeof node.dir !== 'string' || node.dir === '')) {
      throw invalidConfig(`${at}.dir is required`, `${at}.dir`);
    }
    if (node.kind === 'redis') checkRedisConnectionConfig(node, at, ['kind', 'nodeId', 'zone']);
  }
  checkInteger(config.rotationPeriodMs, 'rotationPeriodMs', MIN_ROTATION_PERIOD_MS, Number.MAX_SAFE_INTEGER);
  checkInteger(config.rotationCheckIntervalMs, 'rotationCheckIntervalMs', 1000, MAX_CHECK_INTERVAL_MS);
}

/** What a production configuration must name, for the refusal message. */
export function missingForProduction(config: KosRuntimeConfig): string[] {
  const missing: string[] = [];
  if (!config.issuer) missing.push('issuer (the iss of grants, e.g. https://kos.example.com)');
  if (!config.signingKey && !config.signingKeyFile)
    missing.push('signingKey or signingKeyFile (Ed25519 private key for grants)');
  if (!config.identity)
    missing.push('identity (JWT issuer, audience, algorithms and key or jwksFile; or an IdentitySource)');
  if (!config.metadata) missing.push('metadata (redis, file or a MetadataStore)');
  if (!config.nodes || config.nodes.length === 0)
    missing.push('nodes (the KMS nodes: http, redis, file or ready stores)');
  return missing;
}
