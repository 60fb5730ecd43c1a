/**
 * Medium tier and KMS node benchmarks (issue 3): cold medium-tier reads over HTTP against real
 * `kos-kms` processes, healthy and with one node stalled; grant issuance beside a bare jose
 * signature; share store get/put for the Redis, file and memory stores.
 *
 *   npm run bench:medium              # tables on stdout (progress on stderr), ~55–70 s
 *   npm run bench:medium -- --json    # machine-readable JSON on stdout instead
 *   npm run bench:medium -- --quick   # short smoke run (fewer reads, 1/5 sampling time; noisier)
 *
 * Reads: each read is timed end to end and on its own (it takes milliseconds): a fresh grant
 * (`createMediumReference`, which reuses the client's share set and signs one grant), a fresh
 * opener (no key cache), k share fetches over HTTP on loopback, verify, combine, key check and
 * decrypt. The cases are interleaved: every round takes one read of every case, in a rotated
 * order. Micro-benchmarks (grant, stores) use the same sampler as core.bench.ts.
 *
 * It is a report: it exits 0 whether or not a target is met.
 */
import { randomFillSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { loadavg, cpus as osCpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createMediumReference,
  createTokenIssuer,
  encodeEnvelope,
  equalBytes,
  GRANT_TYP,
  type ShareStore,
  type StoredShare,
  toBase64url,
} from '@kos/core';
import { createOpener, type MediumKeyReference } from '@kos/core/client';
import { createFileShareStore, createMemoryShareStore, createRedisShareStore } from '@kos/kms-adapters';
import { Redis } from 'ioredis';
import { generateKeyPair, SignJWT } from 'jose';
import { getGlobalDispatcher } from 'undici';
import { type KmsCluster, startKmsCluster } from '../test-support/kms-cluster.js';
import { type RedisServer, startRedisServer } from '../test-support/redis-server.js';
import { check, fixed, log, table } from './support/output.js';
import {
  type Case,
  type Group,
  quantile,
  type Result,
  runGroup,
  type SamplerOptions,
  sink,
} from './support/sampler.js';

// ------------------------------------------------------------------ options

const args = new Set(process.argv.slice(2));
const JSON_OUTPUT = args.has('--json');
const QUICK = args.has('--quick');
const SCALE = QUICK ? 0.2 : 1;
const SAMPLER: SamplerOptions = {
  perCaseMs: 1000 * SCALE,
  warmupMs: 150 * SCALE,
  sampleTargetMs: 1,
  minRounds: 15,
  maxRounds: 20_000,
};
/** Timed reads per read case (the p99 of 200 reads is the mean of the 2nd and 3rd slowest). */
const READS = QUICK ? 40 : 200;
/** Untimed reads per case first (JIT, connection pool, node-side caches). */
const WARM_READS = QUICK ? 3 : 10;
const TIMEOUT_MS = 2000;
const N = 5;
const K = 3;
const KID = 'bench-medium';
const CLIENT_ID = 'client-bench';
const PLAINTEXT_BYTES = 1024;
/** The issue-3 target: p99 of a read with one stalled node <= this x the healthy p99. */
const STALL_P99_LIMIT = 1.2;
const REDIS_MISSING = 'REDIS PARTS SKIPPED: redis-server not installed (set REDIS_SERVER_BIN or install redis-server)';

function random(length: number): Uint8Array {
  return randomFillSync(new Uint8Array(length));
}

// ------------------------------------------------------------------ stalled node

/** A TCP server on loopback that accepts connections and never answers (a hung node). */
interface StalledNode {
  readonly origin: string;
  readonly accepted: () => number;
  stop(): Promise<void>;
}

async function startStalledNode(): Promise<StalledNode> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    origin: `http://127.0.0.1:${port}`,
    accepted: () => accepted,
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The reference with its first placement (always among the first k asked) pointed at the stalled node. */
function withStalledFirst(reference: MediumKeyReference, stalledOrigin: string): MediumKeyReference {
  return {
    ...reference,
    shares: reference.shares.map((share, i) => {
      if (i !== 0) return share;
      const url = new URL(share.url);
      return { ...share, url: `${stalledOrigin}${url.pathname}` };
    }),
  };
}

// ------------------------------------------------------------------ reads

interface ReadConfig {
  readonly id: string;
  readonly label: string;
  readonly hedgeAfterMs: number;
  /** Share requests started beyond k (createOpener's `extraFetches`). */
  readonly extraFetches: number;
  /** The issue-3 target is checked on this one; the others are reported for information. */
  readonly primary: boolean;
}

const READ_CONFIGS: readonly ReadConfig[] = [
  // The library defaults: one spare request from the start, hedge after 300 ms.
  {
    id: 'default',
    label: 'createOpener defaults (k+1 first, hedge 300 ms)',
    hedgeAfterMs: 300,
    extraFetches: 1,
    primary: true,
  },
  { id: 'k-h75', label: 'k first (extraFetches 0), hedge 75 ms', hedgeAfterMs: 75, extraFetches: 0, primary: false },
  { id: 'k-h10', label: 'k first (extraFetches 0), hedge 10 ms', hedgeAfterMs: 10, extraFetches: 0, primary: false },
];

interface ReadCase {
  readonly id: string;
  readonly config: ReadConfig;
  readonly stalled: boolean;
  readonly totalMs: number[];
  readonly referenceMs: number[];
  fetches: number;
  stalledFetches: number;
}

interface ReadResult {
  readonly id: string;
  readonly config: string;
  readonly label: string;
  readonly extraFetches: number;
  readonly hedgeAfterMs: number;
  readonly timeoutMs: number;
  readonly stalled: boolean;
  readonly reads: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Median time of `createMediumReference` (set lookup + grant signature) within a read. */
  readonly referenceP50Ms: number;
  /** Mean HTTP fetches started per read (k when no hedge fired). */
  readonly fetchesPerRead: number;
}

interface ReadTarget {
  readonly config: string;
  readonly label: string;
  readonly kind: 'target' | 'info';
  readonly healthyP99Ms: number;
  readonly stalledP99Ms: number;
  readonly ratio: number;
  readonly p50Ratio: number;
  /** Stalled p99 of this config over the healthy p99 of the primary config (today's default-style read). */
  readonly vsPrimaryHealthy: number;
  readonly threshold: number;
  readonly pass: boolean;
}

async function runReads(cluster: KmsCluster): Promise<{ reads: ReadResult[]; targets: ReadTarget[] }> {
  const { keys, identity, directory } = cluster;
  await keys.createKey(KID);
  const plaintext = random(PLAINTEXT_BYTES);
  const sealed = await keys.seal(KID, plaintext, { dataId: 'record-1' });
  // The client receives the JSON form, as a route sends it.
  const envelope = encodeEnvelope(sealed, 'json');
  const version = sealed.header.ver;
  const stalledNode = await startStalledNode();
  let current: ReadCase | undefined;
  const countingFetch = ((url: string, init?: RequestInit) => {
    if (current) {
      current.fetches++;
      if (url.startsWith(stalledNode.origin)) current.stalledFetches++;
    }
    return cluster.clientFetch(url, init);
  }) as typeof fetch;

  const reference = () =>
    createMediumReference({
      keys,
      tokens: identity.tokens,
      nodes: directory,
      clientId: CLIENT_ID,
      kid: KID,
      version,
      n: N,
      k: K,
    });
  // Provision the client's set once (n=5 share puts over HTTP); later calls reuse it.
  const first = await reference();
  check(first.shares.length === N && first.k === K, 'the reference has n=5 placements, k=3');

  async function read(c: ReadCase): Promise<{ ms: number; refMs: number; out: Uint8Array }> {
    const start = performance.now();
    const plain = await reference();
    const refMs = performance.now() - start;
    const ref = c.stalled ? withStalledFirst(plain, stalledNode.origin) : plain;
    const opener = createOpener({
      fetch: countingFetch,
      timeoutMs: TIMEOUT_MS,
      hedgeAfterMs: c.config.hedgeAfterMs,
      extraFetches: c.config.extraFetches,
    });
    const out = await opener.open({ envelope, key: ref });
    opener.dispose();
    return { ms: performance.now() - start, refMs, out };
  }

  const cases: ReadCase[] = READ_CONFIGS.flatMap((config) =>
    [false, true].map((stalled) => ({
      id: `${config.id}.${stalled ? 'stalled' : 'healthy'}`,
      config,
      stalled,
      totalMs: [],
      referenceMs: [],
      fetches: 0,
      stalledFetches: 0,
    })),
  );
  try {
    for (let round = 0; round < WARM_READS; round++) {
      for (const c of cases) {
        const { out } = await read(c);
        check(equalBytes(out, plaintext), `${c.id}: the read returns the plaintext`);
      }
    }
    for (const c of cases) {
      c.fetches = 0;
      c.stalledFetches = 0;
    }
    log(`bench: ${READS} timed reads x ${cases.length} cases, interleaved…`);
    for (let round = 0; round < READS; round++) {
      for (let j = 0; j < cases.length; j++) {
        const c = cases[(round + j) % cases.length] as ReadCase;
        current = c;
        const { ms, refMs, out } = await read(c);
        current = undefined;
        if (!equalBytes(out, plaintext)) throw new Error(`bench sanity check failed: ${c.id} read a wrong plaintext`);
        c.totalMs.push(ms);
        c.referenceMs.push(refMs);
      }
      if ((round + 1) % 50 === 0) log(`bench:   ${round + 1}/${READS} rounds`);
    }
    for (const c of cases) {
      if (c.stalled) check(c.stalledFetches === READS, `${c.id}: every read asked the stalled node`);
      else check(c.stalledFetches === 0, `${c.id}: healthy reads never ask the stalled node`);
    }
  } finally {
    await stalledNode.stop();
  }

  const reads: ReadResult[] = cases.map((c) => {
    const sorted = [...c.totalMs].sort((a, b) => a - b);
    const refSorted = [...c.referenceMs].sort((a, b) => a - b);
    return {
      id: c.id,
      config: c.config.id,
      label: c.config.label,
      extraFetches: c.config.extraFetches,
      hedgeAfterMs: c.config.hedgeAfterMs,
      timeoutMs: TIMEOUT_MS,
      stalled: c.stalled,
      reads: sorted.length,
      p50Ms: quantile(sorted, 0.5),
      p90Ms: quantile(sorted, 0.9),
      p99Ms: quantile(sorted, 0.99),
      maxMs: sorted[sorted.length - 1] as number,
      referenceP50Ms: quantile(refSorted, 0.5),
      fetchesPerRead: c.fetches / sorted.length,
    };
  });
  const byId = new Map(reads.map((r) => [r.id, r]));
  const primary = READ_CONFIGS.find((config) => config.primary) as ReadConfig;
  const primaryHealthy = byId.get(`${primary.id}.healthy`) as ReadResult;
  const targets: ReadTarget[] = READ_CONFIGS.map((config) => {
    const healthy = byId.get(`${config.id}.healthy`) as ReadResult;
    const stalled = byId.get(`${config.id}.stalled`) as ReadResult;
    const ratio = stalled.p99Ms / healthy.p99Ms;
    return {
      config: config.id,
      label: config.label,
      kind: config.primary ? 'target' : 'info',
      healthyP99Ms: healthy.p99Ms,
      stalledP99Ms: stalled.p99Ms,
      ratio,
      p50Ratio: stalled.p50Ms / healthy.p50Ms,
      vsPrimaryHealthy: stalled.p99Ms / primaryHealthy.p99Ms,
      threshold: STALL_P99_LIMIT,
      pass: ratio <= STALL_P99_LIMIT,
    };
  });
  return { reads, targets };
}

// ------------------------------------------------------------------ grant issuance

async function grantGroup(): Promise<Group> {
  const { privateKey } = await generateKeyPair('EdDSA');
  const issuer = 'https://kos.bench';
  const keyId = 'kos-bench-1';
  const tokens = createTokenIssuer({ issuer, privateKey, keyId });
  const setId = `s${toBase64url(random(16))}`;
  const shares = Object.fromEntries(Array.from({ length: N }, (_, i) => [`node-${i + 1}`, `${setId}.${i + 1}`]));
  const audience = Object.keys(shares);
  const request = { clientId: CLIENT_ID, kid: KID, version: 1, setId, shares };
  // The same claims and header KOS signs, with a fixed jti of the same length.
  const jti = toBase64url(random(16));
  const bare = () => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ key: KID, ver: 1, set: setId, shr: shares })
      .setProtectedHeader({ alg: 'EdDSA', typ: GRANT_TYP, kid: keyId })
      .setIssuer(issuer)
      .setAudience(audience)
      .setSubject(CLIENT_ID)
      .setIssuedAt(now)
      .setExpirationTime(now + 30)
      .setJti(jti)
      .sign(privateKey);
  };
  const issued = await tokens.issueGrant(request);
  const bareToken = await bare();
  check(issued.token.split('.').length === 3 && bareToken.split('.').length === 3, 'both sign a compact JWS');
  check(
    Math.abs(issued.token.length - bareToken.length) < 8,
    `the bare payload is as large as a KOS grant (${bareToken.length} vs ${issued.token.length} characters)`,
  );
  return {
    name: 'grant, 5 placements (EdDSA)',
    cases: [
      { id: 'grant.jose', label: 'bare jose SignJWT().sign()', fn: bare },
      {
        id: 'grant.kos',
        label: 'KOS tokens.issueGrant',
        baseline: 'grant.jose',
        fn: () => tokens.issueGrant(request),
      },
    ],
  };
}

// ------------------------------------------------------------------ share stores

function shareFor(shareId: string, x: number): StoredShare {
  const value = random(33);
  value[32] = x;
  return { shareId, kid: KID, version: 1, setId: 'sBenchSet', owner: CLIENT_ID, x, value };
}

interface StoreUnderTest {
  readonly id: 'memory' | 'file' | 'redis';
  readonly label: string;
  readonly store: ShareStore;
}

function storeGroups(stores: readonly StoreUnderTest[]): Group[] {
  const getCases: Case[] = [];
  const putCases: Case[] = [];
  let counter = 0;
  for (const { id, label, store } of stores) {
    const stored = shareFor('sBenchSet.7', 7);
    getCases.push({
      id: `store.get.${id}`,
      label: `${label} get`,
      ...(id === 'redis' ? { baseline: 'store.get.file' } : {}),
      fn: () => store.get(stored.shareId),
    });
    // Every put writes a new share (shares are written once), as KOS does when it provisions a set.
    putCases.push({
      id: `store.put.${id}`,
      label: `${label} put (new share)`,
      ...(id === 'redis' ? { baseline: 'store.put.file' } : {}),
      fn: () => {
        counter++;
        return store.put(shareFor(`sBenchPut${counter}.${(counter % 255) + 1}`, (counter % 255) + 1));
      },
    });
  }
  return [
    { name: 'share store get (33 B share)', cases: getCases },
    { name: 'share store put (33 B share)', cases: putCases },
  ];
}

async function prepareStores(stores: readonly StoreUnderTest[]): Promise<void> {
  for (const { id, store } of stores) {
    const share = shareFor('sBenchSet.7', 7);
    await store.put(share);
    const back = await store.get(share.shareId);
    check(back !== undefined && equalBytes(back.value, share.value), `${id} store round-trips a share`);
  }
}

// ------------------------------------------------------------------ output

function printReport(
  reads: readonly ReadResult[] | undefined,
  readTargets: readonly ReadTarget[] | undefined,
  micro: readonly Result[],
  meta: Record<string, unknown>,
): void {
  const lines: string[] = [];
  lines.push(
    `medium tier / KMS benchmark — ${meta.node} on ${meta.cpuModel} (${meta.cpus} logical CPUs), ${meta.date}`,
  );
  lines.push('');
  if (reads && readTargets) {
    lines.push(
      `1. Cold medium-tier read, n=${N} k=${K}, ${PLAINTEXT_BYTES} B record, 5 kos-kms processes (3 file, 2 redis) over HTTP on loopback`,
    );
    lines.push(
      `   per read: createMediumReference (grant) + fresh opener + k share fetches + verify + combine + kcv + decrypt; timeout ${TIMEOUT_MS} ms; ${READS} reads per case, interleaved`,
    );
    lines.push('   stalled = the first placement points at a TCP server that accepts and never answers');
    lines.push('');
    const rows: string[][] = [
      ['opener', 'nodes', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'grant p50 ms', 'fetches/read', 'reads'],
    ];
    let previous = '';
    for (const r of reads) {
      rows.push([
        r.label === previous ? '' : r.label,
        r.stalled ? '1 stalled' : 'healthy',
        fixed(r.p50Ms, 2),
        fixed(r.p90Ms, 2),
        fixed(r.p99Ms, 2),
        fixed(r.maxMs, 1),
        fixed(r.referenceP50Ms, 2),
        fixed(r.fetchesPerRead, 2),
        String(r.reads),
      ]);
      previous = r.label;
    }
    lines.push(table(rows, new Set([2, 3, 4, 5, 6, 7, 8])));
    lines.push('');
    const primary = readTargets.find((t) => t.kind === 'target')?.config ?? '';
    lines.push(
      `Target: p99 with one node stalled <= ${STALL_P99_LIMIT}x healthy p99 of the same opener settings (kind "info" = not the target):`,
    );
    lines.push(
      table(
        readTargets.map((t) => [
          t.pass ? 'PASS' : 'FAIL',
          t.kind,
          t.label,
          `p99 ${fixed(t.stalledP99Ms, 2)} / ${fixed(t.healthyP99Ms, 2)} ms = ${fixed(t.ratio, 2)}x`,
          `(p50 ratio ${fixed(t.p50Ratio, 2)}x; stalled p99 / ${primary} healthy p99 = ${fixed(t.vsPrimaryHealthy, 2)}x)`,
        ]),
        new Set(),
      ),
    );
  } else {
    lines.push(`1. Cold medium-tier read: SKIPPED (${REDIS_MISSING})`);
  }
  lines.push('');
  lines.push(
    `2./3. Grant issuance and share stores: medians of ${SAMPLER.sampleTargetMs} ms batches; spread = (p75-p25)/median; ratio = median of per-round paired ratios`,
  );
  lines.push('');
  const rows: string[][] = [['group', 'case', 'µs/op', 'spread', 'ratio', 'vs', 'samples x batch']];
  let previous = '';
  for (const r of micro) {
    rows.push([
      r.group === previous ? '' : r.group,
      r.label,
      fixed(r.usPerOp, r.usPerOp < 100 ? 2 : 1),
      `±${fixed(((r.p75Ns - r.p25Ns) / r.medianNs) * 50, 0)}%`,
      r.ratio === null ? '' : `${fixed(r.ratio, 2)}x`,
      r.baseline === null ? '' : (micro.find((b) => b.id === r.baseline)?.label ?? r.baseline),
      `${r.samples} x ${r.batch}`,
    ]);
    previous = r.group;
  }
  lines.push(table(rows, new Set([2, 3, 4, 6])));
  if (!reads) lines.push(`\n${REDIS_MISSING}: no Redis store row, no medium-tier reads`);
  if (readTargets) {
    const target = readTargets.find((t) => t.kind === 'target') as ReadTarget;
    lines.push('');
    lines.push(
      `RESULT: stalled-node target ${target.pass ? 'PASS' : 'FAIL'} (${fixed(target.ratio, 2)}x, limit ${STALL_P99_LIMIT}x, ${target.label})`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const started = performance.now();
  const redisServer: RedisServer | undefined = await startRedisServer({ persistence: 'aof' });
  if (!redisServer) log(`\n*** ${REDIS_MISSING} ***\n`);
  const storeDir = await mkdtemp(join(tmpdir(), 'kos-bench-stores-'));
  const redisClient = redisServer ? new Redis(redisServer.url, { maxRetriesPerRequest: 1 }) : undefined;
  let cluster: KmsCluster | undefined;
  try {
    // 2. and 3. first, while the node processes are not yet running.
    const stores: StoreUnderTest[] = [
      { id: 'memory', label: 'memory', store: createMemoryShareStore({ nodeId: 'node-m' }) },
      { id: 'file', label: 'file', store: createFileShareStore({ nodeId: 'node-f', dir: join(storeDir, 'file') }) },
    ];
    if (redisClient) {
      const store = createRedisShareStore({ nodeId: 'node-r', redis: redisClient, keyPrefix: 'bench:' });
      await store.checkPersistence();
      stores.push({ id: 'redis', label: 'redis (AOF, fsync always)', store });
    }
    await prepareStores(stores);
    const groups = [await grantGroup(), ...storeGroups(stores)];
    const micro: Result[] = [];
    for (const group of groups) {
      log(`bench: ${group.name} (${group.cases.length} cases)…`);
      micro.push(...(await runGroup(group, SAMPLER)));
    }
    for (const { store } of stores) await store.close?.();

    let reads: Awaited<ReturnType<typeof runReads>> | undefined;
    if (redisServer) {
      log('bench: starting 5 kos-kms processes (3 file, 2 redis)…');
      cluster = await startKmsCluster({
        stores: ['file', 'file', 'file', 'redis', 'redis'],
        transport: 'http',
        redis: redisServer,
      });
      reads = await runReads(cluster);
    }

    const cpus = osCpus();
    const meta = {
      node: process.version,
      v8: process.versions.v8,
      platform: `${process.platform}-${process.arch}`,
      cpuModel: cpus[0]?.model.trim() ?? 'unknown',
      cpus: cpus.length,
      loadavg: loadavg().map((v) => Number(v.toFixed(2))),
      date: new Date().toISOString(),
      quick: QUICK,
      redis: redisServer !== undefined,
      n: N,
      k: K,
      plaintextBytes: PLAINTEXT_BYTES,
      readsPerCase: READS,
      timeoutMs: TIMEOUT_MS,
      sampleTargetMs: SAMPLER.sampleTargetMs,
      perCaseMs: SAMPLER.perCaseMs,
      opsRun: sink.ops,
      durationS: Number(((performance.now() - started) / 1e3).toFixed(1)),
    };
    if (JSON_OUTPUT) {
      const out = { meta, reads: reads?.reads ?? null, readTargets: reads?.targets ?? null, micro };
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    } else {
      printReport(reads?.reads, reads?.targets, micro, meta);
      log(`bench: done in ${meta.durationS} s`);
    }
  } finally {
    await cluster?.stop();
    await getGlobalDispatcher().close();
    redisClient?.disconnect();
    await redisServer?.stop();
    await rm(storeDir, { recursive: true, force: true });
  }
}

await main();
