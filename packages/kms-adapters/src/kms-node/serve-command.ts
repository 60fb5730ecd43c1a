import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTokenVerifier, type MetadataStore, type ShareStore } from '@kos/core';
import { Command, InvalidArgumentError, Option } from 'commander';
import { createLocalJWKSet, type JSONWebKeySet } from 'jose';
import { openAuditTrail } from '../audit/audit-setup.js';
import { auditEventOfNode } from '../audit/node-events.js';
import { createFileMetadataStore } from '../file-metadata-store.js';
import { createFileShareStore } from '../file-share-store.js';
import { createMemoryMetadataStore } from '../memory-metadata-store.js';
import { createMemoryShareStore } from '../memory-share-store.js';
import {
  checkRedisConnectionConfig,
  type RedisConnectionConfig,
  type RedisEndpoint,
  type RedisTlsConfig,
} from '../redis/redis-connection.js';
import { readKeyPairFile } from '../runtime/key-files.js';
import { createKmsNodeServer } from './kms-server.js';
import { openRedisBackends } from './redis-backends.js';

function port(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0 || parsed > 65535) throw new InvalidArgumentError('must be 0–65535');
  return parsed;
}

/** `host:port` or `[v6-address]:port`. */
function endpoint(value: string, previous: RedisEndpoint[] | undefined): RedisEndpoint[] {
  const match = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(value) ?? /^([^\s:/@[\]]+):(\d{1,5})$/.exec(value);
  const portNumber = Number(match?.[2]);
  if (!match || portNumber < 1 || portNumber > 65535) throw new InvalidArgumentError('must be host:port');
  return [...(previous ?? []), { host: match[1] as string, port: portNumber }];
}

interface RedisFlags {
  redisUrl?: string;
  redisSentinel?: RedisEndpoint[];
  redisMasterName?: string;
  redisCluster?: RedisEndpoint[];
  redisUsername?: string;
  redisTls?: boolean;
  redisCa?: string;
  redisConnectTimeout?: number;
}

/**
 * The Redis connection `--store redis` names: `--redis-url`, `--redis-sentinel` with
 * `--redis-master-name`, or `--redis-cluster`. Passwords come from the environment
 * (`KOS_REDIS_PASSWORD`, `KOS_REDIS_SENTINEL_PASSWORD`), never from the command line, where
 * every user of the host could read them.
 */
export function redisConnectionFromFlags(
  flags: RedisFlags,
  env: Readonly<Record<string, string | undefined>>,
  fail: (message: string) => never,
): RedisConnectionConfig {
  const modes = [
    flags.redisUrl !== undefined ? '--redis-url' : undefined,
    flags.redisSentinel !== undefined ? '--redis-sentinel' : undefined,
    flags.redisCluster !== undefined ? '--redis-cluster' : undefined,
  ].filter((mode) => mode !== undefined);
  if (modes.length === 0)
    fail('--store redis needs --redis-url, --redis-sentinel (with --redis-master-name) or --redis-cluster');
  if (modes.length > 1) fail(`give only one of ${modes.join(', ')}`);
  if (flags.redisSentinel !== undefined && flags.redisMasterName === undefined) {
    fail('--redis-sentinel needs --redis-master-name (the master name the Sentinels monitor)');
  }
  if (flags.redisSentinel === undefined && flags.redisMasterName !== undefined) {
    fail('--redis-master-name goes with --redis-sentinel');
  }
  if (flags.redisUrl !== undefined && flags.redisUsername !== undefined) {
    fail('--redis-username is not used with --redis-url (put the user in the URL)');
  }
  const password = env.KOS_REDIS_PASSWORD || undefined;
  const sentinelPassword = env.KOS_REDIS_SENTINEL_PASSWORD || undefined;
  const tls: RedisTlsConfig | undefined =
    flags.redisCa !== undefined ? { caFile: flags.redisCa } : flags.redisTls ? true : undefined;
  let url = flags.redisUrl;
  if (url !== undefined && password !== undefined) {
    // A URL without a password takes KOS_REDIS_PASSWORD.
    try {
      const parsed = new URL(url);
      if (parsed.password === '') {
        parsed.password = password;
        if (parsed.username === '') parsed.username = 'default';
        url = parsed.toString();
      }
    } catch {
      // Left to the connection check, which names the flag.
    }
  }
  const connection = {
    ...(url !== undefined ? { url } : {}),
    ...(flags.redisSentinel !== undefined ? { sentinels: flags.redisSentinel, name: flags.redisMasterName } : {}),
    ...(flags.redisCluster !== undefined ? { cluster: flags.redisCluster } : {}),
    ...(flags.redisUsername !== undefined ? { username: flags.redisUsername } : {}),
    ...(url === undefined && password !== undefined ? { password } : {}),
    ...(flags.redisSentinel !== undefined && sentinelPassword !== undefined ? { sentinelPassword } : {}),
    ...(tls !== undefined ? { tls } : {}),
    ...(tls !== undefined && flags.redisSentinel !== undefined ? { sentinelTls: tls } : {}),
    ...(flags.redisConnectTimeout !== undefined ? { connectTimeoutMs: flags.redisConnectTimeout } : {}),
  };
  return checkRedisConnectionConfig(connection, 'redis');
}

/** The `serve` command of a KMS node (used as `kos-kms` and as `kos kms serve`). */
export function kmsServeCommand(name: string): Command {
  const program: Command = new Command(name)
    .description('Run a KOS KMS node: the share API in front of a file, Redis or memory share store.')
    .requiredOption('--node-id <id>', 'this node id (unique among the KOS nodes)')
    .requiredOption('--issuer <iss>', 'the KOS issuer whose grants and service tokens this node accepts')
    .requiredOption('--trusted-keys <file>', 'JWKS file with the KOS public key(s)')
    .addOption(new Option('--store <kind>', 'share store').choices(['file', 'redis', 'memory']).default('file'))
    .option('--dir <path>', 'data folder for the file store (shares and replay cache)')
    .option('--redis-url <url>', 'Redis URL for the redis store (shares and replay cache)')
    .option('--redis-sentinel <host:port...>', 'Redis Sentinel addresses (instead of --redis-url)', endpoint)
    .option('--redis-master-name <name>', 'the master name the Sentinels monitor (with --redis-sentinel)')
    .option('--redis-cluster <host:port...>', 'Redis Cluster seed nodes (instead of --redis-url)', endpoint)
    .option('--redis-username <user>', 'Redis ACL user (with --redis-sentinel or --redis-cluster)')
    .option('--redis-tls', 'TLS to Redis (and to the Sentinels)')
    .option('--redis-ca <file>', 'PEM CA of the Redis (and Sentinel) certificates; implies --redis-tls')
    .option(
      '--redis-connect-timeout <ms>',
      'give up starting when Redis does not answer within this (default 10000)',
      (value) => Number(value),
    )
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: any free port)', port, 0)
    .option('--tls-cert <file>', 'PEM certificate (enables HTTPS)')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--client-ca <file>', 'PEM CA: require client certificates signed by it (mutual TLS)')
    .option('--public-url <url>', 'base URL clients use to reach this node (for DPoP checks)')
    .option('--cors-origin <origin...>', 'browser origins allowed to fetch shares')
    .option('--audit-log <file>', 'hash-chained audit log of grants redeemed and refused at this node')
    .option('--audit-salt-file <file>', 'pseudonym key for the audit log (use the same as KOS to correlate)')
    .option('--audit-key <file>', 'Ed25519 private JWK that signs audit checkpoints')
    .addHelpText(
      'after',
      '\nRedis passwords come from the environment: KOS_REDIS_PASSWORD (the servers) and\n' +
        'KOS_REDIS_SENTINEL_PASSWORD (the Sentinels). GET /v1/health reads the store (503 ERR_STORE_IO when it is down).',
    )
    .showHelpAfterError();
  program.action(() => serve(program));
  return program;
}

async function serve(program: Command): Promise<void> {
  const opts = program.opts<
    RedisFlags & {
      nodeId: string;
      issuer: string;
      trustedKeys: string;
      store: 'file' | 'redis' | 'memory';
      dir?: string;
      host: string;
      port: number;
      tlsCert?: string;
      tlsKey?: string;
      clientCa?: string;
      publicUrl?: string;
      corsOrigin?: string[];
      auditLog?: string;
      auditSaltFile?: string;
      auditKey?: string;
    }
  >();
  const usesRedisFlags = [
    opts.redisUrl,
    opts.redisSentinel,
    opts.redisMasterName,
    opts.redisCluster,
    opts.redisUsername,
    opts.redisTls,
    opts.redisCa,
    opts.redisConnectTimeout,
  ].some((value) => value !== undefined);
  if (usesRedisFlags && opts.store !== 'redis') program.error('the --redis-* options need --store redis');
  const redisConnection =
    opts.store === 'redis'
      ? redisConnectionFromFlags(opts, process.env, (message) => program.error(message))
      : undefined;
  if (opts.store === 'file' && !opts.dir) program.error('--dir is required with --store file');
  if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) program.error('--tls-cert and --tls-key go together');
  if (opts.clientCa && !opts.tlsCert) program.error('--client-ca needs --tls-cert and --tls-key');
  const log = (event: Record<string, unknown>) => console.error(JSON.stringify({ ...event, nodeId: opts.nodeId }));
  const jwks = JSON.parse(readFileSync(opts.trustedKeys, 'utf8')) as JSONWebKeySet;
  const verifier = createTokenVerifier({ nodeId: opts.nodeId, issuer: opts.issuer, keys: createLocalJWKSet(jwks) });
  let store: ShareStore;
  let replay: MetadataStore;
  let closeBackends = async () => {};
  if (opts.store === 'file') {
    const dir = opts.dir ?? program.error('--dir is required with --store file');
    store = createFileShareStore({ nodeId: opts.nodeId, dir: join(dir, 'shares') });
    // A short stale time: a node killed while holding the replay lock is back in business in ~2 s.
    replay = createFileMetadataStore({ dir: join(dir, 'replay'), lockStaleMs: 2000 });
  } else if (opts.store === 'redis') {
    const backends = await openRedisBackends(opts.nodeId, redisConnection as RedisConnectionConfig, ({ up, message }) =>
      log({ event: up ? 'redis.up' : 'redis.down', message }),
    );
    ({ store, replay } = backends);
    closeBackends = backends.close;
  } else {
    store = createMemoryShareStore({ nodeId: opts.nodeId });
    replay = createMemoryMetadataStore();
  }
  const audit = opts.auditLog
    ? await openAuditTrail(
        { file: opts.auditLog, saltFile: opts.auditSaltFile ?? `${opts.auditLog}.salt` },
        opts.auditKey ? (await readKeyPairFile(opts.auditKey)).privateKey : undefined,
      )
    : undefined;
  const node = createKmsNodeServer({
    nodeId: opts.nodeId,
    store,
    verifier,
    replay,
    ...(opts.publicUrl ? { publicUrl: opts.publicUrl } : {}),
    ...(opts.corsOrigin ? { corsOrigins: opts.corsOrigin } : {}),
    ...(opts.tlsCert && opts.tlsKey
      ? {
          tls: {
            cert: readFileSync(opts.tlsCert),
            key: readFileSync(opts.tlsKey),
            ...(opts.clientCa ? { ca: readFileSync(opts.clientCa), requireClientCert: true } : {}),
          },
        }
      : {}),
    ...(audit ? { onEvent: (event) => void audit.record(auditEventOfNode(event)).catch(() => undefined) } : {}),
    onError: (error) => console.error(JSON.stringify({ event: 'error', message: (error as Error)?.message })),
    onHealthChange: (change) =>
      log(
        change.healthy
          ? { event: 'store.healthy' }
          : { event: 'store.unhealthy', code: change.code, reason: change.reason },
      ),
  });
  const url = await node.listen(opts.port, opts.host);
  console.log(JSON.stringify({ event: 'listening', nodeId: opts.nodeId, url, store: opts.store }));
  const stop = async () => {
    await node.close();
    await audit?.close();
    await closeBackends();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
