import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { watchdogScript } from './watchdog.js';

/**
 * Private redis-server processes for tests: each on a free loopback port with its own data
 * directory, never the machine's system-wide Redis. Test files decide whether to skip with
 * {@link findRedisServerBinary} (which throws under `CI=true` when redis-server is missing,
 * so CI fails loudly instead of skipping).
 *
 * @example
 * const binary = findRedisServerBinary();
 * if (binary === undefined) console.warn(REDIS_SKIP_WARNING);
 * const describeRedis = binary === undefined ? describe.skip : describe;
 * describeRedis('redis', () => {
 *   let server: RedisServer;
 *   beforeAll(async () => { server = (await startRedisServer({ persistence: 'aof' }))!; });
 *   afterAll(() => server.stop());
 * });
 */

/** What test files print when they skip because redis-server is not installed. */
export const REDIS_SKIP_WARNING = 'REDIS TESTS SKIPPED: redis-server not installed';

const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;
const PROBE_INTERVAL_MS = 25;
const PROBE_TIMEOUT_MS = 1_000;
const PORT_ATTEMPTS = 5;
const MAX_LOG_CHARS = 16_384;

export interface RedisServerOptions {
  /** `aof`: `appendonly yes` with `appendfsync always` (every acknowledged write is on disk); `none` (default): no AOF. RDB save points are always off. */
  readonly persistence?: 'aof' | 'none';
  /** Data directory; default a fresh temp directory, removed by `stop()`. A given directory is kept. */
  readonly dir?: string;
  /** More `--name value` arguments for redis-server (e.g. `['--rename-command', 'CONFIG', '']`). */
  readonly extraArgs?: readonly string[];
  /** A configuration file given before the other arguments (a Sentinel needs one it can rewrite). */
  readonly configFile?: string;
}

export interface RedisServer {
  /** Loopback port the server listens on; the same after `restart()`. */
  readonly port: number;
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  /** Data directory (AOF files live in `<dir>/appendonlydir`). */
  readonly dir: string;
  /** Whether the process is running. */
  readonly running: boolean;
  /** The last lines the server printed (for failure messages). */
  log(): string;
  /** Stops the server (SIGTERM, SIGKILL after 5 s) and removes its directory if it created it. */
  stop(): Promise<void>;
  /** Sends `signal` (default SIGKILL: a crash) and waits for the process to exit. Data stays. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and directory (stopping it first if running); resolves once PING answers. */
  restart(): Promise<void>;
}

/** A Redis Cluster of several masters (no replicas) on loopback ports. */
export interface RedisCluster {
  /** Every master, in slot order. */
  readonly nodes: readonly RedisServer[];
  /** `{ host, port }` of each node, for `new Cluster(startupNodes)`. */
  readonly startupNodes: readonly { host: string; port: number }[];
  /** Stops every node and removes their directories. */
  stop(): Promise<void>;
}

/** redis-server runs under the watchdog (./watchdog.ts): no server outlives the tests that started it. */
const WATCHDOG_SCRIPT = watchdogScript('kos-redis-pid');
const PID_LINE = /kos-redis-pid (\d+)/;

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Path of the redis-server binary: `$REDIS_SERVER_BIN`, then `redis-server` on PATH, then
 * `/usr/bin/redis-server` and `/usr/local/bin/redis-server`. Undefined when none exists.
 *
 * @throws Error when none exists and `process.env.CI === 'true'`: CI must run these tests.
 */
export function findRedisServerBinary(): string | undefined {
  const onPath = (process.env.PATH ?? '').split(delimiter).filter((dir) => dir.length > 0);
  const candidates = [
    process.env.REDIS_SERVER_BIN,
    ...onPath.map((dir) => join(dir, 'redis-server')),
    '/usr/bin/redis-server',
    '/usr/local/bin/redis-server',
  ];
  const found = candidates.find((path): path is string => path !== undefined && path !== '' && isExecutable(path));
  if (found === undefined && process.env.CI === 'true') {
    throw new Error('redis-server is not installed but CI=true; install it (apt-get install -y redis-server)');
  }
  return found;
}

/** A port that was free a moment ago on 127.0.0.1. */
function freePort(): Promise<number> {
  return new Promise((resolvePort, rejectPort) => {
    const server = createServer();
    server.unref();
    server.on('error', rejectPort);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** Sends one command in RESP and resolves the raw reply text, or undefined when nothing answers in time. */
export function sendRedisCommand(
  port: number,
  args: readonly string[],
  timeoutMs = PROBE_TIMEOUT_MS,
): Promise<string | undefined> {
  return new Promise((resolveReply) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const finish = (value: string | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolveReply(value);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      const parts = args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`);
      socket.write(`*${args.length}\r\n${parts.join('')}`);
    });
    socket.on('data', (chunk: string) => {
      reply += chunk;
      if (isCompleteReply(reply)) finish(reply);
    });
    socket.on('error', () => finish(undefined));
    socket.on('close', () => finish(reply === '' ? undefined : reply));
  });
}

/** Whether `reply` holds one whole RESP2 value (simple, error, integer, bulk or nested array). */
function isCompleteReply(reply: string): boolean {
  return respEnd(Buffer.from(reply, 'utf8'), 0) !== -1;
}

/** Offset just past the RESP2 value starting at `start`, or -1 when it has not fully arrived. */
function respEnd(bytes: Buffer, start: number): number {
  const lineEnd = bytes.indexOf('\r\n', start);
  if (lineEnd === -1) return -1;
  const type = String.fromCharCode(bytes[start] ?? 0);
  const header = Number(bytes.subarray(start + 1, lineEnd).toString('utf8'));
  if (type === '$') {
    if (header < 0) return lineEnd + 2;
    const end = lineEnd + 2 + header + 2;
    return bytes.length >= end ? end : -1;
  }
  if (type === '*') {
    let offset = lineEnd + 2;
    for (let i = 0; i < header; i++) {
      offset = respEnd(bytes, offset);
      if (offset === -1) return -1;
    }
    return offset;
  }
  return lineEnd + 2;
}

/** Resolves when `child` has exited; keeps this process alive meanwhile (the child is unref'd otherwise). */
function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  child.ref();
  return new Promise((resolveExit) =>
    child.once('exit', () => {
      child.unref();
      resolveExit();
    }),
  );
}

function delay(ms: number): Promise<void> {
  return new Promise((resolveDelay) => setTimeout(resolveDelay, ms));
}

/**
 * Starts a private redis-server on a free 127.0.0.1 port (`--save ''`, `--appendonly yes|no`,
 * `--appendfsync always`, its own `--dir`) and resolves once it answers PING.
 *
 * @returns undefined when redis-server is not installed (outside CI).
 * @throws Error when it is missing under `CI=true`, or does not start within 15 s.
 */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer | undefined> {
  const binary = findRedisServerBinary();
  if (binary === undefined) return undefined;
  const ownsDir = options.dir === undefined;
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'kos-redis-')));
  const persistence = options.persistence ?? 'none';
  const extraArgs = options.extraArgs ?? [];
  let child: ChildProcess | undefined;
  let output = '';
  let port = 0;
  let redisPid: number | undefined;

  const isRunning = (): boolean => child !== undefined && child.exitCode === null && child.signalCode === null;

  /** Sends `signal` to redis-server itself (not to its watchdog). */
  function signalRedis(signal: NodeJS.Signals): void {
    if (redisPid === undefined || !isRunning()) return;
    try {
      process.kill(redisPid, signal);
    } catch {
      // Already gone.
    }
  }

  async function launch(): Promise<boolean> {
    const args = [
      ...(options.configFile === undefined ? [] : [options.configFile]),
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      persistence === 'aof' ? 'yes' : 'no',
      '--appendfsync',
      'always',
      '--daemonize',
      'no',
      '--logfile',
      '',
      ...extraArgs,
    ];
    const started = spawn('/bin/sh', ['-c', WATCHDOG_SCRIPT, 'kos-redis-watchdog', binary as string, ...args], {
      cwd: dir,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child = started;
    redisPid = undefined;
    let head = '';
    const collect = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      output = (output + text).slice(-MAX_LOG_CHARS);
      if (redisPid !== undefined || started !== child) return;
      head += text;
      const pid = PID_LINE.exec(head)?.[1];
      if (pid !== undefined) redisPid = Number(pid);
    };
    started.stdout?.on('data', collect);
    started.stderr?.on('data', collect);
    // A server the tests forgot to stop must not keep this process alive; the watchdog still
    // kills it when this process exits.
    started.unref();
    for (const stream of [started.stdin, started.stdout, started.stderr]) (stream as Partial<Socket> | null)?.unref?.();
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (!isRunning()) return false;
      const reply = await sendRedisCommand(port, ['PING']);
      if (reply?.startsWith('+PONG') && isRunning() && redisPid !== undefined) return true;
      await delay(PROBE_INTERVAL_MS);
    }
    signalRedis('SIGKILL');
    started.kill('SIGKILL');
    await waitForExit(started);
    throw new Error(`redis-server on port ${port} did not answer PING within ${START_TIMEOUT_MS} ms:\n${output}`);
  }

  async function terminate(): Promise<void> {
    const running = child;
    if (running === undefined || !isRunning()) return;
    signalRedis('SIGTERM');
    const timer = setTimeout(() => signalRedis('SIGKILL'), STOP_TIMEOUT_MS);
    await waitForExit(running);
    clearTimeout(timer);
  }

  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    if (await launch()) break;
    // Another process took the port between freePort() and redis binding it: try another.
    if (attempt >= PORT_ATTEMPTS || !/address already in use/i.test(output)) {
      if (ownsDir) await rm(dir, { recursive: true, force: true });
      throw new Error(`redis-server did not start:\n${output}`);
    }
  }

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    get running() {
      return isRunning();
    },
    log: () => output,
    async stop() {
      await terminate();
      if (ownsDir) await rm(dir, { recursive: true, force: true });
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      const running = child;
      if (running === undefined || !isRunning()) return;
      signalRedis(signal);
      await waitForExit(running);
    },
    async restart() {
      await terminate();
      if (!(await launch())) throw new Error(`redis-server did not restart on port ${port}:\n${output}`);
    },
  };
}

/**
 * Starts `masters` cluster-enabled redis-servers (default 3, AOF on), joins them with
 * `redis-cli --cluster create` and resolves once every node reports `cluster_state:ok`.
 *
 * @returns undefined when redis-server is not installed (outside CI).
 * @throws Error when redis-cli is missing next to redis-server or the cluster does not form.
 */
export async function startRedisCluster(options: { masters?: number } = {}): Promise<RedisCluster | undefined> {
  const binary = findRedisServerBinary();
  if (binary === undefined) return undefined;
  const cli = join(dirname(binary), 'redis-cli');
  if (!isExecutable(cli)) throw new Error(`redis-cli not found next to ${binary}`);
  const count = options.masters ?? 3;
  const nodes: RedisServer[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(nodes.map((node) => node.stop()));
  };
  try {
    for (let i = 0; i < count; i++) {
      const node = await startRedisServer({
        persistence: 'aof',
        extraArgs: [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          'nodes.conf',
          '--cluster-node-timeout',
          '2000',
        ],
      });
      if (node === undefined) throw new Error('redis-server disappeared');
      nodes.push(node);
    }
    await promisify(execFile)(cli, [
      '--cluster',
      'create',
      ...nodes.map((node) => `127.0.0.1:${node.port}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ]);
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const infos = await Promise.all(nodes.map((node) => sendRedisCommand(node.port, ['CLUSTER', 'INFO'])));
      if (infos.every((info) => info?.includes('cluster_state:ok'))) break;
      if (Date.now() > deadline)
        throw new Error(`the redis cluster did not reach cluster_state:ok: ${infos.join(' | ')}`);
      await delay(100);
    }
  } catch (error) {
    await stopAll();
    throw error;
  }
  return {
    nodes,
    startupNodes: nodes.map((node) => ({ host: '127.0.0.1', port: node.port })),
    stop: stopAll,
  };
}
