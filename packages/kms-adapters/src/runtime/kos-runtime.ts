import { createPublicKey, KeyObject as NodeKeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  type AccessControl,
  type AuditTrail,
  auditEventOf,
  createAccessControl,
  createJwtIdentity,
  createKos,
  createTierPolicy,
  createTokenIssuer,
  createTokenVerifier,
  type IdentitySource,
  type JwtIdentityOptions,
  KeyManager,
  type Kos,
  KosError,
  type KosLogger,
  type KosMetrics,
  loadTracing,
  type MetadataStore,
  type RotationScheduler,
  type ShareStore,
  startRotationScheduler,
  type TokenIssuer,
} from '@kos/core';
import {
  type CryptoKey,
  createLocalJWKSet,
  exportJWK,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type KeyObject,
  SignJWT,
} from 'jose';
import { type AuditConfig, openAuditTrail } from '../audit/audit-setup.js';
import { auditEventOfNode } from '../audit/node-events.js';
import { createFileMetadataStore } from '../file-metadata-store.js';
import { createFileShareStore } from '../file-share-store.js';
import { createHttpShareStore } from '../http-share-store.js';
import { createKmsHandler, type KmsRequest, type KmsResponse } from '../kms-node/kms-handler.js';
import { createMemoryMetadataStore } from '../memory-metadata-store.js';
import {
  openRedisConnection,
  pickRedisConnection,
  type RedisConnectionConfig,
  resolveRedisTlsFiles,
} from '../redis/redis-connection.js';
import { assertRuntimeOptions } from './adapter-support.js';
import { loadOrCreateKeyPairFile, readKeyPairFile } from './key-files.js';
import {
  checkRuntimeConfig,
  type KosRuntimeConfig,
  type MetricsConfig,
  missingForProduction,
  type NodeConfig,
} from './runtime-config.js';
import { auditFailureLogger, resolveRuntimeMetrics, safeLogger } from './runtime-observability.js';

/** Issuer and audience of the development identity tokens minted by the embedded default. */
export const DEV_IDENTITY_ISSUER = 'urn:kos:dev-identity';
export const DEV_IDENTITY_AUDIENCE = 'urn:kos:dev-app';
export const DEFAULT_MOUNT_PREFIX = '/kos/kms';

export interface KosRuntimeOptions {
  /** Explicit configuration. Omit in development for the embedded default. */
  readonly config?: KosRuntimeConfig;
  /** Folder of the embedded default (default `$KOS_DIR`, else `.kos` in the working directory). */
  readonly dir?: string;
  /** Environment (default `process.env`): `NODE_ENV=production` forbids the embedded default. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Nodes of the embedded default (default 5). */
  readonly embeddedNodes?: number;
  /** Audit settings merged over the configuration's (e.g. a logger, fail-closed mode). */
  readonly audit?: AuditConfig;
  /**
   * Metrics, over the configuration's: a KosMetrics sink, `{ prometheus: true }` or `false`
   * (the embedded default turns Prometheus on when prom-client is installed).
   */
  readonly metrics?: MetricsConfig;
  /** A pino-compatible logger, over the configuration's (default: silent). */
  readonly logger?: KosLogger;
}

export interface DevTokenRequest {
  readonly clientId: string;
  readonly score: number;
  readonly ttlSeconds?: number;
  /** The client's public key, put in `cnf.jwk` (high-tier DEKs are then wrapped to it, grants bound to it). */
  readonly publicJwk?: JWK | undefined;
}

/** A KMS node as the runtime sees it (for status and operations tools). */
export interface RuntimeNode {
  readonly nodeId: string;
  readonly kind: 'http' | 'file' | 'redis' | 'store';
  readonly publicUrl: string;
  readonly store: ShareStore;
}

export interface KosRuntime {
  readonly kos: Kos;
  readonly access: AccessControl;
  readonly metadata: MetadataStore;
  readonly nodes: readonly RuntimeNode[];
  /** The metadata store kind (`redis`, `file`, `memory` or `store`). */
  readonly metadataKind: string;
  /** The audit trail, when one is configured (the embedded default writes `.kos/audit/`). */
  readonly audit?: AuditTrail;
  readonly mode: 'embedded' | 'configured';
  /** Where in-process KMS nodes are mounted (requests under it go to `handleKms`). */
  readonly mountPrefix: string;
  /** Answers a request for a mounted KMS node, or resolves undefined if the path is not one. */
  handleKms(request: KmsRequest): Promise<KmsResponse | undefined>;
  /** Embedded default only: signs a development identity token. */
  mintDevToken?(request: DevTokenRequest): Promise<string>;
  /** Where KOS reports its metrics (a no-op sink when metrics are off). */
  readonly metrics: KosMetrics;
  /** Prometheus metrics in the text format, for `GET /metrics` (present when Prometheus is on). */
  metricsText?(): Promise<string>;
  /** The content type of `metricsText()` (`text/plain; version=0.0.4; charset=utf-8`). */
  readonly metricsContentType?: string;
  /** The logger KOS uses (silent unless one was given). */
  readonly logger: KosLogger;
  close(): Promise<void>;
}

interface Built {
  stores: ShareStore[];
  publicUrls: Map<string, string>;
  mounted: Map<string, (request: KmsRequest) => Promise<KmsResponse>>;
  closers: Array<() => Promise<unknown>>;
}

function readPem(value: string | undefined, file: string | undefined): string | undefined {
  return value ?? (file ? readFileSync(file, 'utf8') : undefined);
}

/** An ioredis client for a `{ "kind": "redis", … }` entry: one server, a Sentinel-managed master or a Cluster. */
function openRedis(config: RedisConnectionConfig, what: string, logger: KosLogger) {
  return openRedisConnection(pickRedisConnection(config), {
    what,
    onStateChange: ({ up, message }) =>
      up ? logger.info({ redis: what }, `kos: ${message}`) : logger.warn({ redis: what }, `kos: ${message}`),
  });
}

async function buildMetadata(
  config: KosRuntimeConfig['metadata'],
  closers: Built['closers'],
  logger: KosLogger,
): Promise<MetadataStore> {
  if (!config) throw new KosError('ERR_INVALID_OPTIONS', 'kos runtime: metadata is required');
  if ('getKey' in config) return config;
  switch (config.kind) {
    case 'file':
      return createFileMetadataStore({ dir: config.dir });
    case 'memory':
      return createMemoryMetadataStore();
    case 'redis': {
      const redis = await openRedis(config, 'metadata', logger);
      closers.push(() => redis.quit());
      const { createRedisMetadataStore } = await import('../redis/redis-metadata-store.js');
      return createRedisMetadataStore({ redis, keyPrefix: 'kos:', requirePersistence: 'refuse' });
    }
  }
}

async function buildNodes(
  nodes: readonly NodeConfig[],
  tokens: TokenIssuer,
  verifierKey: CryptoKey | KeyObject,
  issuer: string,
  prefix: string,
  audit: AuditTrail | undefined,
  logger: KosLogger,
  /** Each connection opened is registered here at once (so a later failure can close it). */
  closers: Built['closers'],
): Promise<Omit<Built, 'closers'>> {
  const built: Omit<Built, 'closers'> = { stores: [], publicUrls: new Map(), mounted: new Map() };
  for (const node of nodes) {
    const zone = node.zone === undefined ? {} : { zone: node.zone };
    if ('store' in node) {
      built.stores.push(node.store);
      built.publicUrls.set(node.nodeId, node.publicUrl);
      continue;
    }
    if (node.kind === 'http') {
      const ca = readPem(node.ca, node.caFile);
      const cert = readPem(node.cert, node.certFile);
      const key = readPem(node.key, node.keyFile);
      const store = createHttpShareStore({
        nodeId: node.nodeId,
        ...zone,
        baseUrl: node.url,
        tokens,
        ...(ca ? { ca } : {}),
        ...(cert ? { cert } : {}),
        ...(key ? { key } : {}),
      });
      built.stores.push(store);
      closers.push(() => store.close?.() ?? Promise.resolve());
      built.publicUrls.set(node.nodeId, node.publicUrl ?? node.url);
      continue;
    }
    let store: ShareStore;
    let replay: MetadataStore;
    if (node.kind === 'file') {
      store = createFileShareStore({ nodeId: node.nodeId, ...zone, dir: join(node.dir, 'shares') });
      replay = createFileMetadataStore({ dir: join(node.dir, 'replay'), lockStaleMs: 2000 });
    } else {
      const redis = await openRedis(node, `node ${node.nodeId}`, logger);
      closers.push(() => redis.quit());
      const { createRedisShareStore } = await import('../redis/redis-share-store.js');
      const { createRedisMetadataStore } = await import('../redis/redis-metadata-store.js');
      const keyPrefix = `kos:kms:${node.nodeId}:`;
      store = createRedisShareStore({ nodeId: node.nodeId, ...zone, redis, keyPrefix, requirePersistence: 'refuse' });
      replay = createRedisMetadataStore({ redis, keyPrefix: `${keyPrefix}replay:`, requirePersistence: 'refuse' });
    }
    const verifier = createTokenVerifier({ nodeId: node.nodeId, issuer, keys: verifierKey });
    built.stores.push(store);
    built.publicUrls.set(node.nodeId, `${prefix}/${node.nodeId}`);
    built.mounted.set(
      node.nodeId,
      createKmsHandler({
        nodeId: node.nodeId,
        store,
        verifier,
        replay,
        ...(audit ? { onEvent: (event) => void audit.record(auditEventOfNode(event)).catch(() => undefined) } : {}),
      }),
    );
  }
  return built;
}

function buildIdentity(config: NonNullable<KosRuntimeConfig['identity']>): IdentitySource {
  if ('identify' in config && typeof config.identify === 'function') return config;
  const options = config as Omit<JwtIdentityOptions, 'key'> & { key?: JwtIdentityOptions['key']; jwksFile?: string };
  const key =
    options.key ??
    (options.jwksFile
      ? createLocalJWKSet(JSON.parse(readFileSync(options.jwksFile, 'utf8')) as JSONWebKeySet)
      : undefined);
  if (!key) throw new KosError('ERR_INVALID_OPTIONS', 'kos runtime: identity needs key or jwksFile');
  return createJwtIdentity({ ...options, key });
}

/** The public half of a signing key (KeyObject, or an extractable CryptoKey). */
async function publicKeyOf(key: CryptoKey | KeyObject): Promise<CryptoKey | KeyObject | undefined> {
  if (key instanceof NodeKeyObject) return createPublicKey(key);
  if (!(key as CryptoKey).extractable) return undefined;
  const { d: _private, ...jwk } = await exportJWK(key);
  return (await importJWK(jwk, 'EdDSA')) as CryptoKey;
}

/** Reads a JSON configuration file (`KOS_CONFIG`); `…File` paths in it are relative to the file. */
export function loadKosConfigFile(path: string): KosRuntimeConfig {
  let parsed: KosRuntimeConfig;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8')) as KosRuntimeConfig;
  } catch (error) {
    throw new KosError('ERR_INVALID_OPTIONS', `cannot read the KOS configuration ${path}`, { cause: error });
  }
  // A JSON file is checked in full, unknown fields included, before any path in it is used.
  checkRuntimeConfig(parsed, { strict: true });
  const base = resolve(path, '..');
  const at = (file: string | undefined) => (file === undefined ? undefined : resolve(base, file));
  const atFile = (file: string) => resolve(base, file);
  const identity = parsed.identity as { jwksFile?: string } | undefined;
  return {
    ...parsed,
    ...(parsed.signingKeyFile ? { signingKeyFile: at(parsed.signingKeyFile) as string } : {}),
    ...(identity?.jwksFile
      ? { identity: { ...(parsed.identity as object), jwksFile: at(identity.jwksFile) } as never }
      : {}),
    ...(parsed.audit
      ? {
          audit: {
            ...parsed.audit,
            ...(parsed.audit.file ? { file: at(parsed.audit.file) as string } : {}),
            ...(parsed.audit.saltFile ? { saltFile: at(parsed.audit.saltFile) as string } : {}),
          },
        }
      : {}),
    ...(parsed.metadata && 'kind' in parsed.metadata && parsed.metadata.kind === 'file'
      ? { metadata: { kind: 'file' as const, dir: at(parsed.metadata.dir) as string } }
      : {}),
    ...(parsed.metadata && 'kind' in parsed.metadata && parsed.metadata.kind === 'redis'
      ? { metadata: { ...resolveRedisTlsFiles(parsed.metadata, atFile), kind: 'redis' as const } }
      : {}),
    nodes: (parsed.nodes ?? []).map((node) => {
      if ('kind' in node && node.kind === 'file') return { ...node, dir: at(node.dir) as string };
      if ('kind' in node && node.kind === 'redis') return resolveRedisTlsFiles(node, atFile) as NodeConfig;
      if ('kind' in node && node.kind === 'http') {
        return {
          ...node,
          caFile: at(node.caFile),
          certFile: at(node.certFile),
          keyFile: at(node.keyFile),
        } as NodeConfig;
      }
      return node;
    }),
  };
}

function devTokenMinter(privateKey: CryptoKey): (request: DevTokenRequest) => Promise<string> {
  return async (request) => {
    if (typeof request.clientId !== 'string' || typeof request.score !== 'number') {
      throw new KosError('ERR_INVALID_ARGUMENT', 'a dev token needs a clientId and a numeric score');
    }
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({
      trust_score: request.score,
      ...(request.publicJwk ? { cnf: { jwk: request.publicJwk } } : {}),
    })
      .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: 'kos-dev-identity' })
      .setIssuer(DEV_IDENTITY_ISSUER)
      .setAudience(DEV_IDENTITY_AUDIENCE)
      .setSubject(request.clientId)
      .setIssuedAt(now)
      .setExpirationTime(now + (request.ttlSeconds ?? 3600))
      .sign(privateKey);
  };
}

/**
 * Development identity tokens for the embedded default in `dir` (default `.kos`): the same
 * issuer the embedded middleware trusts. Never available in a configured deployment.
 */
export async function createDevTokenMinter(dir = '.kos'): Promise<(request: DevTokenRequest) => Promise<string>> {
  await mkdir(join(resolve(dir), 'keys'), { recursive: true, mode: 0o700 });
  const devIdentity = await loadOrCreateKeyPairFile(
    join(resolve(dir), 'keys', 'dev-identity.jwk.json'),
    'kos-dev-identity',
  );
  return devTokenMinter(devIdentity.privateKey);
}

/** The embedded default's configuration, creating `.kos/` (keys 0600, metadata, file nodes) on first use. */
async function embeddedConfig(dir: string, nodeCount: number) {
  await mkdir(join(dir, 'keys'), { recursive: true, mode: 0o700 });
  const signing = await loadOrCreateKeyPairFile(join(dir, 'keys', 'kos-signing.jwk.json'), 'kos-dev-signing');
  const devIdentity = await loadOrCreateKeyPairFile(join(dir, 'keys', 'dev-identity.jwk.json'), 'kos-dev-identity');
  const config: KosRuntimeConfig = {
    issuer: 'urn:kos:dev',
    signingKey: signing.privateKey,
    identity: {
      key: devIdentity.publicKey,
      algorithms: ['EdDSA'],
      issuer: DEV_IDENTITY_ISSUER,
      audience: DEV_IDENTITY_AUDIENCE,
    },
    metadata: { kind: 'file', dir: join(dir, 'metadata') },
    nodes: Array.from({ length: nodeCount }, (_, i) => ({
      nodeId: `node-${i + 1}`,
      kind: 'file' as const,
      dir: join(dir, 'nodes', `node-${i + 1}`),
    })),
    access: { defaultDeny: false },
    autoCreateKeys: true,
    audit: { file: join(dir, 'audit', 'kos-audit-{host}-{pid}.jsonl'), saltFile: join(dir, 'keys', 'audit-salt') },
    metrics: { prometheus: true },
  };
  const mintDevToken = devTokenMinter(devIdentity.privateKey);
  return { config, signing, mintDevToken };
}

/**
 * Builds a running KOS from configuration — or, in development with no configuration, from a
 * local `.kos/` folder (dev keys, dev token issuer, file metadata, five file-backed KMS nodes
 * mounted on the app), so all three tiers work in one process. With `NODE_ENV=production` and
 * no configuration it refuses to start and lists what is missing. `KOS_CONFIG=path.json`
 * loads the configuration from a file, so adapters (file, Redis, HTTP) swap without code.
 */
export async function createKosRuntime(options: KosRuntimeOptions = {}): Promise<KosRuntime> {
  const env = options.env ?? process.env;
  let config = options.config ?? (env.KOS_CONFIG ? loadKosConfigFile(env.KOS_CONFIG) : undefined);
  let mintDevToken: KosRuntime['mintDevToken'];
  let signingPublic: CryptoKey | KeyObject | undefined;
  if (!config) {
    assertRuntimeOptions(options);
    const embedded = await embeddedConfig(resolve(options.dir ?? env.KOS_DIR ?? '.kos'), options.embeddedNodes ?? 5);
    config = embedded.config;
    mintDevToken = embedded.mintDevToken;
    signingPublic = embedded.signing.publicKey;
  }
  const missing = missingForProduction(config);
  if (missing.length > 0) {
    throw new KosError('ERR_INVALID_OPTIONS', `KOS configuration is incomplete. Missing: ${missing.join('; ')}`, {
      details: { missing },
    });
  }
  checkRuntimeConfig(config);
  let signingKey = config.signingKey;
  let keyId: string | undefined;
  if (config.signingKeyFile) {
    const pair = await readKeyPairFile(config.signingKeyFile);
    signingKey ??= pair.privateKey;
    signingPublic = pair.publicKey;
    keyId = pair.publicJwk.kid as string | undefined;
  } else if (signingKey && !signingPublic) {
    signingPublic = await publicKeyOf(signingKey);
  }
  const issuer = config.issuer as string;
  const prefix = (config.mountPrefix ?? DEFAULT_MOUNT_PREFIX).replace(/\/+$/, '');
  // The kid (from the key file) lets nodes pick the key from a JWKS during key rollover.
  const tokens = createTokenIssuer({ issuer, privateKey: signingKey as CryptoKey, ...(keyId ? { keyId } : {}) });
  const closers: Built['closers'] = [];
  const logger = safeLogger(options.logger ?? config.logger);
  // Whatever start-up opened (Redis connections, audit files, the rotation scheduler) is closed
  // again when a later step fails, so a failed start leaves nothing running.
  let openedAudit: AuditTrail | undefined;
  try {
    const metadata = await buildMetadata(config.metadata, closers, logger);
    const needsVerifier = (config.nodes ?? []).some((node) => 'kind' in node && node.kind !== 'http');
    if (needsVerifier && !signingPublic) {
      throw new KosError('ERR_INVALID_OPTIONS', 'kos runtime: in-process nodes need signingKeyFile (to verify grants)');
    }
    const auditConfig = config.audit || options.audit ? { ...config.audit, ...options.audit } : undefined;
    const audit = await openAuditTrail(auditConfig, signingKey as CryptoKey, auditFailureLogger(logger));
    openedAudit = audit;
    const observed = await resolveRuntimeMetrics(options.metrics ?? config.metrics, {
      // The embedded default runs without prom-client; a configuration that asks for it does not.
      optional: mintDevToken !== undefined && options.metrics === undefined,
      logger,
    });
    const metrics = observed.metrics;
    const tracing = await loadTracing();
    const built = await buildNodes(
      config.nodes ?? [],
      tokens,
      signingPublic as CryptoKey,
      issuer,
      prefix,
      audit,
      logger,
      closers,
    );
    const tiers = createTierPolicy(config.tiers);
    const keys = new KeyManager({
      metadata,
      nodes: built.stores,
      tierPolicy: tiers,
      metrics,
      logger,
      ...(audit ? { onEvent: (event) => void audit.record(auditEventOf(event)).catch(() => undefined) } : {}),
      ...(config.systemShares ? { systemShares: config.systemShares } : {}),
      ...(config.rotationPeriodMs !== undefined ? { rotationPeriodMs: config.rotationPeriodMs } : {}),
    });
    // Opt-in: this instance rotates due keys itself (safe with several instances: rotation is locked).
    const scheduler: RotationScheduler | undefined =
      config.rotationCheckIntervalMs === undefined
        ? undefined
        : startRotationScheduler(keys, {
            intervalMs: config.rotationCheckIntervalMs,
            onRotated: (kids) => logger.info({ kids: [...kids] }, 'kos: scheduled rotation'),
            onError: (error) =>
              logger.warn(
                { code: (error as { code?: unknown })?.code ?? 'ERR_INTERNAL', details: (error as KosError)?.details },
                'kos: scheduled rotation failed',
              ),
          });
    if (scheduler) closers.push(async () => scheduler.stop());
    const access: AccessControl =
      config.access && 'assertAllowed' in config.access
        ? config.access
        : createAccessControl({
            metadata,
            defaultDeny: (config.access as { defaultDeny?: boolean })?.defaultDeny ?? true,
            cacheMs: (config.access as { cacheMs?: number })?.cacheMs ?? 0,
          });
    const kos = createKos({
      keys,
      identity: buildIdentity(config.identity as NonNullable<KosRuntimeConfig['identity']>),
      access,
      tokens,
      nodes: built.publicUrls,
      tiers,
      metrics,
      ...(config.autoCreateKeys ? { autoCreateKeys: true } : {}),
      ...(audit ? { audit } : {}),
    });
    // What this instance started with: recorded in the audit trail and logged.
    const startup = {
      mode: (mintDevToken ? 'embedded' : 'configured') as KosRuntime['mode'],
      issuer,
      nodes: (config.nodes ?? []).map((node) => ({
        nodeId: node.nodeId,
        kind: 'store' in node ? 'store' : node.kind,
        ...(node.zone ? { zone: node.zone } : {}),
      })),
      metadata: config.metadata && 'kind' in config.metadata ? config.metadata.kind : 'store',
      systemShares: keys.systemShares,
    };
    await audit?.record({
      type: 'startup',
      outcome: 'ok',
      details: {
        ...startup,
        tiers: tiers.options,
        defaultDeny: access.defaultDeny,
        auditFailClosed: audit.failClosed,
      },
    });

    logger.info(
      {
        ...startup,
        audit: audit ? (audit.failClosed ? 'fail-closed' : 'on') : 'off',
        metrics: observed.kind,
        tracing,
      },
      'kos: started',
    );

    const runtimeNodes: RuntimeNode[] = (config.nodes ?? []).map((node, index) => ({
      nodeId: node.nodeId,
      kind: 'store' in node ? 'store' : node.kind,
      publicUrl: built.publicUrls.get(node.nodeId) as string,
      store: built.stores[index] as ShareStore,
    }));
    return {
      kos,
      access,
      metadata,
      nodes: runtimeNodes,
      metadataKind: startup.metadata,
      mode: startup.mode,
      mountPrefix: prefix,
      async handleKms(request) {
        let path: string;
        try {
          path = request.path ?? new URL(request.url).pathname;
        } catch {
          throw new KosError('ERR_INVALID_ARGUMENT', 'bad request URL');
        }
        if (!path.startsWith(`${prefix}/`)) return undefined;
        const rest = path.slice(prefix.length + 1);
        const slash = rest.indexOf('/');
        const nodeId = slash === -1 ? rest : rest.slice(0, slash);
        const handler = built.mounted.get(nodeId);
        if (!handler) return undefined;
        return handler({
          method: request.method,
          url: request.url,
          headers: request.headers,
          body: request.body,
          path: slash === -1 ? '/' : rest.slice(slash),
        });
      },
      ...(mintDevToken ? { mintDevToken } : {}),
      ...(audit ? { audit } : {}),
      metrics,
      logger,
      ...(observed.text ? { metricsText: observed.text, metricsContentType: observed.contentType as string } : {}),
      async close() {
        await audit?.close().catch(() => undefined);
        for (const close of closers.reverse()) await close().catch(() => undefined);
        await metadata.close?.();
      },
    };
  } catch (error) {
    // Each close gets a bounded wait: a failed start must report its error, never hang on a
    // connection that cannot even close.
    const audit = openedAudit;
    if (audit) await closeWithin(STARTUP_CLEANUP_MS, () => audit.close());
    for (const close of [...closers].reverse()) await closeWithin(STARTUP_CLEANUP_MS, close);
    throw error;
  }
}

/** How long a failed start waits for each thing it opened to close. */
const STARTUP_CLEANUP_MS = 2000;

/** Runs `close`, waiting at most `ms` for it (errors ignored; the timer does not keep the process alive). */
async function closeWithin(ms: number, close: () => Promise<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    close().catch(() => undefined),
    new Promise<void>((done) => {
      timer = setTimeout(done, ms);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}
