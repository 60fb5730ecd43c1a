import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyManager, type MetadataStore, type NodeDirectory } from '@kos/core';
import { createFileMetadataStore, createHttpShareStore, type HttpShareStore } from '@kos/kms-adapters';
import { Agent, fetch as undiciFetch } from 'undici';
import { type KmsNodeProcess, startKmsProcess } from './kms-process.js';
import { createKosIdentity, type TestKosIdentity } from './kos-keys.js';
import type { RedisServer } from './redis-server.js';
import { createTestPki, type TestPki } from './tls.js';

export type Transport = 'http' | 'https' | 'mtls';

export interface KmsClusterOptions {
  /** Store of each node, in order (e.g. 3 × file, 2 × redis). */
  readonly stores: readonly ('file' | 'redis' | 'memory')[];
  readonly transport?: Transport;
  /** Needed when any node is Redis-backed. */
  readonly redis?: RedisServer;
  readonly systemShares?: { n: number; k: number };
}

/** KOS plus real `kos-kms` processes on loopback, over HTTP, HTTPS (test CA) or mutual TLS. */
export interface KmsCluster {
  readonly dir: string;
  readonly identity: TestKosIdentity;
  readonly pki: TestPki | undefined;
  readonly nodes: KmsNodeProcess[];
  readonly stores: HttpShareStore[];
  readonly metadata: MetadataStore;
  readonly keys: KeyManager;
  /** Public URL of each node, for medium-tier references. */
  readonly directory: NodeDirectory;
  /** A fetch that trusts the test CA (and presents the client certificate under mutual TLS). */
  readonly clientFetch: typeof fetch;
  /** Starts node `index` again on the same port and data. */
  restartNode(index: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startKmsCluster(options: KmsClusterOptions): Promise<KmsCluster> {
  const transport = options.transport ?? 'http';
  const dir = await mkdtemp(join(tmpdir(), 'kos-cluster-'));
  const identity = await createKosIdentity(dir);
  const pki = transport === 'http' ? undefined : createTestPki();
  const nodeOptions = options.stores.map((store, i) => ({
    nodeId: `node-${i + 1}`,
    issuer: identity.issuer,
    jwksPath: identity.jwksPath,
    store,
    ...(store === 'file' ? { dir: join(dir, `node-${i + 1}`) } : {}),
    ...(store === 'redis' ? { redisUrl: options.redis?.url ?? '' } : {}),
    ...(pki
      ? {
          tls: {
            certPath: pki.paths.serverCert,
            keyPath: pki.paths.serverKey,
            ...(transport === 'mtls' ? { clientCaPath: pki.paths.caCert } : {}),
          },
        }
      : {}),
  }));
  const nodes = await Promise.all(nodeOptions.map((o) => startKmsProcess(o)));
  const tls =
    pki === undefined
      ? {}
      : { ca: pki.caCert, ...(transport === 'mtls' ? { cert: pki.clientCert, key: pki.clientKey } : {}) };
  const stores = nodes.map((node) =>
    createHttpShareStore({ nodeId: node.nodeId, baseUrl: node.url, tokens: identity.tokens, timeoutMs: 3000, ...tls }),
  );
  const metadata = createFileMetadataStore({ dir: join(dir, 'metadata') });
  const keys = new KeyManager({ metadata, nodes: stores, systemShares: options.systemShares ?? { n: 5, k: 3 } });
  const directory = new Map(nodes.map((node) => [node.nodeId, node.url]));
  const dispatcher = pki
    ? new Agent({
        connect: { ca: pki.caCert, ...(transport === 'mtls' ? { cert: pki.clientCert, key: pki.clientKey } : {}) },
      })
    : undefined;
  const clientFetch = ((url: string, init?: RequestInit) =>
    undiciFetch(url, { ...(init as object), ...(dispatcher ? { dispatcher } : {}) })) as unknown as typeof fetch;

  return {
    dir,
    identity,
    pki,
    nodes,
    stores,
    metadata,
    keys,
    directory,
    clientFetch,
    async restartNode(index) {
      const old = nodes[index] as KmsNodeProcess;
      await old.stop();
      nodes[index] = await startKmsProcess({ ...(nodeOptions[index] as (typeof nodeOptions)[number]), port: old.port });
    },
    async stop() {
      await Promise.all(nodes.map((node) => node.stop()));
      await Promise.all(stores.map((store) => store.close?.()));
      await dispatcher?.close();
      await metadata.close?.();
      await rm(dir, { recursive: true, force: true });
      if (pki) await rm(pki.dir, { recursive: true, force: true });
    },
  };
}
