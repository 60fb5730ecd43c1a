import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AccessControl,
  createAccessControl,
  createTokenIssuer,
  type EnvelopeJson,
  encodeEnvelope,
  type GrantRequest,
  type MetadataStore,
  type ShareSetRecord,
  type TokenIssuer,
  toBase64url,
} from '@kos/core';
import { createFileMetadataStore, createKosRuntime, type KosRuntime, loadOrCreateSalt } from '@kos/kms-adapters';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { buildApp, FRAMEWORKS, type Framework, type TestRoute } from './frameworks.js';
import { type KmsNodeProcess, type KmsNodeProcessOptions, startKmsProcess } from './kms-process.js';
import { findRedisServerBinary, type RedisServer, sendRedisCommand, startRedisServer } from './redis-server.js';

/**
 * A real KOS deployment on loopback, for attacks (issue 5, adversarial suite):
 *
 * - five `kos-kms` node processes (node-1..3 file-backed, node-4..5 Redis-backed on a private
 *   redis-server with AOF), each with `--audit-log` and the KOS public JWKS;
 * - in front of each node a loopback forwarder ("switch") whose target a test can point at a
 *   fake node (test-support/misbehaving-node.ts) and back: KOS and clients only know the
 *   switch URLs, so replacing a node is what a compromised node looks like to them;
 * - one configured runtime (`createKosRuntime({ config })`): http nodes, file metadata, JWT
 *   identity (Ed25519 test key), default-deny access with grants for the test clients, a
 *   hash-chained audit file, and the signing key as `signingKeyFile`;
 * - the same routes in Express, Hono and Koa, each listening on its own loopback port.
 *
 * Every node audit log shares KOS's pseudonym salt, so records correlate across them.
 *
 * Callers decide whether to skip with `findRedisServerBinary()` and print REDIS_SKIP_WARNING
 * (test-support/redis-server.ts; under CI=true a missing redis-server throws instead): without
 * redis-server `startDeployment` throws.
 */

export const IDP_ISSUER = 'https://idp.adversarial.test';
export const IDP_AUDIENCE = 'records-api';
export const KOS_ISSUER = 'https://kos.adversarial.test';
/** The key every test client may read (key `other` is granted to nobody unless asked). */
export const RECORDS_KID = 'records';
export const OTHER_KID = 'other';

export interface DeploymentOptions {
  /** Clients granted `records` (default a few). */
  readonly clients?: readonly string[];
  /** Medium share bands (default 50–64 → n 3, k 2; 65–80 → n 5, k 3). */
  readonly shareBands?: readonly { minScore: number; n: number; k: number }[];
}

export interface IdentityTokenRequest {
  readonly clientId: string;
  readonly score: unknown;
  /** Lifetime from now in seconds (default 300); negative gives an expired token. */
  readonly ttlSeconds?: number;
  /** Signing key (default the identity provider's). */
  readonly key?: CryptoKey | Uint8Array;
  readonly alg?: string;
  readonly issuer?: string;
  readonly audience?: string;
  /** Extra protected header members. */
  readonly header?: Record<string, unknown>;
  /** Extra claims. */
  readonly claims?: Record<string, unknown>;
}

/** One node: the real process, where it stores, and its switch. */
export interface DeployedNode {
  readonly nodeId: string;
  readonly store: 'file' | 'redis';
  /** The process (replaced when the node is restarted). */
  readonly process: KmsNodeProcess;
  /** The process's own URL (bypassing the switch). */
  readonly directUrl: string;
  /** The URL KOS and clients use (the switch). */
  readonly url: string;
  /** File-backed: the folder of share files. */
  readonly sharesDir?: string;
  /** Redis-backed: the key of a share in Redis. */
  redisKey(shareId: string): string;
  readonly auditLog: string;
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  /** JSON body, or undefined when the body is not JSON. */
  // biome-ignore lint/suspicious/noExplicitAny: attack answers are arbitrary JSON, read field by field
  readonly body: any;
}

/** A text a scan looked at, and where it came from. */
export interface ScannedText {
  readonly source: string;
  readonly text: string;
}

export interface Deployment {
  readonly dir: string;
  readonly redis: RedisServer;
  readonly nodes: readonly DeployedNode[];
  readonly runtime: KosRuntime;
  /** A second handle on KOS's file metadata (share-set records, access rights). */
  readonly metadata: MetadataStore;
  readonly access: AccessControl;
  /** Signs grants and service tokens with the KOS signing key (as KOS does). */
  readonly tokens: TokenIssuer;
  /** The KOS signing key (private) and its public JWK, as the nodes trust it. */
  readonly signingKey: CryptoKey;
  readonly signingPublicJwk: JWK;
  /** The identity provider's key (private), trusted by KOS for identity tokens. */
  readonly identityKey: CryptoKey;
  /** Base URL of each framework's app. */
  readonly apps: Readonly<Record<Framework, string>>;
  /** The records the routes serve (the app's "database"); tests may tamper with it. */
  readonly db: Map<string, { id: string; data: unknown }>;
  /** Every secret the scans look for, by label (never printed). */
  readonly secrets: Map<string, string>;

  node(nodeId: string): DeployedNode;
  /** Seals `value` under `kid` for record `id` and stores it in `db`; returns the envelope. */
  seed(id: string, value: unknown, kid?: string): Promise<EnvelopeJson>;
  /** Signs an identity token (any client, score, expiry, key, issuer, audience, header). */
  mintIdentity(request: IdentityTokenRequest): Promise<string>;
  /** A fresh service token for one node (remembered as a secret). */
  serviceToken(nodeId: string): Promise<string>;
  /** A grant signed with the KOS key (remembered as a secret). */
  grant(request: GrantRequest, options?: { clock?: () => number }): Promise<string>;
  /** An HTTP call to a framework's app; the answer is kept for the secret scan. */
  call(framework: Framework, path: string, init?: RequestInit & { token?: string }): Promise<HttpAnswer>;
  /** An HTTP call to any URL (a node); the answer is kept for the secret scan. */
  fetch(url: string, init?: RequestInit): Promise<HttpAnswer>;
  /** Reads a share from a node's process with a service token (undefined when missing). */
  readShare(nodeId: string, shareId: string): Promise<Record<string, unknown> | undefined>;
  /** Every share-set record (system and client sets). */
  shareSets(filter?: { kid?: string; version?: number; owner?: string }): Promise<ShareSetRecord[]>;
  /** Adds every DEK version and every stored share value to `secrets` (call before deleting sets). */
  captureSecrets(): Promise<void>;
  /** Remembers a secret (a token, a grant) to scan for. */
  remember(label: string, secret: string): void;
  /** Stops a node process (SIGTERM) and starts it again on the same port and data. */
  restartNode(nodeId: string): Promise<void>;
  /** Points a node's switch at `url` (a fake node), or back at the real process when undefined. */
  routeNode(nodeId: string, url: string | undefined): void;
  /** Adds `ms` of latency in front of a node (0 removes it), e.g. so that a bad node answers first. */
  delayNode(nodeId: string, ms: number): void;
  /** Every line the node processes wrote to stderr, the KOS audit file and every node's audit file. */
  logs(): Promise<ScannedText[]>;
  /** Parsed records of the KOS audit file (or of a node's audit file). */
  // biome-ignore lint/suspicious/noExplicitAny: audit records are read field by field
  auditRecords(nodeId?: string): Promise<Record<string, any>[]>;
  /** Answers kept since the last `takeAnswers()`. */
  takeAnswers(): ScannedText[];
  /**
   * Where a secret occurs in `texts`: `{ source, secret }` labels only, never the secret.
   * Looks for each secret as is and, for byte secrets, as base64url, base64 and hex.
   */
  findSecrets(texts: readonly ScannedText[], options?: { only?: (label: string) => boolean }): string[];
  stop(): Promise<void>;
}

const DEFAULT_CLIENTS = ['alice', 'bob', 'carol', 'dave', 'mallory', 'eve', 'trent', 'system'];

/** A loopback forwarder in front of a node whose target can be switched. */
interface NodeSwitch {
  readonly url: string;
  target: string;
  /** Added latency before each request is forwarded. */
  delayMs: number;
  close(): Promise<void>;
}

async function startSwitch(target: string): Promise<NodeSwitch> {
  const state = { target, delayMs: 0 };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (state.delayMs > 0) setTimeout(() => forward(req, res), state.delayMs);
    else forward(req, res);
  });
  const forward = (req: IncomingMessage, res: ServerResponse) => {
    if (res.destroyed) return;
    const to = new URL(req.url ?? '/', state.target);
    const upstream = httpRequest(
      to,
      { method: req.method ?? 'GET', headers: req.headers, agent: false },
      (answer: IncomingMessage) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  };
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get target() {
      return state.target;
    },
    set target(value: string) {
      state.target = value;
    },
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(value: number) {
      state.delayMs = value;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function listen(listener: (req: IncomingMessage, res: ServerResponse) => void): Promise<Server> {
  const server = createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

async function answerOf(response: Response): Promise<HttpAnswer> {
  const text = await response.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: response.status, headers: response.headers, text, body };
}

/** Forms a byte secret can take in text. */
function forms(value: string): string[] {
  if (!/^[A-Za-z0-9_-]+$/.test(value) || value.includes('.')) return [value];
  const bytes = Buffer.from(value, 'base64url');
  if (bytes.toString('base64url') !== value) return [value];
  return [value, bytes.toString('base64'), bytes.toString('base64').replace(/=+$/, ''), bytes.toString('hex')];
}

export async function startDeployment(options: DeploymentOptions = {}): Promise<Deployment> {
  if (findRedisServerBinary() === undefined) throw new Error('redis-server is required for the deployment');
  const dir = await mkdtemp(join(tmpdir(), 'kos-deploy-'));
  const cleanups: Array<() => Promise<unknown>> = [];
  const stopAll = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const redis = (await startRedisServer({ persistence: 'aof' })) as RedisServer;
    cleanups.push(() => redis.stop());

    // KOS signing key: a private JWK file for the runtime, the public half in the nodes' JWKS.
    await mkdir(join(dir, 'keys'), { recursive: true, mode: 0o700 });
    const signing = await generateKeyPair('EdDSA', { extractable: true });
    const signingKeyFile = join(dir, 'keys', 'kos-signing.jwk.json');
    await writeFile(signingKeyFile, JSON.stringify({ ...(await exportJWK(signing.privateKey)), kid: 'kos-adv-1' }), {
      mode: 0o600,
    });
    const signingPublicJwk: JWK = {
      ...(await exportJWK(signing.publicKey)),
      kid: 'kos-adv-1',
      alg: 'EdDSA',
      use: 'sig',
    };
    const jwksPath = join(dir, 'keys', 'kos-public.jwks.json');
    await writeFile(jwksPath, JSON.stringify({ keys: [signingPublicJwk] }));
    const tokens = createTokenIssuer({ issuer: KOS_ISSUER, privateKey: signing.privateKey });
    // One pseudonym key for KOS and the nodes, created before anyone races to create it.
    const saltFile = join(dir, 'keys', 'audit-salt');
    await loadOrCreateSalt(saltFile);
    await mkdir(join(dir, 'audit'), { recursive: true, mode: 0o700 });

    const stores = ['file', 'file', 'file', 'redis', 'redis'] as const;
    const specs = stores.map((store, i) => {
      const nodeId = `node-${i + 1}`;
      const auditLog = join(dir, 'audit', `${nodeId}.jsonl`);
      const processOptions: KmsNodeProcessOptions = {
        nodeId,
        issuer: KOS_ISSUER,
        jwksPath,
        store,
        ...(store === 'file' ? { dir: join(dir, 'nodes', nodeId) } : { redisUrl: redis.url }),
        // startKmsProcess has no audit option: `--cors-origin` is variadic and stops at the next
        // `--flag`, so the audit flags ride along after one (harmless) origin.
        corsOrigins: ['http://127.0.0.1', '--audit-log', auditLog, '--audit-salt-file', saltFile],
      };
      return { nodeId, store, auditLog, processOptions };
    });
    const processes = await Promise.all(specs.map((spec) => startKmsProcess(spec.processOptions)));
    const stderrBefore: string[][] = specs.map(() => []);
    cleanups.push(() => Promise.all(processes.map((p) => p.stop())));
    const switches = await Promise.all(processes.map((p) => startSwitch(p.url)));
    cleanups.push(() => Promise.all(switches.map((s) => s.close())));

    const nodes: DeployedNode[] = specs.map((spec, i) => ({
      nodeId: spec.nodeId,
      store: spec.store,
      get process() {
        return processes[i] as KmsNodeProcess;
      },
      directUrl: (processes[i] as KmsNodeProcess).url,
      url: (switches[i] as NodeSwitch).url,
      ...(spec.store === 'file' ? { sharesDir: join(dir, 'nodes', spec.nodeId, 'shares') } : {}),
      redisKey: (shareId: string) => `kos:kms:${spec.nodeId}:{node:${spec.nodeId}}:share:${shareId}`,
      auditLog: spec.auditLog,
    }));

    const identity = await generateKeyPair('EdDSA', { extractable: true });
    const metadataDir = join(dir, 'metadata');
    const runtime = await createKosRuntime({
      env: {},
      config: {
        issuer: KOS_ISSUER,
        signingKeyFile,
        identity: {
          key: await exportJWK(identity.publicKey),
          algorithms: ['EdDSA'],
          issuer: IDP_ISSUER,
          audience: IDP_AUDIENCE,
        },
        metadata: { kind: 'file', dir: metadataDir },
        nodes: nodes.map((node) => ({ nodeId: node.nodeId, kind: 'http' as const, url: node.url })),
        access: { defaultDeny: true },
        systemShares: { n: 5, k: 3 },
        tiers: {
          shareBands: options.shareBands ?? [
            { minScore: 50, n: 3, k: 2 },
            { minScore: 65, n: 5, k: 3 },
          ],
        },
        audit: { file: join(dir, 'audit', 'kos.jsonl'), saltFile },
      },
    });
    cleanups.push(() => runtime.close());
    const metadata = createFileMetadataStore({ dir: metadataDir });
    cleanups.push(async () => metadata.close?.());
    const access = createAccessControl({ metadata, defaultDeny: true });
    for (const client of options.clients ?? DEFAULT_CLIENTS) await access.grant(client, RECORDS_KID);
    await runtime.kos.keys.createKey(RECORDS_KID);
    await runtime.kos.keys.createKey(OTHER_KID);

    const db = new Map<string, { id: string; data: unknown }>();
    const routes: TestRoute[] = [
      {
        method: 'POST',
        path: '/records',
        handle: async ({ body, seal }) => {
          const id = `r${db.size + 1}`;
          db.set(id, { id, data: await seal(RECORDS_KID, body, { dataId: id }) });
          return { status: 201, json: { id } };
        },
      },
      {
        method: 'GET',
        path: '/records/:id',
        handle: ({ params }) => {
          const record = db.get(params.id as string);
          return record ? { json: record } : { status: 404, json: { error: 'not found' } };
        },
      },
      { method: 'GET', path: '/records', handle: () => ({ json: [...db.values()] }) },
      {
        method: 'GET',
        path: '/blob/:id',
        handle: ({ params }) => {
          const record = db.get(params.id as string);
          if (!record) return { status: 404, json: { error: 'not found' } };
          return {
            bytes: encodeEnvelope(runtime.kos.keys.decode(record.data), 'binary'),
            type: 'application/octet-stream',
          };
        },
      },
      // A route that reflects what it is sent (a preview, a validation echo): the attacker's lever.
      { method: 'POST', path: '/echo', handle: ({ body }) => ({ json: body ?? null }) },
      { method: 'GET', path: '/echo-decision', handle: ({ decision }) => ({ json: { decision } }) },
      { method: 'POST', path: '/echo-decision', handle: ({ decision }) => ({ json: { decision } }) },
      { method: 'GET', path: '/plain', handle: () => ({ json: { hello: 'world' } }) },
    ];
    const apps = {} as Record<Framework, string>;
    for (const framework of FRAMEWORKS) {
      const server = await listen(buildApp(framework, runtime, routes));
      cleanups.push(async () => {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      });
      apps[framework] = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    }

    const secrets = new Map<string, string>();
    let answers: ScannedText[] = [];
    const remember = (label: string, secret: string) => {
      if (secret.length >= 16) secrets.set(label, secret);
    };

    async function fetchAnswer(label: string, url: string, init?: RequestInit): Promise<HttpAnswer> {
      const answer = await answerOf(await fetch(url, init));
      const headerLines: string[] = [];
      answer.headers.forEach((value, name) => {
        headerLines.push(`${name}: ${value}`);
      });
      answers.push({ source: `${label} → ${answer.status}`, text: `${headerLines.join('\n')}\n${answer.text}` });
      return answer;
    }

    const deployment: Deployment = {
      dir,
      redis,
      nodes,
      runtime,
      metadata,
      access,
      tokens,
      signingKey: signing.privateKey,
      signingPublicJwk,
      identityKey: identity.privateKey,
      apps,
      db,
      secrets,

      node(nodeId) {
        const node = nodes.find((n) => n.nodeId === nodeId);
        if (!node) throw new Error(`no node ${nodeId}`);
        return node;
      },

      async seed(id, value, kid = RECORDS_KID) {
        const envelope = await runtime.kos.seal(kid, value, { dataId: id });
        db.set(id, { id, data: envelope });
        return envelope;
      },

      async mintIdentity(request) {
        const now = Math.floor(Date.now() / 1000);
        const token = await new SignJWT({ trust_score: request.score, ...request.claims })
          .setProtectedHeader({ alg: request.alg ?? 'EdDSA', ...request.header })
          .setIssuer(request.issuer ?? IDP_ISSUER)
          .setAudience(request.audience ?? IDP_AUDIENCE)
          .setSubject(request.clientId)
          .setIssuedAt(now - (request.ttlSeconds !== undefined && request.ttlSeconds < 0 ? 600 : 0))
          .setExpirationTime(now + (request.ttlSeconds ?? 300))
          .sign(request.key ?? identity.privateKey);
        remember(`identity token of ${request.clientId} (${String(request.score)})`, token);
        return token;
      },

      async serviceToken(nodeId) {
        const { token } = await tokens.issueServiceToken(nodeId);
        remember(`service token for ${nodeId}`, token);
        return token;
      },

      async grant(request, grantOptions) {
        const issuer = grantOptions?.clock
          ? createTokenIssuer({ issuer: KOS_ISSUER, privateKey: signing.privateKey, clock: grantOptions.clock })
          : tokens;
        const { token } = await issuer.issueGrant(request);
        remember(`forged grant for ${request.clientId}`, token);
        return token;
      },

      call(framework, path, init = {}) {
        const { token, ...rest } = init;
        const headers = new Headers(rest.headers);
        if (token !== undefined) headers.set('authorization', `Bearer ${token}`);
        return fetchAnswer(`${framework} ${rest.method ?? 'GET'} ${path}`, `${apps[framework]}${path}`, {
          ...rest,
          headers,
        });
      },

      fetch(url, init) {
        return fetchAnswer(`${init?.method ?? 'GET'} ${url}`, url, init);
      },

      async readShare(nodeId, shareId) {
        const node = deployment.node(nodeId);
        const response = await fetch(`${node.directUrl}/v1/shares/${encodeURIComponent(shareId)}`, {
          headers: { authorization: `KOS-Service ${await deployment.serviceToken(nodeId)}` },
        });
        const text = await response.text();
        if (response.status === 404) return undefined;
        if (response.status !== 200) throw new Error(`reading ${shareId} from ${nodeId}: ${response.status}`);
        const share = (JSON.parse(text) as { share: Record<string, unknown> }).share;
        remember(`share ${shareId} on ${nodeId}`, share.value as string);
        return share;
      },

      shareSets(filter = {}) {
        return metadata.listShareSets(filter);
      },

      async captureSecrets() {
        for (const kid of await runtime.kos.keys.listKeys()) {
          const record = await runtime.kos.keys.getKey(kid);
          for (const version of record.versions) {
            if (version.state === 'destroyed' || version.version < record.minDecryptVersion) continue;
            if (secrets.has(`DEK ${kid} v${version.version}`)) continue;
            const dek = await runtime.kos.keys.getDek(kid, version.version);
            remember(`DEK ${kid} v${version.version}`, toBase64url(dek));
            dek.fill(0);
          }
        }
        // Share ids are never reused (a new set has a new id), so a share read once is known.
        const unread = (await metadata.listShareSets())
          .flatMap((set) => set.placements)
          .filter((placement) => !secrets.has(`share ${placement.shareId} on ${placement.nodeId}`));
        await Promise.all(
          unread.map((placement) => deployment.readShare(placement.nodeId, placement.shareId).catch(() => undefined)),
        );
      },

      remember,

      async restartNode(nodeId) {
        const index = nodes.findIndex((n) => n.nodeId === nodeId);
        const old = processes[index] as KmsNodeProcess;
        await old.stop();
        (stderrBefore[index] as string[]).push(...old.stderr);
        processes[index] = await startKmsProcess({
          ...(specs[index] as (typeof specs)[number]).processOptions,
          port: old.port,
        });
      },

      routeNode(nodeId, url) {
        const index = nodes.findIndex((n) => n.nodeId === nodeId);
        (switches[index] as NodeSwitch).target = url ?? (nodes[index] as DeployedNode).directUrl;
      },

      delayNode(nodeId, ms) {
        const index = nodes.findIndex((n) => n.nodeId === nodeId);
        (switches[index] as NodeSwitch).delayMs = ms;
      },

      async logs() {
        const out: ScannedText[] = nodes.map((node, i) => ({
          source: `${node.nodeId} stderr`,
          text: [...(stderrBefore[i] as string[]), ...node.process.stderr].join('\n'),
        }));
        const read = async (source: string, path: string) => {
          const text = await readFile(path, 'utf8').catch(() => '');
          out.push({ source, text });
        };
        await read('KOS audit', join(dir, 'audit', 'kos.jsonl'));
        for (const node of nodes) await read(`${node.nodeId} audit`, node.auditLog);
        return out;
      },

      async auditRecords(nodeId) {
        const path = nodeId ? deployment.node(nodeId).auditLog : join(dir, 'audit', 'kos.jsonl');
        const text = await readFile(path, 'utf8').catch(() => '');
        return text
          .split('\n')
          .filter((line) => line.length > 0)
          .flatMap((line) => {
            const parsed = JSON.parse(line) as { record?: Record<string, unknown> };
            return parsed.record ? [parsed.record] : [];
          });
      },

      takeAnswers() {
        const taken = answers;
        answers = [];
        return taken;
      },

      findSecrets(texts, findOptions = {}) {
        const found: string[] = [];
        for (const [label, secret] of secrets) {
          if (findOptions.only && !findOptions.only(label)) continue;
          const variants = forms(secret);
          for (const { source, text } of texts) {
            if (variants.some((variant) => text.includes(variant))) found.push(`${label} in ${source}`);
          }
        }
        return found;
      },

      stop: stopAll,
    };
    return deployment;
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/**
 * The text a file- or Redis-backed node stores for a share body: the body under its SHA-256
 * (an integrity check against damage, not a MAC: whoever can write the store can recompute it).
 */
export function integrityText(body: Record<string, unknown>): string {
  const json = JSON.stringify(body);
  return JSON.stringify({ v: 1, body, sha256: createHash('sha256').update(json, 'utf8').digest('hex') });
}

/** Rewrites a file-backed node's share file as someone with disk access would (digest recomputed). */
export async function writeShareFile(path: string, body: Record<string, unknown>): Promise<void> {
  await writeFile(path, integrityText(body), { mode: 0o600 });
}

/** SET a raw value in the deployment's Redis (what an attacker with Redis access does). */
export async function redisSet(deployment: Deployment, key: string, value: string): Promise<void> {
  const reply = await sendRedisCommand(deployment.redis.port, ['SET', key, value]);
  if (!reply?.startsWith('+OK')) throw new Error(`redis SET failed: ${reply}`);
}

/** GET a raw value from the deployment's Redis. */
export async function redisGet(deployment: Deployment, key: string): Promise<string | undefined> {
  const reply = await sendRedisCommand(deployment.redis.port, ['GET', key]);
  if (reply === undefined || reply.startsWith('$-1')) return undefined;
  const body = reply.slice(reply.indexOf('\r\n') + 2);
  return body.slice(0, body.lastIndexOf('\r\n'));
}
