import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findRedisServerBinary, type RedisServer, sendRedisCommand, startRedisServer } from './redis-server.js';

/**
 * A Sentinel-managed Redis on loopback for tests: one master and `replicas` replicas (AOF on,
 * `appendfsync always`), watched by `sentinels` real `redis-server --sentinel` processes (each
 * with its own config file, which Sentinel rewrites). Built on {@link startRedisServer}, so every
 * process runs under its watchdog and dies with the test process.
 *
 * @example
 * const setup = (await startRedisSentinel({ replicas: 1 }))!;
 * const redis = new Redis({ sentinels: setup.sentinelEndpoints, name: setup.masterName });
 * await setup.failover(); // the replica is master now; ioredis follows
 * await setup.stop();
 */
export interface RedisSentinelSetup {
  /** The name the Sentinels monitor (`sentinel monitor <name> …`). */
  readonly masterName: string;
  /** The first master, then the replicas, in start order. */
  readonly servers: readonly RedisServer[];
  readonly sentinels: readonly RedisServer[];
  /** `{ host, port }` of each Sentinel, as a configuration names them. */
  readonly sentinelEndpoints: readonly { host: string; port: number }[];
  /** The master's port as the Sentinels report it now. */
  masterPort(): Promise<number | undefined>;
  /**
   * Makes a replica the master: `SENTINEL FAILOVER` (the old master, still running, becomes a
   * replica), or with `kill` a crash of the master that the Sentinels must notice (about 1 s)
   * before they promote a replica. Resolves the new master's port once it accepts writes.
   */
  failover(options?: { readonly kill?: boolean }): Promise<number>;
  /** Resolves once every running replica has received everything the master has written. */
  sync(): Promise<void>;
  /** Stops every Sentinel and server and removes their directories. */
  stop(): Promise<void>;
}

const FAILOVER_TIMEOUT_MS = 30_000;

function delay(ms: number): Promise<void> {
  return new Promise((resolveDelay) => setTimeout(resolveDelay, ms));
}

/** The bulk strings of a RESP array reply (enough for GET-MASTER-ADDR-BY-NAME). */
function bulkStrings(reply: string | undefined): string[] {
  if (reply === undefined || !reply.startsWith('*')) return [];
  const lines = reply.split('\r\n');
  const values: string[] = [];
  for (let i = 1; i < lines.length; i++) {
    if (lines[i]?.startsWith('$') && lines[i] !== '$-1') values.push(lines[i + 1] ?? '');
  }
  return values;
}

/**
 * Starts the master, its replicas and the Sentinels; resolves once every Sentinel reports the
 * master and knows every replica.
 *
 * @returns undefined when redis-server is not installed (outside CI).
 */
export async function startRedisSentinel(
  options: { readonly replicas?: number; readonly sentinels?: number; readonly masterName?: string } = {},
): Promise<RedisSentinelSetup | undefined> {
  if (findRedisServerBinary() === undefined) return undefined;
  const masterName = options.masterName ?? 'kosmaster';
  const servers: RedisServer[] = [];
  const sentinels: RedisServer[] = [];
  const sentinelDirs: string[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(sentinels.map((sentinel) => sentinel.stop()));
    await Promise.all(servers.map((server) => server.stop()));
    await Promise.all(sentinelDirs.map((dir) => rm(dir, { recursive: true, force: true })));
  };
  try {
    const master = await startRedisServer({ persistence: 'aof' });
    if (master === undefined) throw new Error('redis-server disappeared');
    servers.push(master);
    for (let i = 0; i < (options.replicas ?? 0); i++) {
      const replica = await startRedisServer({
        persistence: 'aof',
        extraArgs: ['--replicaof', '127.0.0.1', String(master.port)],
      });
      if (replica === undefined) throw new Error('redis-server disappeared');
      servers.push(replica);
    }
    const count = options.sentinels ?? 1;
    const quorum = Math.floor(count / 2) + 1;
    for (let i = 0; i < count; i++) {
      const dir = await mkdtemp(join(tmpdir(), 'kos-sentinel-'));
      sentinelDirs.push(dir);
      const configFile = join(dir, 'sentinel.conf');
      await writeFile(
        configFile,
        [
          `sentinel monitor ${masterName} 127.0.0.1 ${master.port} ${quorum}`,
          `sentinel down-after-milliseconds ${masterName} 1000`,
          `sentinel failover-timeout ${masterName} 10000`,
          `sentinel parallel-syncs ${masterName} 1`,
          '',
        ].join('\n'),
      );
      const sentinel = await startRedisServer({ dir, configFile, extraArgs: ['--sentinel'] });
      if (sentinel === undefined) throw new Error('redis-server disappeared');
      sentinels.push(sentinel);
    }
    // Every Sentinel knows the master and all replicas before a test relies on a failover.
    const deadline = Date.now() + FAILOVER_TIMEOUT_MS;
    for (;;) {
      const known = await Promise.all(
        sentinels.map(async (sentinel) => {
          const replicas = await sendRedisCommand(sentinel.port, ['SENTINEL', 'REPLICAS', masterName]);
          const found = (replicas?.match(/\*\d+\r\n/g) ?? []).length - 1;
          return found >= (options.replicas ?? 0);
        }),
      );
      if (known.every(Boolean)) break;
      if (Date.now() > deadline) throw new Error('the Sentinels did not discover the replicas in time');
      await delay(100);
    }
  } catch (error) {
    await stop();
    throw error;
  }

  const masterPort = async (): Promise<number | undefined> => {
    for (const sentinel of sentinels) {
      if (!sentinel.running) continue;
      const address = bulkStrings(
        await sendRedisCommand(sentinel.port, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName]),
      );
      if (address[1] !== undefined) return Number(address[1]);
    }
    return undefined;
  };

  const replicationOffset = async (port: number, field: string): Promise<number | undefined> => {
    const info = await sendRedisCommand(port, ['INFO', 'replication']);
    const value = new RegExp(`${field}:(\\d+)`).exec(info ?? '')?.[1];
    return value === undefined ? undefined : Number(value);
  };

  return {
    masterName,
    servers,
    sentinels,
    sentinelEndpoints: sentinels.map((sentinel) => ({ host: '127.0.0.1', port: sentinel.port })),
    masterPort,
    async failover(failoverOptions = {}) {
      const before = await masterPort();
      const old = servers.find((server) => server.port === before);
      if (failoverOptions.kill) await old?.kill('SIGKILL');
      else {
        const reply = await sendRedisCommand((sentinels[0] as RedisServer).port, ['SENTINEL', 'FAILOVER', masterName]);
        if (!reply?.startsWith('+OK')) throw new Error(`SENTINEL FAILOVER refused: ${reply}`);
      }
      const deadline = Date.now() + FAILOVER_TIMEOUT_MS;
      for (;;) {
        const now = await masterPort();
        if (now !== undefined && now !== before) {
          const role = await sendRedisCommand(now, ['ROLE']);
          if (role?.includes('master')) return now;
        }
        if (Date.now() > deadline) throw new Error(`no failover within ${FAILOVER_TIMEOUT_MS} ms (master ${now})`);
        await delay(100);
      }
    },
    async sync() {
      const port = await masterPort();
      if (port === undefined) throw new Error('no master');
      const target = await replicationOffset(port, 'master_repl_offset');
      const deadline = Date.now() + FAILOVER_TIMEOUT_MS;
      for (const replica of servers.filter((server) => server.port !== port && server.running)) {
        for (;;) {
          const offset = await replicationOffset(replica.port, 'slave_repl_offset');
          if (offset !== undefined && target !== undefined && offset >= target) break;
          if (Date.now() > deadline) throw new Error(`replica ${replica.port} did not catch up`);
          await delay(50);
        }
      }
    },
    stop,
  };
}
