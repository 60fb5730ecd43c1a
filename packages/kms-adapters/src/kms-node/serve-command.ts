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
import { readKeyPairFile } from '../runtime/key-files.js';
import { createKmsNodeServer } from './kms-server.js';
import { openRedisBackends } from './redis-backends.js';

function port(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0 || parsed > 65535) throw new InvalidArgumentError('must be 0–65535');
  return parsed;
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
    .showHelpAfterError();
  program.action(() => serve(program));
  return program;
}

async function serve(program: Command): Promise<void> {
  const opts = program.opts<{
    nodeId: string;
    issuer: string;
    trustedKeys: string;
    store: 'file' | 'redis' | 'memory';
    dir?: string;
    redisUrl?: string;
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
  }>();
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
    const redisUrl = opts.redisUrl ?? program.error('--redis-url is required with --store redis');
    const backends = await openRedisBackends(opts.nodeId, redisUrl);
    ({ store, replay } = backends);
    closeBackends = backends.close;
  } else {
    store = createMemoryShareStore({ nodeId: opts.nodeId });
    replay = createMemoryMetadataStore();
  }
  if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) program.error('--tls-cert and --tls-key go together');
  if (opts.clientCa && !opts.tlsCert) program.error('--client-ca needs --tls-cert and --tls-key');
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
