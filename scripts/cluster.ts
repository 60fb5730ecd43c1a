// `npm run cluster`: a whole KOS deployment on loopback, for rehearsal (docs/deploy.md §8).
//
// Starts, in a fresh folder (default .kos-cluster/): a private redis-server with AOF, five
// `kos-kms` node processes on that Redis (each with its own hash-chained audit log), over
// HTTPS with mutual TLS from a throw-away test CA (or plain HTTP with --no-tls), and two KOS
// instances of the Express example (examples/express/src/server.ts) configured through
// KOS_CONFIG: Redis metadata, the five nodes as `http` nodes in three zones, a generated
// Ed25519 signing key whose public JWKS the nodes trust, JWT identity with a generated
// identity key, and one audit log per instance. Both instances keep the example's records in
// the same Redis (KOS_EXAMPLE_RECORDS_REDIS_URL, keys under `kos-example:records:`, apart from
// KOS's `kos:` keys), so a record written through one reads through the other, as behind a
// load balancer. It writes a `token` helper that mints
// identity tokens for the cluster, prints where everything is, and waits.
//
// Ctrl-C (SIGINT) or SIGTERM stops the KOS instances, then the nodes, then Redis, and exits 0
// when every process stopped cleanly. A child that fails to start stops all the others and
// the script exits 1. Every child runs under a small `sh` watchdog that kills it if this
// process dies in any way (even SIGKILL), so nothing is left behind.
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { findRedisServerBinary, sendRedisCommand } from '../test-support/redis-server.js';
import { createTestPki } from '../test-support/tls.js';
import { watchdogScript } from '../test-support/watchdog.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const KMS_CLI = join(ROOT, 'packages/kms-adapters/src/kms-node/cli.ts');
const EXAMPLE_SERVER = join(ROOT, 'examples/express/src/server.ts');
/** `kind` of cluster.json: only a folder holding it is ever wiped. */
const MARKER = 'kos-cluster';
const KOS_ISSUER = 'urn:kos:cluster';
const IDP_ISSUER = 'urn:kos:cluster-idp';
const IDP_AUDIENCE = 'urn:kos:cluster-app';
/** Where the example app keeps its records in the cluster's Redis: never under KOS's `kos:` keys. */
const RECORDS_KEY_PREFIX = 'kos-example:records:';
const NODES = [
  { nodeId: 'node-1', zone: 'zone-a' },
  { nodeId: 'node-2', zone: 'zone-a' },
  { nodeId: 'node-3', zone: 'zone-b' },
  { nodeId: 'node-4', zone: 'zone-b' },
  { nodeId: 'node-5', zone: 'zone-c' },
] as const;
const INSTANCES = ['a', 'b'] as const;
const PORT_COUNT = 1 + NODES.length + INSTANCES.length;
const DEFAULT_BASE_PORT = 7700;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 10_000;
const TAIL_LINES = 20;

/** Ready line the tests (and scripts) wait for. */
export const READY_LINE = 'KOS cluster ready';

/** Each child runs under the watchdog the test Redis servers use (test-support/watchdog.ts). */
const WATCHDOG_SCRIPT = watchdogScript('kos-cluster-pid');
const PID_LINE = /^kos-cluster-pid (\d+)$/;

type Role = 'redis' | 'node' | 'instance';

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** One child process under its watchdog. */
interface Proc {
  readonly name: string;
  readonly role: Role;
  readonly wrapper: ChildProcess;
  /** The child's own pid (not the watchdog's), once the watchdog printed it. */
  pid: number | undefined;
  exit: Exit | undefined;
  readonly exited: Promise<Exit>;
  stopRequested: boolean;
  forced: boolean;
  /** Started (listening); before that a SIGTERM may end it before its handler is installed. */
  ready: boolean;
  readonly tail: string[];
  readonly listeners: Set<(line: string) => void>;
  readonly log: WriteStream;
}

interface NodeInfo {
  readonly nodeId: string;
  readonly zone: string;
  readonly port: number;
  url?: string;
  readonly dir: string;
  readonly auditLog: string;
  readonly auditKey: string;
  readonly auditPublicKey: string;
}

interface InstanceInfo {
  readonly name: string;
  readonly port: number;
  url?: string;
  readonly config: string;
  readonly auditLog: string;
}

/** What cluster.json holds (kept up to date while the cluster starts, runs and stops). */
interface ClusterState {
  kind: typeof MARKER;
  state: 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';
  supervisorPid: number;
  dir: string;
  tls: boolean;
  redis: { url: string; port: number; dataDir: string };
  /** The example app's record store (KOS_EXAMPLE_RECORDS_REDIS_URL / _PREFIX of both instances). */
  exampleRecords: { redisUrl: string; keyPrefix: string };
  nodes: NodeInfo[];
  instances: InstanceInfo[];
  identity: { issuer: string; audience: string; privateJwk: string; jwks: string; token: string };
  kos: {
    issuer: string;
    signingKey: string;
    jwks: string;
    auditSalt: string;
    /** KOS_CONFIG for operator tools (`kos status`, `kos rotate`…): the instances' settings, its own audit log. */
    adminConfig: string;
    adminAuditLog: string;
  };
  tlsFiles?: { ca: string; nodeCert: string; nodeKey: string; clientCert: string; clientKey: string };
  processes: { name: string; role: Role; watchdogPid: number | undefined; pid: number | undefined }[];
  exitCode?: number;
}

function basePort(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0 || parsed > 65535 - PORT_COUNT + 1 || (parsed > 0 && parsed < 1024)) {
    throw new InvalidArgumentError(`must be 0 or 1024–${65535 - PORT_COUNT + 1}`);
  }
  return parsed;
}

const options = new Command('cluster')
  .description(
    'Run a KOS deployment on loopback: Redis (AOF), five kos-kms nodes in three zones (mutual TLS) and two KOS instances of the Express example. Ctrl-C stops everything.',
  )
  .option(
    '--dir <path>',
    'folder for keys, certificates, configuration, data and logs (a stopped cluster there is replaced)',
    '.kos-cluster',
  )
  .option(
    '--base-port <port>',
    `Redis on <port>, node-1..node-5 on the next five, KOS instances A and B on the two after (0: any free ports)`,
    basePort,
    DEFAULT_BASE_PORT,
  )
  .option('--no-tls', 'plain HTTP between KOS, the nodes and clients (loopback only) instead of mutual TLS')
  .showHelpAfterError()
  .parse()
  .opts<{ dir: string; basePort: number; tls: boolean }>();

// npm runs scripts from the repository root; a relative --dir means the caller's folder.
const { INIT_CWD: npmCallerDir } = process.env;
const callerDir = npmCallerDir ?? process.cwd();
const dir = resolve(callerDir, options.dir);
/** How the printed commands name the folder (relative to where the command was run). */
const shown = (path: string) => {
  const rel = relative(callerDir, path);
  return rel === '' ? '.' : !rel.startsWith('..') && !isAbsolute(rel) ? rel : path;
};
const paths = {
  state: join(dir, 'cluster.json'),
  keys: join(dir, 'keys'),
  signingKey: join(dir, 'keys', 'kos-signing.jwk.json'),
  kosJwks: join(dir, 'keys', 'kos.jwks.json'),
  idpKey: join(dir, 'keys', 'idp.jwk.json'),
  idpJwks: join(dir, 'keys', 'idp.jwks.json'),
  auditSalt: join(dir, 'keys', 'audit-salt'),
  tls: join(dir, 'tls'),
  redis: join(dir, 'redis'),
  audit: join(dir, 'audit'),
  logs: join(dir, 'logs'),
  token: join(dir, 'token'),
  tokenScript: join(dir, 'token.mjs'),
};

process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);
const say = (text: string) => process.stdout.write(`${text}\n`);
const warn = (text: string) => process.stderr.write(`[cluster] ${text}\n`);

function isAlive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function signal(pid: number | undefined, name: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, name);
  } catch {
    // Already gone.
  }
}

class StartError extends Error {}

// ------------------------------------------------------------------ folder, keys, files

/** Makes `dir` empty: a folder left by a stopped cluster is replaced; anything else is refused. */
async function prepareDir(): Promise<void> {
  let entries: string[] = [];
  try {
    entries = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  if (entries.length > 0) {
    let previous: Partial<ClusterState> | undefined;
    try {
      previous = JSON.parse(await readFile(paths.state, 'utf8')) as Partial<ClusterState>;
    } catch {
      previous = undefined;
    }
    if (previous?.kind !== MARKER) {
      throw new StartError(`${dir} exists and was not made by npm run cluster: choose another --dir or remove it`);
    }
    const alive = [previous.supervisorPid, ...(previous.processes ?? []).flatMap((p) => [p.pid, p.watchdogPid])].filter(
      (pid): pid is number => pid !== undefined && pid !== process.pid && isAlive(pid),
    );
    if (alive.length > 0) {
      throw new StartError(
        `a cluster is still running in ${dir} (pids ${alive.join(', ')}): stop it first (Ctrl-C in its terminal, or kill -INT ${previous.supervisorPid})`,
      );
    }
    await rm(dir, { recursive: true, force: true });
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  for (const sub of [paths.keys, paths.redis, paths.audit, paths.logs]) await mkdir(sub, { mode: 0o700 });
}

async function writePrivate(path: string, data: string | Uint8Array): Promise<void> {
  await writeFile(path, data, { mode: 0o600 });
}

/** An Ed25519 key pair as a private JWK (the key files KOS and kos-kms read) and its public JWK. */
function ed25519(kid: string) {
  const { privateKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    privateJwk: { ...jwk, kid },
    publicJwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, kid, alg: 'EdDSA', use: 'sig' },
  };
}

/** The identity-token helper: node:crypto only, so it runs from any folder. */
function tokenScript(): string {
  return `#!/usr/bin/env node
// Mints identity tokens for the KOS cluster in this folder: what your identity provider does
// in production. Usage: ./token --client <id> --score <0-100> [--ttl <seconds>] [--jwk <public JWK file>]
import { createPrivateKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const usage = 'usage: token --client <id> --score <0-100> [--ttl <seconds, default 3600>] [--jwk <file with the client public JWK, put in cnf.jwk>]';
let values;
try {
  ({ values } = parseArgs({
    options: { client: { type: 'string' }, score: { type: 'string' }, ttl: { type: 'string' }, jwk: { type: 'string' }, help: { type: 'boolean' } },
  }));
} catch (error) {
  console.error(\`\${error.message}\\n\${usage}\`);
  process.exit(2);
}
if (values.help) {
  console.log(usage);
  process.exit(0);
}
const score = Number(values.score);
const ttl = Number(values.ttl ?? 3600);
if (!values.client || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(values.client)) {
  console.error(\`--client <id> is required (letters, digits, . _ -)\\n\${usage}\`);
  process.exit(2);
}
if (values.score === undefined || !Number.isFinite(score) || score < 0 || score > 100) {
  console.error(\`--score must be a number from 0 to 100\\n\${usage}\`);
  process.exit(2);
}
if (!Number.isInteger(ttl) || ttl < 1 || ttl > 86400) {
  console.error(\`--ttl must be 1-86400 seconds\\n\${usage}\`);
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const jwk = JSON.parse(readFileSync(join(here, 'keys', 'idp.jwk.json'), 'utf8'));
const now = Math.floor(Date.now() / 1000);
const claims = { iss: ${JSON.stringify(IDP_ISSUER)}, aud: ${JSON.stringify(IDP_AUDIENCE)}, sub: values.client, trust_score: score, iat: now, exp: now + ttl };
if (values.jwk) {
  const { d, p, q, dp, dq, qi, k, ...publicJwk } = JSON.parse(readFileSync(values.jwk, 'utf8'));
  claims.cnf = { jwk: publicJwk };
}
const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const input = \`\${part({ alg: 'EdDSA', typ: 'JWT', kid: jwk.kid })}.\${part(claims)}\`;
const signature = sign(null, Buffer.from(input), createPrivateKey({ key: jwk, format: 'jwk' }));
console.log(\`\${input}.\${signature.toString('base64url')}\`);
`;
}

async function writeKeysAndHelpers(state: ClusterState): Promise<void> {
  const signing = ed25519('kos-cluster-signing-1');
  await writePrivate(paths.signingKey, JSON.stringify(signing.privateJwk));
  await writeFile(paths.kosJwks, JSON.stringify({ keys: [signing.publicJwk] }, null, 2), { mode: 0o644 });
  const idp = ed25519('kos-cluster-idp-1');
  await writePrivate(paths.idpKey, JSON.stringify(idp.privateJwk));
  await writeFile(paths.idpJwks, JSON.stringify({ keys: [idp.publicJwk] }, null, 2), { mode: 0o644 });
  // One pseudonym key for KOS and the nodes, made before any of them starts (each would
  // otherwise create its own and their audit records could not be correlated).
  await writePrivate(paths.auditSalt, randomBytes(32));
  for (const node of state.nodes) {
    await mkdir(node.dir, { mode: 0o700 });
    const key = ed25519(`${node.nodeId}-audit-1`);
    await writePrivate(node.auditKey, JSON.stringify(key.privateJwk));
    await writeFile(node.auditPublicKey, JSON.stringify(key.publicJwk), { mode: 0o644 });
  }
  await writeFile(paths.tokenScript, tokenScript(), { mode: 0o755 });
  await writeFile(
    paths.token,
    `#!/bin/sh\n# Identity tokens for this cluster: ./token --client alice --score 65\nexec '${process.execPath.replace(/'/g, `'\\''`)}' "$(dirname "$0")/token.mjs" "$@"\n`,
    { mode: 0o755 },
  );
  if (state.tlsFiles) {
    let pki: ReturnType<typeof createTestPki>;
    try {
      pki = createTestPki();
    } catch (error) {
      throw new StartError(
        `could not make the test CA with openssl (${(error as Error).message.split('\n')[0]}); install openssl or use --no-tls`,
      );
    }
    try {
      await mkdir(paths.tls, { mode: 0o700 });
      await copyFile(pki.paths.caCert, state.tlsFiles.ca);
      await copyFile(pki.paths.serverCert, state.tlsFiles.nodeCert);
      await copyFile(pki.paths.serverKey, state.tlsFiles.nodeKey);
      await copyFile(pki.paths.clientCert, state.tlsFiles.clientCert);
      await copyFile(pki.paths.clientKey, state.tlsFiles.clientKey);
      await chmod(state.tlsFiles.nodeKey, 0o600);
      await chmod(state.tlsFiles.clientKey, 0o600);
    } finally {
      // The CA's private key is not kept: nobody can issue more certificates for this cluster.
      await rm(pki.dir, { recursive: true, force: true });
    }
  }
}

/**
 * The KOS_CONFIG file of one instance (they differ only in their audit log: a hash-chained log
 * has exactly one writer, so the operator tools get a file of their own too).
 */
function instanceConfig(state: ClusterState, instance: Pick<InstanceInfo, 'auditLog'>): object {
  const tls = state.tlsFiles;
  return {
    issuer: KOS_ISSUER,
    signingKeyFile: 'keys/kos-signing.jwk.json',
    identity: {
      jwksFile: 'keys/idp.jwks.json',
      algorithms: ['EdDSA'],
      issuer: IDP_ISSUER,
      audience: IDP_AUDIENCE,
    },
    metadata: { kind: 'redis', url: state.redis.url },
    nodes: state.nodes.map((node) => ({
      nodeId: node.nodeId,
      zone: node.zone,
      kind: 'http',
      url: node.url,
      ...(tls ? { caFile: 'tls/ca.crt', certFile: 'tls/client.crt', keyFile: 'tls/client.key' } : {}),
    })),
    systemShares: { n: 5, k: 3 },
    // Rehearsal conveniences; a production deployment keeps the defaults (docs/deploy.md).
    access: { defaultDeny: false },
    autoCreateKeys: true,
    audit: { file: instance.auditLog, saltFile: state.kos.auditSalt },
    metrics: { prometheus: true },
  };
}

async function writeState(state: ClusterState): Promise<void> {
  const temp = `${paths.state}.tmp`;
  await writeFile(temp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  await rename(temp, paths.state);
}

// ------------------------------------------------------------------ ports

function listenAnyPort(): Promise<ReturnType<typeof createServer>> {
  return new Promise((resolveServer, rejectServer) => {
    const server = createServer();
    server.once('error', rejectServer);
    server.listen(0, '127.0.0.1', () => resolveServer(server));
  });
}

/** Redis, node-1..node-5, instance A, instance B. */
async function choosePorts(base: number): Promise<number[]> {
  if (base !== 0) return Array.from({ length: PORT_COUNT }, (_, i) => base + i);
  // Held open together, so the eight are distinct; released just before the children bind.
  const servers = await Promise.all(Array.from({ length: PORT_COUNT }, listenAnyPort));
  const ports = servers.map((server) => (server.address() as AddressInfo).port);
  await Promise.all(servers.map((server) => new Promise((done) => server.close(done))));
  return ports;
}

// ------------------------------------------------------------------ processes

const procs: Proc[] = [];

function launch(
  state: ClusterState,
  name: string,
  role: Role,
  command: string,
  args: readonly string[],
  spawnOptions: { cwd: string; env?: NodeJS.ProcessEnv },
): Proc {
  // detached: the child gets its own process group, so a Ctrl-C in the terminal reaches only
  // this script, which then stops the children in order.
  const wrapper = spawn('/bin/sh', ['-c', WATCHDOG_SCRIPT, `kos-cluster-${name}`, command, ...args], {
    cwd: spawnOptions.cwd,
    env: spawnOptions.env ?? process.env,
    detached: true,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const log = createWriteStream(join(paths.logs, `${name}.log`), { flags: 'a', mode: 0o600 });
  log.on('error', (error) => warn(`cannot write ${name}.log: ${error.message}`));
  let resolveExit: (exit: Exit) => void = () => undefined;
  const proc: Proc = {
    name,
    role,
    wrapper,
    pid: undefined,
    exit: undefined,
    exited: new Promise<Exit>((done) => {
      resolveExit = done;
    }),
    stopRequested: false,
    forced: false,
    ready: false,
    tail: [],
    listeners: new Set(),
    log,
  };
  const onLine = (line: string) => {
    if (proc.pid === undefined) {
      const match = PID_LINE.exec(line);
      if (match) {
        proc.pid = Number(match[1]);
        const entry = state.processes.find((p) => p.name === name);
        if (entry) entry.pid = proc.pid;
        void writeState(state).catch(() => undefined);
        return;
      }
    }
    log.write(`${line}\n`);
    proc.tail.push(line);
    if (proc.tail.length > TAIL_LINES) proc.tail.shift();
    for (const listener of proc.listeners) listener(line);
  };
  if (wrapper.stdout) createInterface({ input: wrapper.stdout }).on('line', onLine);
  if (wrapper.stderr) createInterface({ input: wrapper.stderr }).on('line', onLine);
  const finish = (exit: Exit) => {
    if (proc.exit) return;
    proc.exit = exit;
    resolveExit(exit);
    onExit(proc);
  };
  // 'close', not 'exit': the child's last output lines have been read by then.
  wrapper.once('close', (code, sig) => finish({ code, signal: sig }));
  wrapper.once('error', (error) => {
    proc.tail.push(`could not start: ${error.message}`);
    finish({ code: null, signal: null });
  });
  procs.push(proc);
  state.processes.push({ name, role, watchdogPid: wrapper.pid, pid: undefined });
  void writeState(state).catch(() => undefined);
  return proc;
}

function describeExit(exit: Exit | undefined): string {
  if (!exit) return 'running';
  return exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}

function failure(proc: Proc, what: string): StartError {
  const tail = proc.tail.slice(-8).map((line) => `    ${line}`);
  return new StartError(
    `${proc.name} ${what} (${describeExit(proc.exit)}); last lines (full log: ${shown(join(paths.logs, `${proc.name}.log`))}):\n${tail.join('\n')}`,
  );
}

/** Resolves with what `match` finds in an output line; rejects if the process exits first or time runs out. */
function waitForLine<T>(proc: Proc, match: (line: string) => T | undefined, what: string): Promise<T> {
  return new Promise((resolveLine, rejectLine) => {
    const done = () => {
      clearTimeout(timer);
      proc.listeners.delete(listener);
    };
    const listener = (line: string) => {
      const found = match(line);
      if (found !== undefined) {
        done();
        resolveLine(found);
      }
    };
    const timer = setTimeout(() => {
      done();
      rejectLine(failure(proc, `did not ${what} within ${START_TIMEOUT_MS / 1000} s`));
    }, START_TIMEOUT_MS);
    proc.listeners.add(listener);
    void proc.exited.then(() => {
      done();
      rejectLine(failure(proc, `exited before it could ${what}`));
    });
  });
}

async function waitForRedis(proc: Proc, port: number): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (proc.exit) throw failure(proc, 'exited at start');
    const reply = await sendRedisCommand(port, ['PING'], 500);
    if (reply?.startsWith('+PONG')) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw failure(proc, `did not answer PING within ${START_TIMEOUT_MS / 1000} s`);
}

/** SIGTERM to the child itself; SIGKILL to its whole group when it takes too long. */
async function stopProc(proc: Proc): Promise<void> {
  if (proc.exit) return;
  proc.stopRequested = true;
  const group = proc.wrapper.pid === undefined ? undefined : -proc.wrapper.pid;
  if (proc.pid !== undefined) signal(proc.pid, 'SIGTERM');
  else signal(group, 'SIGKILL');
  const timer = setTimeout(() => {
    proc.forced = true;
    warn(`${proc.name} did not stop within ${STOP_TIMEOUT_MS / 1000} s: killing it`);
    signal(proc.pid, 'SIGKILL');
    signal(group, 'SIGKILL');
  }, STOP_TIMEOUT_MS);
  await proc.exited;
  clearTimeout(timer);
}

// ------------------------------------------------------------------ lifecycle

let phase: 'starting' | 'running' | 'stopping' = 'starting';
let stopping: Promise<boolean> | undefined;
let failed = false;
let clusterState: ClusterState | undefined;

/** Stops the KOS instances, then the nodes, then Redis; resolves whether all stopped cleanly. */
function shutdown(reason: string): Promise<boolean> {
  if (stopping) return stopping;
  phase = 'stopping';
  stopping = (async () => {
    if (procs.length === 0) return true;
    say(`\n[cluster] ${reason}: stopping the KOS instances, then the nodes, then Redis`);
    if (clusterState) {
      clusterState.state = 'stopping';
      await writeState(clusterState).catch(() => undefined);
    }
    for (const role of ['instance', 'node', 'redis'] as const) {
      await Promise.all(procs.filter((proc) => proc.role === role).map(stopProc));
    }
    // 143: ended by our SIGTERM before it had installed its handler (still starting).
    const stoppedWell = (proc: Proc) =>
      !proc.forced && (proc.exit?.code === 0 || (!proc.ready && proc.exit?.code === 143));
    const unclean = procs.filter((proc) => proc.stopRequested && !stoppedWell(proc));
    for (const proc of procs) {
      await new Promise<void>((done) => proc.log.end(done));
      proc.wrapper.stdin?.destroy();
    }
    const order: Role[] = ['instance', 'node', 'redis'];
    const summary = [...procs]
      .sort((x, y) => order.indexOf(x.role) - order.indexOf(y.role))
      .map((proc) => `${proc.name} (${describeExit(proc.exit)})`)
      .join(', ');
    if (unclean.length === 0) say(`[cluster] stopped: ${summary || 'nothing was running'}`);
    else warn(`stopped, but not cleanly: ${summary}`);
    return unclean.length === 0;
  })();
  return stopping;
}

/** A child that exits while nobody asked it to. */
function onExit(proc: Proc): void {
  if (proc.stopRequested || phase === 'stopping') return;
  if (phase === 'starting') {
    failed = true;
    warn(`could not start: ${failure(proc, 'exited during start-up').message}`);
    if (options.basePort !== 0) warn('if a port is in use, try another --base-port, or --base-port 0');
    void shutdown('start-up failed').then(finish);
    return;
  }
  warn(
    `${proc.name} exited unexpectedly (${describeExit(proc.exit)}); log: ${shown(join(paths.logs, `${proc.name}.log`))}`,
  );
  if (proc.role === 'redis') {
    failed = true;
    void shutdown('Redis is gone').then(finish);
  } else if (proc.role === 'node') {
    warn(
      'the cluster carries on with the other nodes: reads work while k shares of every set are reachable (system set n 5, k 3)',
    );
  } else {
    warn('the other KOS instance still serves');
  }
}

async function finish(clean: boolean): Promise<never> {
  const code = clean && !failed ? 0 : 1;
  if (clusterState) {
    clusterState.state = failed ? 'failed' : 'stopped';
    clusterState.exitCode = code;
    await writeState(clusterState).catch(() => undefined);
  }
  process.exit(code);
}

let signals = 0;
function onSignal(name: NodeJS.Signals, reason = `${name} received`): void {
  signals += 1;
  if (signals > 1) {
    warn(`${reason} again: killing every child now`);
    for (const proc of procs) {
      signal(proc.pid, 'SIGKILL');
      if (proc.wrapper.pid !== undefined) signal(-proc.wrapper.pid, 'SIGKILL');
    }
    return;
  }
  void shutdown(reason).then(finish);
}
process.on('SIGINT', () => onSignal('SIGINT'));
process.on('SIGTERM', () => onSignal('SIGTERM'));
process.on('SIGHUP', () => onSignal('SIGHUP'));
// Under `npm run`, a SIGTERM to npm kills the `sh` between npm and this script, which would
// leave this script running on its own: a changed parent pid means whoever started us is gone.
const parentPid = process.ppid;
setInterval(() => {
  if (process.ppid !== parentPid && !stopping) onSignal('SIGTERM', 'the parent process is gone');
}, 500).unref();

function printSummary(state: ClusterState): void {
  const d = shown(dir);
  const token = shown(paths.token);
  const tlsNote = state.tlsFiles
    ? 'HTTPS with mutual TLS (test CA; KOS and clients present tls/client.crt)'
    : 'plain HTTP on loopback (--no-tls)';
  const curlTls = state.tlsFiles
    ? ` --cacert ${shown(state.tlsFiles.ca)} --cert ${shown(state.tlsFiles.clientCert)} --key ${shown(state.tlsFiles.clientKey)}`
    : '';
  const [a, b] = state.instances as [InstanceInfo, InstanceInfo];
  const pidOf = (name: string) => procs.find((proc) => proc.name === name)?.pid ?? '?';
  const lines = [
    '',
    `${READY_LINE} in ${d}  (supervisor pid ${process.pid})`,
    '',
    `  KOS instance A   ${a.url}   pid ${pidOf('kos-a')}   config ${shown(a.config)}   audit ${shown(a.auditLog)}`,
    `  KOS instance B   ${b.url}   pid ${pidOf('kos-b')}   config ${shown(b.config)}   audit ${shown(b.auditLog)}`,
    `                   metrics: ${a.url}/metrics  ${b.url}/metrics   health: /health`,
    `  KMS nodes        ${tlsNote}; shares and replay caches in Redis`,
    ...state.nodes.map(
      (node) =>
        `    ${node.nodeId} ${node.zone}  ${node.url}   pid ${pidOf(node.nodeId)}   audit ${shown(node.auditLog)}`,
    ),
    `  Redis            ${state.redis.url}   pid ${pidOf('redis')}   AOF on (appendfsync always), data in ${shown(state.redis.dataDir)}`,
    `                   KOS metadata and shares under kos:*, the example's records under ${state.exampleRecords.keyPrefix}*`,
    `  Keys             ${shown(paths.keys)}/ (KOS signing key, the JWKS the nodes trust, identity key, audit salt)`,
    `  Logs             ${shown(paths.logs)}/<name>.log     State: ${shown(paths.state)}`,
    '',
    `Identity tokens (EdDSA, iss ${IDP_ISSUER}, aud ${IDP_AUDIENCE}, claim trust_score):`,
    '',
    `  HIGH=$(${token} --client alice --score 90); MEDIUM=$(${token} --client bob --score 65); LOW=$(${token} --client carol --score 30)`,
    '',
    'Write a record through one instance, then read it at each tier through either: the records,',
    'keys, share sets, access rights and locks are all shared through Redis, as behind a load balancer.',
    '',
    `  ID=$(curl -s -X POST ${a.url}/records -H "authorization: Bearer $HIGH" -H 'content-type: application/json' -d '{"patient":"Ada"}' | sed -E 's/.*"id":"([^"]+)".*/\\1/')`,
    `  curl -si ${b.url}/records/$ID -H "authorization: Bearer $LOW"      # low: plaintext`,
    `  curl -si ${b.url}/records/$ID -H "authorization: Bearer $MEDIUM"   # medium: envelope + share references + grant`,
    `  curl -si ${a.url}/records/$ID -H "authorization: Bearer $HIGH"     # high: envelope + DEK`,
    `  curl -si ${b.url}/records -H "authorization: Bearer $LOW"          # every record, oldest first`,
    '',
  ];
  lines.push(
    'A medium-tier client fetches k of its shares from the nodes itself, with the grant:',
    `  curl -s${curlTls} -H "authorization: Bearer <key.grant>" <key.shares[i].url>`,
    `Node health:  curl -s${curlTls} ${state.nodes[0]?.url}/v1/health`,
    `Audit logs:   npm run audit:verify -- ${shown(a.auditLog)} --public-key ${shown(paths.kosJwks)}`,
    `              npm run audit:verify -- ${shown(state.nodes[0]?.auditLog ?? '')} --public-key ${shown(state.nodes[0]?.auditPublicKey ?? '')}`,
    `Operate:      npm run kos -- --config ${shown(state.kos.adminConfig)} status   (also rotate, rewrap, clients, audit verify)`,
    `Rehearse a node loss: kill ${pidOf('node-3')}  (node-3; reads go on with 4 nodes)`,
    '',
    'Stop with Ctrl-C: the KOS instances, then the nodes, then Redis. The folder stays; the next run replaces it.',
    '',
  );
  say(lines.join('\n'));
}

async function main(): Promise<void> {
  const redisBinary = findRedisServerBinary();
  if (redisBinary === undefined) {
    throw new StartError('redis-server is not installed (apt-get install -y redis-server, or set REDIS_SERVER_BIN)');
  }
  await prepareDir();
  const ports = await choosePorts(options.basePort);
  const redisPort = ports[0] as number;
  const state: ClusterState = {
    kind: MARKER,
    state: 'starting',
    supervisorPid: process.pid,
    dir,
    tls: options.tls,
    redis: { url: `redis://127.0.0.1:${redisPort}`, port: redisPort, dataDir: paths.redis },
    exampleRecords: { redisUrl: `redis://127.0.0.1:${redisPort}`, keyPrefix: RECORDS_KEY_PREFIX },
    nodes: NODES.map((node, i) => {
      const nodeDir = join(dir, 'nodes', node.nodeId);
      return {
        ...node,
        port: ports[1 + i] as number,
        dir: nodeDir,
        auditLog: join(nodeDir, 'audit.jsonl'),
        auditKey: join(nodeDir, 'audit-key.jwk.json'),
        auditPublicKey: join(nodeDir, 'audit-key.pub.jwk.json'),
      };
    }),
    instances: INSTANCES.map((name, i) => ({
      name: `kos-${name}`,
      port: ports[1 + NODES.length + i] as number,
      config: join(dir, `kos-${name}.json`),
      auditLog: join(paths.audit, `kos-${name}.jsonl`),
    })),
    identity: {
      issuer: IDP_ISSUER,
      audience: IDP_AUDIENCE,
      privateJwk: paths.idpKey,
      jwks: paths.idpJwks,
      token: paths.token,
    },
    kos: {
      issuer: KOS_ISSUER,
      signingKey: paths.signingKey,
      jwks: paths.kosJwks,
      auditSalt: paths.auditSalt,
      adminConfig: join(dir, 'kos-admin.json'),
      adminAuditLog: join(paths.audit, 'kos-admin.jsonl'),
    },
    ...(options.tls
      ? {
          tlsFiles: {
            ca: join(paths.tls, 'ca.crt'),
            nodeCert: join(paths.tls, 'node.crt'),
            nodeKey: join(paths.tls, 'node.key'),
            clientCert: join(paths.tls, 'client.crt'),
            clientKey: join(paths.tls, 'client.key'),
          },
        }
      : {}),
    processes: [],
  };
  clusterState = state;
  await mkdir(join(dir, 'nodes'), { mode: 0o700 });
  await writeKeysAndHelpers(state);
  await writeState(state);
  say(`[cluster] starting in ${shown(dir)} (${options.tls ? 'mutual TLS' : 'plain HTTP'})`);

  // Redis: AOF on, every write fsync'd before it is acknowledged; RDB snapshots off.
  const redis = launch(
    state,
    'redis',
    'redis',
    redisBinary,
    [
      '--port',
      String(redisPort),
      '--bind',
      '127.0.0.1',
      '--dir',
      paths.redis,
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
      '--save',
      '',
      '--daemonize',
      'no',
      '--logfile',
      '',
    ],
    { cwd: paths.redis },
  );
  await waitForRedis(redis, redisPort);
  redis.ready = true;
  if (stopping) return;

  const scheme = state.tlsFiles ? 'https' : 'http';
  const origins = state.instances.map((instance) => `http://127.0.0.1:${instance.port}`);
  const nodeStarts = state.nodes.map((node) => {
    const publicUrl = `${scheme}://127.0.0.1:${node.port}`;
    const tls = state.tlsFiles;
    const proc = launch(
      state,
      node.nodeId,
      'node',
      process.execPath,
      [
        '--conditions=kos-source',
        '--import',
        'tsx',
        KMS_CLI,
        '--node-id',
        node.nodeId,
        '--issuer',
        KOS_ISSUER,
        '--trusted-keys',
        paths.kosJwks,
        '--store',
        'redis',
        '--redis-url',
        state.redis.url,
        '--host',
        '127.0.0.1',
        '--port',
        String(node.port),
        ...(tls ? ['--tls-cert', tls.nodeCert, '--tls-key', tls.nodeKey, '--client-ca', tls.ca] : []),
        '--public-url',
        publicUrl,
        '--audit-log',
        node.auditLog,
        '--audit-salt-file',
        paths.auditSalt,
        '--audit-key',
        node.auditKey,
        '--cors-origin',
        ...origins,
      ],
      { cwd: ROOT },
    );
    return waitForLine(
      proc,
      (line) => {
        try {
          const event = JSON.parse(line) as { event?: string; url?: string };
          return event.event === 'listening' && event.url ? event.url : undefined;
        } catch {
          return undefined;
        }
      },
      'listen',
    ).then((url) => {
      node.url = url;
      proc.ready = true;
    });
  });
  await Promise.all(nodeStarts);
  if (stopping) return;

  for (const { config, auditLog } of [
    ...state.instances,
    { config: state.kos.adminConfig, auditLog: state.kos.adminAuditLog },
  ]) {
    await writeFile(config, `${JSON.stringify(instanceConfig(state, { auditLog }), null, 2)}\n`, { mode: 0o600 });
  }
  const env = { ...process.env };
  delete env.KOS_DIR;
  // The records are shared through Redis like the keys: a record written through A reads through B.
  env.KOS_EXAMPLE_RECORDS_REDIS_URL = state.exampleRecords.redisUrl;
  env.KOS_EXAMPLE_RECORDS_REDIS_PREFIX = state.exampleRecords.keyPrefix;
  const instanceStarts = state.instances.map((instance) => {
    const proc = launch(
      state,
      instance.name,
      'instance',
      process.execPath,
      ['--conditions=kos-source', '--import', 'tsx', EXAMPLE_SERVER],
      {
        cwd: ROOT,
        env: { ...env, PORT: String(instance.port), KOS_CONFIG: instance.config, NODE_ENV: 'production' },
      },
    );
    return waitForLine(proc, (line) => /listening on (http:\/\/\S+)/.exec(line)?.[1], 'listen').then((url) => {
      instance.url = url;
      proc.ready = true;
    });
  });
  await Promise.all(instanceStarts);
  if (stopping) return;

  phase = 'running';
  state.state = 'running';
  await writeState(state);
  printSummary(state);
}

main().catch(async (error: unknown) => {
  if (stopping) return; // a signal during start-up: shutdown() reports and exits
  failed = true;
  const message = error instanceof StartError ? error.message : ((error as Error)?.stack ?? String(error));
  warn(`could not start: ${message}`);
  await finish(await shutdown('start-up failed'));
});
