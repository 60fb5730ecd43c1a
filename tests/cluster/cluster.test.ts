import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createOpener, type HighTierItem, type MediumTierItem } from '@kos/core/client';
import { createKosRuntime, loadKosConfigFile, verifyAuditLog } from '@kos/kms-adapters';
import type { JWK } from 'jose';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { findRedisServerBinary, REDIS_SKIP_WARNING, sendRedisCommand } from '../../test-support/redis-server.js';

/**
 * `npm run cluster` end to end: Redis, five kos-kms processes over mutual TLS and two KOS
 * instances of the Express example (records, keys and metadata shared through Redis), driven
 * over HTTP like an operator would, then stopped with SIGINT. Also: a child that cannot start
 * takes the whole cluster down, leaving nothing.
 */

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const run = promisify(execFile);
const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
const describeRedis = haveRedis ? describe : describe.skip;

const READY_LINE = 'KOS cluster ready';

interface ClusterState {
  state: string;
  supervisorPid: number;
  exitCode?: number;
  redis: { url: string; port: number; dataDir: string };
  exampleRecords: { redisUrl: string; keyPrefix: string };
  nodes: { nodeId: string; zone: string; url: string; auditLog: string; auditPublicKey: string }[];
  instances: { name: string; url: string; config: string; auditLog: string }[];
  identity: { token: string };
  kos: { jwks: string; adminConfig: string; adminAuditLog: string };
  tlsFiles?: { ca: string; clientCert: string; clientKey: string };
  processes: { name: string; role: string; watchdogPid?: number; pid?: number }[];
}

interface ClusterRun {
  readonly child: ChildProcess;
  output(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitFor(text: string, timeoutMs: number): Promise<void>;
}

/** A record as the example returns it: `data` is the plaintext (low) or a tiered item. */
interface RecordBody {
  id: string;
  data: unknown;
}

const runs: ClusterRun[] = [];
const cleanup: string[] = [];

function startCluster(args: readonly string[]): ClusterRun {
  // Own process group, so that a failed test can take down npm, sh and the supervisor at once
  // (the supervisor's watchdogs then kill its children).
  const child = spawn('npm', ['run', '-s', 'cluster', '--', ...args], {
    cwd: root,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const waiters = new Set<() => void>();
  const collect = (chunk: Buffer) => {
    text += chunk.toString('utf8');
    for (const waiter of waiters) waiter();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    child.once('close', (code, signal) => done({ code, signal })),
  );
  const clusterRun: ClusterRun = {
    child,
    output: () => text,
    exited,
    waitFor(wanted, timeoutMs) {
      return new Promise((resolveWait, rejectWait) => {
        const check = () => {
          if (!text.includes(wanted)) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolveWait();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          rejectWait(new Error(`no "${wanted}" within ${timeoutMs} ms:\n${text}`));
        }, timeoutMs);
        waiters.add(check);
        void exited.then(() => {
          if (!waiters.has(check)) return;
          waiters.delete(check);
          clearTimeout(timer);
          rejectWait(new Error(`npm run cluster exited before "${wanted}":\n${text}`));
        });
        check();
      });
    },
  };
  runs.push(clusterRun);
  return clusterRun;
}

async function readState(dir: string): Promise<ClusterState> {
  return JSON.parse(await readFile(join(dir, 'cluster.json'), 'utf8')) as ClusterState;
}

function isAlive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Every process the cluster started (children and their watchdogs) and the supervisor. */
function pidsOf(state: ClusterState): number[] {
  return [
    state.supervisorPid,
    ...state.processes.flatMap((p) => [p.pid, p.watchdogPid]).filter((pid): pid is number => pid !== undefined),
  ];
}

afterEach(async () => {
  for (const clusterRun of runs.splice(0)) {
    if (clusterRun.child.exitCode !== null || clusterRun.child.signalCode !== null) continue;
    try {
      process.kill(-(clusterRun.child.pid as number), 'SIGINT');
    } catch {
      // Gone.
    }
    const timeout = new Promise((done) => setTimeout(done, 20_000));
    if ((await Promise.race([clusterRun.exited.then(() => 'done'), timeout])) !== 'done') {
      process.kill(-(clusterRun.child.pid as number), 'SIGKILL');
    }
  }
  for (const dir of cleanup.splice(0)) await rm(dir, { recursive: true, force: true });
});

describeRedis('npm run cluster', () => {
  it('runs Redis, five mutual-TLS nodes and two KOS instances sharing metadata and records; SIGINT stops them all', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'kos-cluster-test-'));
    cleanup.push(parent);
    const dir = join(parent, 'cluster');
    const cluster = startCluster(['--dir', dir, '--base-port', '0']);
    await cluster.waitFor(READY_LINE, 90_000);
    const state = await readState(dir);
    expect(state.state).toBe('running');
    expect(state.processes.map((p) => p.name).sort()).toEqual(
      ['kos-a', 'kos-b', 'node-1', 'node-2', 'node-3', 'node-4', 'node-5', 'redis'].sort(),
    );
    for (const pid of pidsOf(state)) expect(isAlive(pid)).toBe(true);
    expect(state.nodes.map((node) => node.zone)).toEqual(['zone-a', 'zone-a', 'zone-b', 'zone-b', 'zone-c']);
    for (const node of state.nodes) expect(node.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const config = JSON.parse(await readFile(state.instances[0]?.config as string, 'utf8'));
    expect(config.metadata).toEqual({ kind: 'redis', url: state.redis.url });
    expect(config.nodes[0]).toMatchObject({ kind: 'http', zone: 'zone-a', caFile: 'tls/ca.crt' });
    // The example's records go to the same Redis, under a prefix apart from KOS's `kos:` keys.
    expect(state.exampleRecords).toEqual({ redisUrl: state.redis.url, keyPrefix: 'kos-example:records:' });

    const output = cluster.output();
    for (const where of [...state.instances.map((i) => i.url), ...state.nodes.map((n) => n.url), state.redis.url]) {
      expect(output).toContain(where);
    }
    expect(output).toContain(`${state.identity.token} --client alice --score 90`);

    // A fetch that trusts the test CA and presents the client certificate (the nodes require one).
    const tls = state.tlsFiles as NonNullable<ClusterState['tlsFiles']>;
    const dispatcher = new Agent({
      connect: {
        ca: await readFile(tls.ca, 'utf8'),
        cert: await readFile(tls.clientCert, 'utf8'),
        key: await readFile(tls.clientKey, 'utf8'),
      },
    });
    const clientFetch = ((url: string, init?: RequestInit) =>
      undiciFetch(url, { ...(init as object), dispatcher })) as unknown as typeof fetch;
    try {
      const health = await clientFetch(`${state.nodes[0]?.url}/v1/health`);
      expect(await health.json()).toEqual({ status: 'ok', nodeId: 'node-1' });
      // Without a client certificate the node refuses the connection (mutual TLS).
      const noCert = new Agent({ connect: { ca: await readFile(tls.ca, 'utf8') } });
      await expect(undiciFetch(`${state.nodes[0]?.url}/v1/health`, { dispatcher: noCert })).rejects.toThrow();
      await noCert.close();

      // Identity tokens from the helper the cluster wrote.
      const token = async (client: string, score: number) =>
        (await run(state.identity.token, ['--client', client, '--score', String(score)])).stdout.trim();
      const [writer, low, medium, high] = await Promise.all([
        token('writer', 95),
        token('reader-low', 30),
        token('reader-medium', 65),
        token('reader-high', 90),
      ]);
      const [a, b] = state.instances as [ClusterState['instances'][0], ClusterState['instances'][0]];

      const write = async (base: string, data: unknown) => {
        const response = await fetch(`${base}/records`, {
          method: 'POST',
          headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/json' },
          body: JSON.stringify(data),
        });
        expect(response.status).toBe(201);
        return ((await response.json()) as { id: string }).id;
      };
      const read = async (base: string, id: string, bearer: string) => {
        const response = await fetch(`${base}/records/${id}`, { headers: { authorization: `Bearer ${bearer}` } });
        expect(response.status).toBe(200);
        return { tier: response.headers.get('kos-tier'), body: (await response.json()) as RecordBody };
      };
      const opened = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes)) as unknown;

      // Instance A writes first: it creates the key `records` (version 1, system share set on
      // the five nodes, records in Redis); instance B then seals with that same key.
      const recordA = { patient: 'Ada', via: 'A' };
      const recordB = { patient: 'Grace', via: 'B' };
      const idA = await write(a.url, recordA);
      const idB = await write(b.url, recordB);

      // Every tier through the instance that wrote the record.
      for (const [base, id, record] of [
        [a.url, idA, recordA],
        [b.url, idB, recordB],
      ] as const) {
        const lowRead = await read(base, id, low);
        expect(lowRead.tier).toBe('low');
        expect(lowRead.body.data).toEqual(record);
        const mediumRead = await read(base, id, medium);
        expect(mediumRead.tier).toBe('medium');
        expect((mediumRead.body.data as MediumTierItem & { kosTier: string }).kosTier).toBe('medium');
        expect(
          ((await createOpener({ fetch: clientFetch }).openBody(mediumRead.body)) as { data: unknown }).data,
        ).toEqual(record);
        const highRead = await read(base, id, high);
        expect(highRead.tier).toBe('high');
        expect(((await createOpener().openBody(highRead.body)) as { data: unknown }).data).toEqual(record);
      }

      // Shared records: what one instance stored, the other serves, at every tier (a load
      // balancer may send the write to A and the read to B).
      for (const [base, id, record] of [
        [b.url, idA, recordA],
        [a.url, idB, recordB],
      ] as const) {
        const lowRead = await read(base, id, low);
        expect(lowRead.tier).toBe('low');
        expect(lowRead.body).toEqual({ id, data: record });
        const highRead = await read(base, id, high);
        expect(highRead.tier).toBe('high');
        expect(highRead.body.id).toBe(id);
        expect(JSON.stringify(highRead.body)).not.toContain('"patient"');
        expect(((await createOpener().openBody(highRead.body)) as { data: unknown }).data).toEqual(record);
        const mediumRead = await read(base, id, medium);
        expect(mediumRead.tier).toBe('medium');
        expect(
          ((await createOpener({ fetch: clientFetch }).openBody(mediumRead.body)) as { data: unknown }).data,
        ).toEqual(record);
      }
      // Both instances list the same records, oldest first; Redis holds them as sealed JSON
      // strings under the example's prefix (never in plaintext).
      for (const base of [a.url, b.url]) {
        const response = await fetch(`${base}/records`, { headers: { authorization: `Bearer ${low}` } });
        expect(response.status).toBe(200);
        expect(await response.json()).toEqual([
          { id: idA, data: recordA },
          { id: idB, data: recordB },
        ]);
      }
      const prefix = state.exampleRecords.keyPrefix;
      expect(await sendRedisCommand(state.redis.port, ['ZRANGE', `${prefix}order`, '0', '-1'])).toBe(
        `*2\r\n$${idA.length}\r\n${idA}\r\n$${idB.length}\r\n${idB}\r\n`,
      );
      const storedA = (await sendRedisCommand(state.redis.port, ['HGET', `${prefix}data`, idA])) ?? '';
      expect(storedA).toContain('"kos":1');
      expect(storedA).not.toContain('patient');

      // Shared metadata: B's key material opens what A sealed. The DEK B releases is A's, and
      // the medium-tier share set B provisions on the nodes rebuilds the key of A's envelope.
      const highA = (await read(a.url, idA, high)).body.data as HighTierItem & {
        envelope: { kid: string; ver: number };
      };
      const highB = (await read(b.url, idB, high)).body.data as HighTierItem & {
        envelope: { kid: string; ver: number };
      };
      expect([highA.envelope.kid, highA.envelope.ver]).toEqual(['records', 1]);
      expect([highB.envelope.kid, highB.envelope.ver]).toEqual(['records', 1]);
      expect(highB.dek).toBe(highA.dek);
      expect(opened(await createOpener().open({ ...highB, envelope: highA.envelope }))).toEqual(recordA);
      const mediumB = (await read(b.url, idB, medium)).body.data as MediumTierItem;
      expect(
        opened(await createOpener({ fetch: clientFetch }).open({ key: mediumB.key, envelope: highA.envelope })),
      ).toEqual(recordA);

      // Rotation from a third KOS process on the same Redis and nodes (the example has no admin
      // route; this is what `kos rotate` does with the cluster's kos-admin.json): both instances
      // seal under version 2 once their cached key record (1 s) expires, and version 1 still opens.
      const admin = await createKosRuntime({ config: loadKosConfigFile(state.kos.adminConfig) });
      try {
        expect((await admin.kos.keys.rotate('records')).version).toBe(2);
      } finally {
        await admin.close();
      }
      for (const base of [a.url, b.url]) {
        const deadline = Date.now() + 10_000;
        let version = 1;
        while (version !== 2 && Date.now() < deadline) {
          const id = await write(base, { patient: 'Rotated', via: base });
          version = ((await read(base, id, high)).body.data as { envelope: { ver: number } }).envelope.ver;
          if (version !== 2) await new Promise((r) => setTimeout(r, 200));
        }
        expect(version).toBe(2);
      }
      expect((await read(a.url, idA, low)).body.data).toEqual(recordA);
      expect((await read(b.url, idB, low)).body.data).toEqual(recordB);

      // Each instance is a Prometheus scrape target.
      for (const base of [a.url, b.url]) {
        const metrics = await fetch(`${base}/metrics`);
        expect(metrics.status).toBe(200);
        expect(await metrics.text()).toContain('kos_decisions_total');
      }
    } finally {
      await dispatcher.close();
    }

    // Ctrl-C: the supervisor stops the instances, the nodes, then Redis, and exits 0.
    process.kill(state.supervisorPid, 'SIGINT');
    expect(await cluster.exited).toEqual({ code: 0, signal: null });
    expect(cluster.output()).toMatch(/\[cluster\] stopped: kos-a \(exit code 0\), kos-b \(exit code 0\), node-1/);
    expect(cluster.output()).toMatch(/node-5 \(exit code 0\), redis \(exit code 0\)/);
    const stopped = await readState(dir);
    expect(stopped).toMatchObject({ state: 'stopped', exitCode: 0 });
    expect(pidsOf(stopped).filter(isAlive)).toEqual([]);
    expect((await stat(join(stopped.redis.dataDir, 'appendonlydir'))).isDirectory()).toBe(true);

    // One intact, signed audit log per KOS instance and per node.
    const publicKeyOf = async (file: string) => {
      const parsed = JSON.parse(await readFile(file, 'utf8')) as JWK & { keys?: JWK[] };
      return (parsed.keys?.[0] ?? parsed) as JWK;
    };
    const kosKey = await publicKeyOf(stopped.kos.jwks);
    for (const log of [...stopped.instances.map((instance) => instance.auditLog), stopped.kos.adminAuditLog]) {
      const result = await verifyAuditLog(log, { publicKey: kosKey, requireSignatures: true });
      expect(result).toMatchObject({ ok: true });
      expect(result.records).toBeGreaterThan(0);
    }
    for (const node of stopped.nodes) {
      const result = await verifyAuditLog(node.auditLog, {
        publicKey: await publicKeyOf(node.auditPublicKey),
        requireSignatures: true,
      });
      expect(result).toMatchObject({ ok: true });
      expect(result.records).toBeGreaterThan(0);
    }
  }, 120_000);

  it('a child that cannot start: everything else is stopped and the command exits non-zero', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'kos-cluster-fail-'));
    cleanup.push(parent);
    const dir = join(parent, 'cluster');
    // Eight consecutive free ports; the last one (instance B's) stays taken, so B fails to
    // listen after Redis, the five nodes and instance A are up.
    let base = 0;
    let blocker: Server | undefined;
    for (let attempt = 0; attempt < 20 && !blocker; attempt++) {
      // Below Linux's ephemeral range (32768+): ports there come and go with every client
      // socket and port-0 server of the test files running alongside, and one taken between
      // this check and the cluster binding it would make another child fail.
      const candidate = 20_000 + Math.floor(Math.random() * 12_000);
      const servers: Server[] = [];
      try {
        for (let i = 0; i < 8; i++) {
          servers.push(
            await new Promise<Server>((ok, fail) => {
              const server = createServer();
              server.once('error', fail);
              server.listen(candidate + i, '127.0.0.1', () => ok(server));
            }),
          );
        }
        base = candidate;
        blocker = servers.pop();
      } catch {
        // Taken: try another range.
      }
      await Promise.all(servers.map((server) => new Promise((done) => server.close(done))));
    }
    expect(blocker).toBeDefined();
    try {
      const cluster = startCluster(['--dir', dir, '--base-port', String(base), '--no-tls']);
      const exit = await cluster.exited;
      expect(exit.code).toBe(1);
      expect(cluster.output()).toContain('could not start');
      expect(cluster.output()).toContain('kos-b');
      const state = await readState(dir);
      expect(state).toMatchObject({ state: 'failed', exitCode: 1 });
      expect(state.processes.map((p) => p.name)).toContain('kos-a');
      expect(pidsOf(state).filter(isAlive)).toEqual([]);
    } finally {
      await new Promise((done) => blocker?.close(done));
    }
  }, 90_000);
});
