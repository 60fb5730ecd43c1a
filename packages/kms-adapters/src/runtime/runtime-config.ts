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
import type { CryptoKey, KeyObject } from 'jose';
import type { AuditConfig } from '../audit/audit-setup.js';

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
  | {
      readonly nodeId: string;
      readonly zone?: string;
      /** A Redis-backed node run inside this process and mounted on the app. */
      readonly kind: 'redis';
      readonly url: string;
    };

export type MetadataConfig =
  | MetadataStore
  | { readonly kind: 'file'; readonly dir: string }
  | { readonly kind: 'redis'; readonly url: string }
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
  /** Access rights: an AccessControl, or whether unknown clients are denied (default true in production). */
  readonly access?: AccessControl | { readonly defaultDeny?: boolean };
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
