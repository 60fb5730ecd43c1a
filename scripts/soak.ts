// `npm run soak -- --seconds 120`: a bounded soak of a real KOS deployment on loopback.
//
// Starts five real `kos-kms` processes (file-backed), the Express example app (`createApp`) on
// a configured production-mode runtime whose nodes are those processes (kind 'http'), then
// drives mixed-tier traffic (low / medium / high, with and without client keys, plus writes)
// with a fixed number of concurrent workers for a set time, while a chaos loop SIGKILLs and
// restarts node processes (never more than --max-down at once). Every read is checked against
// the record written; medium reads are opened by `createOpener`, so their share fetches hit the
// nodes. Reports requests, errors by code (expected vs unexpected), wrong plaintexts, p50/p99
// latency per tier and memory after warm-up and at the end (after forced GC with --expose-gc).
//
// Exit code: 0 clean; 1 unexpected errors, wrong plaintexts, a node process that died on its
// own, or memory growth above --max-growth-pct; 2 set-up failure; 130 interrupted (SIGINT /
// SIGTERM). Every process it starts is stopped on every path.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';
import { createAccessControl } from '@kos/core';
import { type ClientKeyPair, createOpener, generateClientKeyPair, isKosError } from '@kos/core/client';
import { createApp } from '@kos/example-express';
import { createFileMetadataStore, type KosRuntimeConfig } from '@kos/kms-adapters';
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const KMS_CLI = join(root, 'packages/kms-adapters/src/kms-node/cli.ts');
const NODES = 5;
const SYSTEM_K = 3;
const KID = 'records';
const ISSUER = 'https://kos.soak.test';
const IDP = 'https://idp.soak.test';
const AUDIENCE = 'records-api';

// ------------------------------------------------------------------------------ options

function usage(): string {
  return `Usage: npm run soak -- [options]

  --seconds <s>           soak time with chaos, after warm-up (default 20)
  --warmup <s>            warm-up (same traffic and chaos) before the start memory sample;
                          not part of the figures (default: a quarter of --seconds, 2–10 s)
  --concurrency <n>       concurrent request workers (default 8)
  --chaos-interval <s>    mean seconds between node kills (default 3)
  --max-down <n>          node processes down at once, at most n-k = ${NODES - SYSTEM_K} (default ${NODES - SYSTEM_K})
  --no-chaos              no node kills (baseline)
  --records <n>           records written before the run (default 40)
  --write-ratio <r>       share of operations that are writes, 0–1 (default 0.02; every record
                          written stays in the example app's in-memory Map, so writes grow the
                          heap by design)
  --clear-cache-ms <ms>   drop KOS's DEK cache this often so KOS rebuilds from its system
                          share set under chaos too; 0 = never (default 2000)
  --max-growth-pct <p>    fail if the heap's objects (heapUsed without compiled code; RSS too
                          with --check-rss) at the end exceed the start by more than p %
                          (default 10; short runs are noisy)
  --memory-every <s>      memory sample (after forced GC) every s seconds of the soak, for the
                          timeline in the report; 0 = only start and end (default 10)
  --check-rss             apply --max-growth-pct to RSS as well as the heap objects
  --clear-stale-locks     before restarting a killed node, remove the replay-cache file lock
                          the dead process left (works around kos-kms waiting 10 s for it)
  --share-timeout-ms <ms> per-node timeout of the client opener's share fetches (default
                          3000, the opener's default)
  --heap-snapshots <dir>  also write V8 heap snapshots at the start and end samples (diagnosis)
  --seed <n>              random seed for traffic mix and chaos (default: random)
  --json                  print the report as one JSON object on stdout (progress on stderr)
  --help`;
}

function numberOption(value: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < min || parsed > max) {
    throw new Error(`--${name} must be a number from ${min} to ${max} (got ${value})`);
  }
  return parsed;
}

function readOptions() {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      'memory-every': { type: 'string' },
      concurrency: { type: 'string' },
      'chaos-interval': { type: 'string' },
      'max-down': { type: 'string' },
      'no-chaos': { type: 'boolean', default: false },
      records: { type: 'string' },
      'write-ratio': { type: 'string' },
      'clear-cache-ms': { type: 'string' },
      'max-growth-pct': { type: 'string' },
      'check-rss': { type: 'boolean', default: false },
      'clear-stale-locks': { type: 'boolean', default: false },
      'share-timeout-ms': { type: 'string' },
      'heap-snapshots': { type: 'string' },
      seed: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  return {
    help: values.help,
    seconds: numberOption(values.seconds, 'seconds', 20, 1, 86_400),
    warmup: numberOption(
      values.warmup,
      'warmup',
      Math.min(10, Math.max(2, numberOption(values.seconds, 'seconds', 20, 1, 86_400) / 4)),
      0,
      3600,
    ),
    memoryEveryMs: numberOption(values['memory-every'], 'memory-every', 10, 0, 3600) * 1000,
    concurrency: Math.floor(numberOption(values.concurrency, 'concurrency', 8, 1, 256)),
    chaosIntervalMs: numberOption(values['chaos-interval'], 'chaos-interval', 3, 0.2, 3600) * 1000,
    maxDown: Math.floor(numberOption(values['max-down'], 'max-down', NODES - SYSTEM_K, 0, NODES - SYSTEM_K)),
    chaos: !values['no-chaos'],
    records: Math.floor(numberOption(values.records, 'records', 40, 1, 100_000)),
    writeRatio: numberOption(values['write-ratio'], 'write-ratio', 0.02, 0, 1),
    clearCacheMs: numberOption(values['clear-cache-ms'], 'clear-cache-ms', 2000, 0, 3_600_000),
    maxGrowthPct: numberOption(values['max-growth-pct'], 'max-growth-pct', 10, 0, 100_000),
    checkRss: values['check-rss'],
    clearStaleLocks: values['clear-stale-locks'],
    heapSnapshots: values['heap-snapshots'],
    shareTimeoutMs: numberOption(values['share-timeout-ms'], 'share-timeout-ms', 3000, 100, 60_000),
    seed: Math.floor(numberOption(values.seed, 'seed', Math.floor(Math.random() * 2 ** 31), 0, 2 ** 31)),
    json: values.json,
  };
}

type Options = ReturnType<typeof readOptions>;

// ------------------------------------------------------------------------------ small tools

/** mulberry32: a seeded PRNG, so a run's traffic mix and chaos schedule can be replayed. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolveSleep) => {
    if (signal?.aborted) return resolveSleep();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolveSleep();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Latency histogram with fixed log buckets (2 % wide): constant memory however long the run. */
class Histogram {
  static readonly #MIN_MS = 0.01;
  static readonly #LOG_RATIO = Math.log(1.02);
  static readonly #BUCKETS = 900; // up to ~0.01 ms × 1.02^900 ≈ 550 s
  readonly #counts = new Float64Array(Histogram.#BUCKETS);
  count = 0;
  #max = 0;
  #sum = 0;

  add(ms: number): void {
    const index =
      ms <= Histogram.#MIN_MS
        ? 0
        : Math.min(Histogram.#BUCKETS - 1, Math.ceil(Math.log(ms / Histogram.#MIN_MS) / Histogram.#LOG_RATIO));
    this.#counts[index] = (this.#counts[index] ?? 0) + 1;
    this.count++;
    this.#sum += ms;
    if (ms > this.#max) this.#max = ms;
  }

  /** Upper edge of the bucket holding the q-quantile (≤ 2 % above the true value), capped at the max. */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const target = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < Histogram.#BUCKETS; i++) {
      seen += this.#counts[i] ?? 0;
      if (seen >= target) return Math.min(this.#max, Histogram.#MIN_MS * Math.exp(i * Histogram.#LOG_RATIO));
    }
    return this.#max;
  }

  summary() {
    const round = (ms: number) => Math.round(ms * 100) / 100;
    return {
      count: this.count,
      p50Ms: round(this.quantile(0.5)),
      p99Ms: round(this.quantile(0.99)),
      maxMs: round(this.#max),
      meanMs: round(this.count ? this.#sum / this.count : 0),
    };
  }
}

// ------------------------------------------------------------------------------ processes

/** Every child process this script ever started, so every exit path can stop them. */
const children = new Set<ChildProcess>();
const spawnedPids: number[] = [];

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function killAllNow(): void {
  for (const child of children) if (alive(child)) child.kill('SIGKILL');
}

interface NodeSlot {
  readonly index: number;
  readonly nodeId: string;
  readonly dir: string;
  port: number;
  child: ChildProcess | undefined;
  state: 'up' | 'down';
  /** Set while the chaos loop (or shutdown) means this process to die. */
  killing: boolean;
  stderr: string[];
}

/** Starts `kos-kms` for a slot (same port and data folder on restart); resolves once it listens. */
function startNode(slot: NodeSlot, jwksPath: string, onExit: (slot: NodeSlot, child: ChildProcess) => void) {
  const args = [
    '--conditions=kos-source',
    '--import',
    'tsx',
    KMS_CLI,
    '--node-id',
    slot.nodeId,
    '--issuer',
    ISSUER,
    '--trusted-keys',
    jwksPath,
    '--store',
    'file',
    '--dir',
    slot.dir,
    '--port',
    String(slot.port),
  ];
  const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  if (child.pid !== undefined) spawnedPids.push(child.pid);
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    if (stderr.length < 50) stderr.push(line);
  });
  return new Promise<void>((resolveStart, rejectStart) => {
    let listening = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rejectStart(new Error(`kos-kms ${slot.nodeId} did not start within 30 s: ${stderr.join(' | ')}`));
    }, 30_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      if (!listening)
        rejectStart(new Error(`kos-kms ${slot.nodeId} exited (${code ?? signal}): ${stderr.join(' | ')}`));
      else onExit(slot, child);
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let event: { event?: string; url?: string };
      try {
        event = JSON.parse(line);
      } catch {
        return;
      }
      if (event.event === 'listening' && event.url && !listening) {
        listening = true;
        clearTimeout(timer);
        slot.port = Number(new URL(event.url).port);
        slot.child = child;
        slot.stderr = stderr;
        resolveStart();
      }
    });
  });
}

function waitExit(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!alive(child)) return Promise.resolve();
  return new Promise((resolveExit) => {
    const force = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(force);
      resolveExit();
    });
    child.kill(signal);
  });
}

// ------------------------------------------------------------------------------ traffic model

type Tier = 'low' | 'medium' | 'high';

interface Profile {
  readonly name: string;
  readonly tier: Tier;
  readonly score: number;
  readonly withKey: boolean;
  /** Shares needed to rebuild on this path (the client's k for medium, KOS's system k otherwise). */
  readonly k: number;
  readonly weight: number;
}

/** Scores by the default tier policy: < 50 low; 50–64 medium n5 k4; 65–80 medium n5 k3; > 80 high. */
const PROFILES: readonly Profile[] = [
  { name: 'low', tier: 'low', score: 30, withKey: false, k: SYSTEM_K, weight: 0.18 },
  { name: 'low+key', tier: 'low', score: 45, withKey: true, k: SYSTEM_K, weight: 0.06 },
  { name: 'medium-k4', tier: 'medium', score: 55, withKey: false, k: 4, weight: 0.1 },
  { name: 'medium-k4+key', tier: 'medium', score: 60, withKey: true, k: 4, weight: 0.06 },
  { name: 'medium-k3', tier: 'medium', score: 70, withKey: false, k: 3, weight: 0.15 },
  { name: 'medium-k3+key', tier: 'medium', score: 75, withKey: true, k: 3, weight: 0.15 },
  { name: 'high', tier: 'high', score: 90, withKey: false, k: SYSTEM_K, weight: 0.15 },
  { name: 'high+key', tier: 'high', score: 95, withKey: true, k: SYSTEM_K, weight: 0.15 },
];
const CLIENTS_PER_PROFILE = 3;

interface Client {
  readonly id: string;
  readonly profile: Profile;
  readonly token: string;
  readonly key: ClientKeyPair | undefined;
}

async function identityToken(
  idpKey: CryptoKey,
  clientId: string,
  score: number,
  ttlSeconds: number,
  publicJwk?: JsonWebKey,
) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ trust_score: score, ...(publicJwk ? { cnf: { jwk: publicJwk } } : {}) })
    .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT' })
    .setIssuer(IDP)
    .setAudience(AUDIENCE)
    .setSubject(clientId)
    .setIssuedAt(now)
    .setExpirationTime(now + ttlSeconds)
    .sign(idpKey);
}

// ------------------------------------------------------------------------------ statistics

interface ErrorCount {
  total: number;
  expected: number;
  unexpected: number;
}

/** Which nodes failed a share fetch and why (ids and codes only: nothing secret). */
function failuresOf(error: unknown): string | undefined {
  const failures = isKosError(error) ? error.details?.failures : undefined;
  if (!Array.isArray(failures) || failures.length === 0) return undefined;
  return failures
    .map((f: { nodeId?: unknown; reason?: unknown; code?: unknown }) =>
      [f.nodeId, f.reason, f.code].filter((part) => part !== undefined).join(':'),
    )
    .join(', ');
}

interface Sample {
  readonly phase: string;
  readonly op: string;
  readonly code: string;
  readonly status?: number;
  readonly message: string;
  readonly failures?: string;
  /** Nodes that were down at some moment while the operation ran. */
  readonly downDuring: string;
  readonly atSeconds: number;
}

class Stats {
  requests = 0;
  ok = 0;
  wrongPlaintexts = 0;
  readonly errors = new Map<string, ErrorCount>();
  readonly byOp = new Map<string, { requests: number; ok: number; errors: number }>();
  readonly latency = new Map<string, Histogram>();
  readonly unexpectedSamples: Sample[] = [];

  hist(name: string): Histogram {
    let h = this.latency.get(name);
    if (!h) {
      h = new Histogram();
      this.latency.set(name, h);
    }
    return h;
  }

  op(name: string) {
    let entry = this.byOp.get(name);
    if (!entry) {
      entry = { requests: 0, ok: 0, errors: 0 };
      this.byOp.set(name, entry);
    }
    return entry;
  }

  error(code: string, expected: boolean, sample: Sample): void {
    let entry = this.errors.get(code);
    if (!entry) {
      entry = { total: 0, expected: 0, unexpected: 0 };
      this.errors.set(code, entry);
    }
    entry.total++;
    if (expected) entry.expected++;
    else {
      entry.unexpected++;
      if (this.unexpectedSamples.length < 20) this.unexpectedSamples.push(sample);
    }
  }

  get unexpected(): number {
    let n = 0;
    for (const entry of this.errors.values()) n += entry.unexpected;
    return n;
  }

  get expected(): number {
    let n = 0;
    for (const entry of this.errors.values()) n += entry.expected;
    return n;
  }
}

interface MemorySample {
  readonly rssMiB: number;
  readonly heapUsedMiB: number;
  /** Compiled code in the heap (code spaces): grows as V8 optimises more functions, bounded by the program. */
  readonly codeMiB: number;
  /** heapUsed without compiled code: the objects the program holds. The growth check uses this. */
  readonly objectsMiB: number;
  readonly heapTotalMiB: number;
  readonly externalMiB: number;
  readonly arrayBuffersMiB: number;
}

async function sampleMemory(): Promise<MemorySample> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    for (let i = 0; i < 3; i++) {
      gc();
      await sleep(50);
    }
  }
  const m = process.memoryUsage();
  const code = getHeapSpaceStatistics()
    .filter((space) => space.space_name.startsWith('code_'))
    .reduce((sum, space) => sum + space.space_used_size, 0);
  const mib = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;
  return {
    rssMiB: mib(m.rss),
    heapUsedMiB: mib(m.heapUsed),
    codeMiB: mib(code),
    objectsMiB: mib(m.heapUsed - code),
    heapTotalMiB: mib(m.heapTotal),
    externalMiB: mib(m.external),
    arrayBuffersMiB: mib(m.arrayBuffers),
  };
}

// ------------------------------------------------------------------------------ the soak

function log(options: Options, message: string): void {
  (options.json ? process.stderr : process.stdout).write(`[soak] ${message}\n`);
}

async function main(): Promise<number> {
  let options: Options;
  try {
    options = readOptions();
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${usage()}`);
    return 2;
  }
  if (options.help) {
    console.log(usage());
    return 0;
  }
  const opts = options;
  const random = seededRandom(opts.seed);
  const startedAt = Date.now();
  const interrupt = new AbortController();
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted = true;
    log(opts, `${signal}: stopping (again to force)`);
    interrupt.abort();
    process.once(signal, () => {
      killAllNow();
      process.exit(130);
    });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.on('exit', killAllNow);
  // The whole run is bounded: if shutdown itself hangs, this kills everything.
  const watchdog = setTimeout(
    () => {
      console.error('[soak] watchdog: the run overran its bound; killing every process');
      killAllNow();
      process.exit(2);
    },
    (opts.warmup + opts.seconds + 180) * 1000,
  );

  const dir = await mkdtemp(join(tmpdir(), 'kos-soak-'));
  const slots: NodeSlot[] = Array.from({ length: NODES }, (_, i) => ({
    index: i,
    nodeId: `node-${i + 1}`,
    dir: join(dir, `node-${i + 1}`),
    port: 0,
    child: undefined,
    state: 'down',
    killing: false,
    stderr: [],
  }));
  let stats = new Stats();
  let warmup: Stats | undefined;
  const memoryTimeline: { atSeconds: number; rssMiB: number; heapUsedMiB: number; objectsMiB: number }[] = [];
  const chaos = {
    kills: 0,
    restarts: 0,
    restartFailures: 0,
    unexpectedExits: 0,
    /** Restarts that found the killed process's replay-cache lock still on disk. */
    staleLocksAtRestart: 0,
    replayEntriesAtRestart: { max: 0, sum: 0, count: 0 },
    maxDownSeen: 0,
    /** Milliseconds spent with 0, 1, 2, … nodes down during the soak phase. */
    downTimeMs: new Array<number>(NODES + 1).fill(0),
    /** The first node state changes of the soak phase, to line up with error samples. */
    events: [] as string[],
  };
  const secondsSinceStart = () => Math.round((Date.now() - startedAt) / 100) / 10;
  let phase: 'setup' | 'warmup' | 'soak' | 'drain' = 'setup';
  let lastChange = performance.now();
  const downCount = () => slots.filter((slot) => slot.state !== 'up').length;
  /**
   * In-flight operations, each with every node that was down at any moment while it ran. Not
   * the most down at once: a read that overlaps node A's outage and then node B's can fail on
   * both although only one was down at a time, so it can lose as many shares as the nodes it saw down.
   */
  const inflight = new Set<{ downNodes: Set<string> }>();
  const setState = (slot: NodeSlot, state: NodeSlot['state']) => {
    const now = performance.now();
    const before = downCount();
    if (phase === 'soak') chaos.downTimeMs[before] = (chaos.downTimeMs[before] ?? 0) + (now - lastChange);
    lastChange = now;
    slot.state = state;
    const down = downCount();
    if (phase === 'soak' && before !== down && chaos.events.length < 400) {
      chaos.events.push(`${secondsSinceStart()}s ${slot.nodeId} ${state} (${down} down)`);
    }
    if (phase === 'soak' && down > chaos.maxDownSeen) chaos.maxDownSeen = down;
    if (state === 'down') for (const op of inflight) op.downNodes.add(slot.nodeId);
  };
  const onNodeExit = (slot: NodeSlot, child: ChildProcess) => {
    if (slot.child !== child) return;
    slot.child = undefined;
    if (slot.state === 'up') setState(slot, 'down');
    if (!slot.killing) {
      chaos.unexpectedExits++;
      log(opts, `${slot.nodeId} exited on its own (${child.exitCode ?? child.signalCode}): ${slot.stderr.join(' | ')}`);
    }
  };
  const bringUp = async (slot: NodeSlot, jwksPath: string) => {
    for (let attempt = 1; ; attempt++) {
      try {
        await startNode(slot, jwksPath, onNodeExit);
        slot.killing = false;
        setState(slot, 'up');
        return;
      } catch (error) {
        chaos.restartFailures++;
        if (attempt >= 5 || interrupt.signal.aborted) throw error;
        await sleep(500 * attempt);
      }
    }
  };
  const stopNode = async (slot: NodeSlot, signal: NodeJS.Signals) => {
    slot.killing = true;
    if (slot.state === 'up') setState(slot, 'down');
    if (slot.child) await waitExit(slot.child, signal, 5000);
  };

  let server: import('node:http').Server | undefined;
  let closeKos: (() => Promise<void>) | undefined;
  const clearCacheTimer: { id?: NodeJS.Timeout } = {};
  let memoryStart: MemorySample | undefined;
  let memoryEnd: MemorySample | undefined;
  let setupError: unknown;
  const records: { id: string; json: string }[] = [];
  let recordsAtStart = 0;
  let soakSeconds = 0;

  try {
    // -- identities: KOS's signing key (nodes trust its public JWKS) and the identity provider's key
    const signing = await generateKeyPair('EdDSA', { extractable: true });
    const jwksPath = join(dir, 'kos-public.jwks.json');
    writeFileSync(
      jwksPath,
      JSON.stringify({
        keys: [{ ...(await exportJWK(signing.publicKey)), kid: 'kos-soak', alg: 'EdDSA', use: 'sig' }],
      }),
    );
    const idp = await generateKeyPair('EdDSA', { extractable: true });

    // -- five real kos-kms processes
    log(opts, `starting ${NODES} kos-kms processes in ${dir}`);
    await Promise.all(slots.map((slot) => bringUp(slot, jwksPath)));
    chaos.restartFailures = 0;
    if (interrupt.signal.aborted) throw new Error('interrupted during start-up');

    // -- the Express example on a configured runtime (production mode, deny by default)
    const metadata = createFileMetadataStore({ dir: join(dir, 'metadata') });
    const access = createAccessControl({ metadata, defaultDeny: true });
    const config: KosRuntimeConfig = {
      issuer: ISSUER,
      signingKey: signing.privateKey,
      identity: { key: idp.publicKey, algorithms: ['EdDSA'], issuer: IDP, audience: AUDIENCE },
      metadata,
      nodes: slots.map((slot) => ({
        nodeId: slot.nodeId,
        kind: 'http' as const,
        url: `http://127.0.0.1:${slot.port}`,
      })),
      access,
      systemShares: { n: NODES, k: SYSTEM_K },
    };
    const created = await createApp({ config, env: { NODE_ENV: 'production' } });
    closeKos = () => created.kos.close();
    const runtime = created.runtime;
    if (runtime.mode !== 'configured') throw new Error(`expected a configured runtime, got ${runtime.mode}`);
    server = created.app.listen(0, '127.0.0.1');
    await new Promise<void>((resolveListen, rejectListen) => {
      server?.once('listening', () => resolveListen());
      server?.once('error', rejectListen);
    });
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    // A rotation that failed before commit leaves nothing behind and may be re-run (DESIGN
    // invariant 6): on a loaded machine a node can miss the store timeout once.
    for (let attempt = 1; ; attempt++) {
      try {
        await runtime.kos.keys.createKey(KID);
        break;
      } catch (error) {
        if (attempt >= 3 || !isKosError(error, 'ERR_ROTATION_FAILED')) throw error;
        const cause = (error as { cause?: { code?: unknown } }).cause;
        log(opts, `creating the key failed (${String(cause?.code ?? error.code)}); retrying`);
      }
    }

    // -- clients: a few per profile, each with its own token (and key pair where the profile has one)
    const ttl = Math.ceil(opts.warmup + opts.seconds) + 3600;
    const clients: Client[] = [];
    for (const profile of PROFILES) {
      for (let i = 0; i < CLIENTS_PER_PROFILE; i++) {
        const id = `soak-${profile.name.replace('+', '-')}-${i + 1}`;
        const key = profile.withKey ? await generateClientKeyPair() : undefined;
        await access.grant(id, KID);
        clients.push({
          id,
          profile,
          key,
          token: await identityToken(idp.privateKey, id, profile.score, ttl, key?.publicJwk),
        });
      }
    }
    const writerId = 'soak-writer';
    await access.grant(writerId, KID);
    const writerToken = await identityToken(idp.privateKey, writerId, 90, ttl);
    const weights = PROFILES.map((profile) => profile.weight);
    const totalWeight = weights.reduce((a, b) => a + b, 0);
    const pickProfile = (): Profile => {
      let r = random() * totalWeight;
      for (const profile of PROFILES) {
        r -= profile.weight;
        if (r <= 0) return profile;
      }
      return PROFILES[PROFILES.length - 1] as Profile;
    };
    const byProfile = new Map(PROFILES.map((p) => [p, clients.filter((c) => c.profile === p)]));

    // -- one operation: a write, or a read checked against the record written
    let writeSeq = 0;
    const newRecordValue = () => {
      writeSeq++;
      return {
        seq: writeSeq,
        note: `soak record ${writeSeq}`,
        nonce: randomUUID(),
        pad: 'x'.repeat(Math.floor(random() * 512)),
      };
    };
    const write = async (signal: AbortSignal): Promise<{ id: string }> => {
      const value = newRecordValue();
      const json = JSON.stringify(value);
      const response = await fetch(`${base}/records`, {
        method: 'POST',
        headers: { authorization: `Bearer ${writerToken}`, 'content-type': 'application/json' },
        body: json,
        signal,
      });
      const body = (await response.json().catch(() => undefined)) as { id?: string; error?: { code?: string } };
      if (response.status !== 201 || typeof body?.id !== 'string') {
        throw Object.assign(new Error(`write answered ${response.status}`), {
          code: body?.error?.code ?? `HTTP_${response.status}`,
          status: response.status,
        });
      }
      records.push({ id: body.id, json });
      return { id: body.id };
    };

    const runOp = async (): Promise<void> => {
      const isWrite = random() < opts.writeRatio;
      const profile = isWrite ? undefined : pickProfile();
      const opName = profile ? profile.name : 'write';
      const tier = profile ? profile.tier : 'write';
      const needK = profile ? profile.k : SYSTEM_K;
      const state = { downNodes: new Set(slots.filter((slot) => slot.state !== 'up').map((slot) => slot.nodeId)) };
      inflight.add(state);
      const started = performance.now();
      stats.requests++;
      const counters = stats.op(opName);
      counters.requests++;
      const signal = AbortSignal.timeout(15_000);
      try {
        if (isWrite) {
          await write(signal);
        } else {
          const list = byProfile.get(profile as Profile) as Client[];
          const client = list[Math.floor(random() * list.length)] as Client;
          const record = records[Math.floor(random() * records.length)] as { id: string; json: string };
          const response = await fetch(`${base}/records/${record.id}`, {
            headers: { authorization: `Bearer ${client.token}` },
            signal,
          });
          const text = await response.text();
          let body: { id?: string; data?: { kosTier?: string }; error?: { code?: string; message?: string } };
          try {
            body = JSON.parse(text);
          } catch {
            throw Object.assign(new Error('non-JSON response'), { code: `HTTP_${response.status}_NON_JSON` });
          }
          if (response.status !== 200) {
            throw Object.assign(new Error(body?.error?.message ?? `status ${response.status}`), {
              code: body?.error?.code ?? `HTTP_${response.status}`,
              status: response.status,
            });
          }
          const tierHeader = response.headers.get('kos-tier');
          if (tierHeader !== client.profile.tier || body.id !== record.id) {
            throw Object.assign(new Error(`tier ${tierHeader}, id ${body.id}`), { code: 'WRONG_TIER_OR_RECORD' });
          }
          let data: unknown;
          if (client.profile.tier === 'low') {
            data = body.data;
          } else {
            if (body.data?.kosTier !== client.profile.tier) {
              throw Object.assign(new Error(`item tier ${body.data?.kosTier}`), { code: 'WRONG_TIER_OR_RECORD' });
            }
            // A fresh opener per read: medium shares are fetched from the nodes every time.
            const opener = createOpener({
              timeoutMs: opts.shareTimeoutMs,
              ...(client.key ? { clientKey: client.key } : {}),
            });
            try {
              data = ((await opener.openBody(body)) as { data?: unknown }).data;
            } finally {
              opener.dispose();
            }
          }
          if (JSON.stringify(data) !== record.json) {
            stats.wrongPlaintexts++;
            throw Object.assign(new Error('plaintext differs from the record written'), { code: 'WRONG_PLAINTEXT' });
          }
        }
        counters.ok++;
        stats.ok++;
        stats.hist(tier).add(performance.now() - started);
      } catch (error) {
        counters.errors++;
        const e = error as { code?: unknown; status?: unknown; name?: string; message?: string };
        let code: string;
        if (isKosError(error)) code = error.code;
        else if (typeof e.code === 'string' && /^(ERR_|HTTP_|WRONG_)/.test(e.code)) code = e.code;
        else if (e.name === 'TimeoutError' || e.name === 'AbortError') code = 'CLIENT_TIMEOUT';
        else code = `CLIENT_${e.name ?? 'Error'}`;
        const status = typeof e.status === 'number' ? e.status : undefined;
        // Expected only while more nodes were down than this path can lose (n − k).
        const tooManyDown = state.downNodes.size > NODES - needK;
        const expected = tooManyDown && (code === 'ERR_SHARES_INSUFFICIENT' || status === 503);
        const failures = failuresOf(error);
        stats.error(code, expected, {
          phase,
          op: opName,
          code,
          ...(status === undefined ? {} : { status }),
          message: String(e.message ?? '').slice(0, 200),
          ...(failures === undefined ? {} : { failures }),
          downDuring: [...state.downNodes].sort().join(' ') || 'none',
          atSeconds: secondsSinceStart(),
        });
      } finally {
        inflight.delete(state);
      }
    };

    const runTraffic = async (ms: number): Promise<void> => {
      const phaseEnd = new AbortController();
      const timer = setTimeout(() => phaseEnd.abort(), ms);
      const stopOnInterrupt = () => phaseEnd.abort();
      if (interrupt.signal.aborted) phaseEnd.abort();
      interrupt.signal.addEventListener('abort', stopOnInterrupt, { once: true });
      try {
        await Promise.all(
          Array.from({ length: opts.concurrency }, async () => {
            while (!phaseEnd.signal.aborted) await runOp();
          }),
        );
      } finally {
        clearTimeout(timer);
        interrupt.signal.removeEventListener('abort', stopOnInterrupt);
      }
    };

    // -- seed records, provision every medium client's share set while all nodes are up
    for (let i = 0; i < opts.records; i++) await write(AbortSignal.timeout(15_000));
    if (opts.clearCacheMs > 0) {
      clearCacheTimer.id = setInterval(() => runtime.kos.keys.clearCache(), opts.clearCacheMs);
    }
    const chaosEnd = new AbortController();
    const stopChaos = () => chaosEnd.abort();
    if (interrupt.signal.aborted) chaosEnd.abort();
    interrupt.signal.addEventListener('abort', stopChaos, { once: true });
    const restarts = new Set<Promise<void>>();
    const chaosLoop = async () => {
      while (!chaosEnd.signal.aborted) {
        await sleep(opts.chaosIntervalMs * (0.5 + random()), chaosEnd.signal);
        if (chaosEnd.signal.aborted) break;
        const up = slots.filter((slot) => slot.state === 'up');
        const budget = opts.maxDown - (NODES - up.length);
        if (budget <= 0) continue;
        const count = budget >= 2 && random() < 0.35 ? 2 : 1;
        const victims: NodeSlot[] = [];
        while (victims.length < count && up.length > 0)
          victims.push(up.splice(Math.floor(random() * up.length), 1)[0]!);
        for (const slot of victims) {
          chaos.kills++;
          const downFor = opts.chaosIntervalMs * (0.3 + random() * 1.2);
          const task = (async () => {
            await stopNode(slot, 'SIGKILL');
            // Shortened when the soak ends; skipped when interrupted.
            await sleep(downFor, chaosEnd.signal);
            if (interrupt.signal.aborted) return;
            // A kill that lands while the node holds its replay-cache file lock leaves the lock
            // behind, and kos-kms then waits for it to go stale (10 s) before it can redeem a
            // grant (docs/benchmarks.md "Soak"). --clear-stale-locks removes it, as an operator's
            // restart step could: the process that held it is dead and the folder is this node's own.
            // Replay-cache entries the restarted node will sweep on its first grant redemption.
            try {
              const entries = readdirSync(join(slot.dir, 'replay', 'replay')).length;
              chaos.replayEntriesAtRestart.max = Math.max(chaos.replayEntriesAtRestart.max, entries);
              chaos.replayEntriesAtRestart.sum += entries;
              chaos.replayEntriesAtRestart.count++;
            } catch {
              // no replay folder yet
            }
            const staleLock = join(slot.dir, 'replay', '.lock.lock');
            if (existsSync(staleLock)) {
              chaos.staleLocksAtRestart++;
              if (opts.clearStaleLocks) rmSync(staleLock, { recursive: true, force: true });
            }
            await bringUp(slot, jwksPath);
            chaos.restarts++;
          })().catch((error: unknown) => {
            log(opts, `restart of ${slot.nodeId} failed: ${(error as Error).message}`);
          });
          restarts.add(task);
          void task.finally(() => restarts.delete(task));
        }
      }
    };

    // -- warm-up: the same traffic and chaos as the soak, so the start sample is taken in the
    // steady regime (code paths of failures and restarts already run, caches filled)
    phase = 'warmup';
    log(opts, `warm-up ${opts.warmup} s, ${opts.concurrency} workers, ${records.length} records, seed ${opts.seed}`);
    for (const client of clients) {
      if (interrupt.signal.aborted) break;
      const response = await fetch(`${base}/records/${records[0]?.id}`, {
        headers: { authorization: `Bearer ${client.token}` },
      });
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`warm-up read by ${client.id} answered ${response.status}`);
    }
    const chaosDone = opts.chaos && opts.maxDown > 0 ? chaosLoop() : Promise.resolve();
    await runTraffic(opts.warmup * 1000);
    log(opts, `warm-up done: ${stats.requests} requests`);
    warmup = stats;
    stats = new Stats();
    if (interrupt.signal.aborted) throw new Error('interrupted during warm-up');
    memoryStart = await sampleMemory();
    if (opts.heapSnapshots)
      log(opts, `heap snapshot ${writeHeapSnapshot(join(resolve(opts.heapSnapshots), 'soak-start.heapsnapshot'))}`);
    // Writing a snapshot blocks the event loop for seconds, long enough for the idle keep-alive
    // connections to the app to time out on both sides at once; let those timers run before
    // traffic resumes, or the first requests race a closing socket ("fetch failed").
    if (opts.heapSnapshots) await sleep(1000);
    recordsAtStart = records.length;

    // -- the soak: traffic for --seconds while the chaos loop goes on killing and restarting nodes
    phase = 'soak';
    lastChange = performance.now();
    log(
      opts,
      `soak ${opts.seconds} s${opts.chaos ? `, chaos every ~${opts.chaosIntervalMs / 1000} s, at most ${opts.maxDown} down` : ', no chaos'}`,
    );
    const soakStarted = performance.now();
    const timelineEnd = new AbortController();
    const timeline = (async () => {
      if (opts.memoryEveryMs <= 0) return;
      while (!timelineEnd.signal.aborted) {
        await sleep(opts.memoryEveryMs, timelineEnd.signal);
        if (timelineEnd.signal.aborted || memoryTimeline.length >= 1000) break;
        const sample = await sampleMemory();
        memoryTimeline.push({
          atSeconds: Math.round((performance.now() - soakStarted) / 100) / 10,
          rssMiB: sample.rssMiB,
          heapUsedMiB: sample.heapUsedMiB,
          objectsMiB: sample.objectsMiB,
        });
      }
    })();
    await runTraffic(opts.seconds * 1000);
    soakSeconds = (performance.now() - soakStarted) / 1000;
    timelineEnd.abort();
    chaosEnd.abort();
    await Promise.all([chaosDone, timeline]);
    setState(slots[0] as NodeSlot, (slots[0] as NodeSlot).state); // close the down-time accounting
    phase = 'drain';
    await Promise.all([...restarts]);
    interrupt.signal.removeEventListener('abort', stopChaos);
    if (clearCacheTimer.id) clearInterval(clearCacheTimer.id);
    memoryEnd = await sampleMemory();
    if (opts.heapSnapshots)
      log(opts, `heap snapshot ${writeHeapSnapshot(join(resolve(opts.heapSnapshots), 'soak-end.heapsnapshot'))}`);
  } catch (error) {
    if (!interrupted) setupError = error;
  } finally {
    if (clearCacheTimer.id) clearInterval(clearCacheTimer.id);
    // -- stop everything this script started
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolveClose) => server?.close(() => resolveClose()));
    }
    await closeKos?.().catch(() => undefined);
    await Promise.all(slots.map((slot) => stopNode(slot, 'SIGTERM')));
    killAllNow();
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    clearTimeout(watchdog);
  }

  if (setupError) {
    console.error(`[soak] set-up failed: ${(setupError as Error)?.stack ?? String(setupError)}`);
    // The cause chain, codes and details (ids only) of KOS errors: nothing secret is in them.
    for (let cause = (setupError as { cause?: unknown })?.cause, depth = 0; cause && depth < 5; depth++) {
      const c = cause as { name?: string; code?: unknown; message?: string; details?: unknown; cause?: unknown };
      console.error(
        `[soak]   caused by ${c.name} ${c.code ?? ''} ${c.message ?? ''} ${JSON.stringify(c.details ?? {})}`,
      );
      cause = c.cause;
    }
    const details = (setupError as { details?: unknown })?.details;
    if (details) console.error(`[soak]   details ${JSON.stringify(details)}`);
    return 2;
  }

  // -- the report
  const growthPct = (start: number | undefined, end: number | undefined) =>
    start && end !== undefined ? Math.round(((end - start) / start) * 1000) / 10 : undefined;
  const heapGrowthPct = growthPct(memoryStart?.heapUsedMiB, memoryEnd?.heapUsedMiB);
  const objectsGrowthPct = growthPct(memoryStart?.objectsMiB, memoryEnd?.objectsMiB);
  const rssGrowthPct = growthPct(memoryStart?.rssMiB, memoryEnd?.rssMiB);
  const memoryFailed =
    (objectsGrowthPct !== undefined && objectsGrowthPct > opts.maxGrowthPct) ||
    (opts.checkRss && rssGrowthPct !== undefined && rssGrowthPct > opts.maxGrowthPct);
  const tiers = ['low', 'medium', 'high', 'write'] as const;
  const report = {
    command: `npm run soak -- ${process.argv.slice(2).join(' ')}`.trim(),
    node: process.version,
    seed: opts.seed,
    interrupted,
    settings: {
      seconds: opts.seconds,
      warmupSeconds: opts.warmup,
      concurrency: opts.concurrency,
      nodes: NODES,
      systemShares: { n: NODES, k: SYSTEM_K },
      chaos: opts.chaos,
      chaosIntervalSeconds: opts.chaosIntervalMs / 1000,
      maxDown: opts.maxDown,
      writeRatio: opts.writeRatio,
      clearCacheMs: opts.clearCacheMs,
      maxGrowthPct: opts.maxGrowthPct,
      checkRss: opts.checkRss,
      clearStaleLocks: opts.clearStaleLocks,
      shareTimeoutMs: opts.shareTimeoutMs,
    },
    warmup: {
      requests: warmup?.requests ?? 0,
      expectedErrors: warmup?.expected ?? 0,
      unexpectedErrors: warmup?.unexpected ?? 0,
      wrongPlaintexts: warmup?.wrongPlaintexts ?? 0,
      unexpectedSamples: warmup?.unexpectedSamples ?? [],
    },
    soakSeconds: Math.round(soakSeconds * 10) / 10,
    requests: stats.requests,
    ok: stats.ok,
    requestsPerSecond: soakSeconds > 0 ? Math.round(stats.requests / soakSeconds) : 0,
    errors: {
      total: stats.expected + stats.unexpected,
      expected: stats.expected,
      unexpected: stats.unexpected,
      byCode: Object.fromEntries([...stats.errors].sort(([a], [b]) => a.localeCompare(b))),
      unexpectedSamples: stats.unexpectedSamples,
    },
    wrongPlaintexts: stats.wrongPlaintexts,
    latency: Object.fromEntries(
      tiers.filter((tier) => stats.latency.has(tier)).map((tier) => [tier, stats.hist(tier).summary()]),
    ),
    operations: Object.fromEntries([...stats.byOp].sort(([a], [b]) => a.localeCompare(b))),
    chaos: {
      kills: chaos.kills,
      restarts: chaos.restarts,
      restartFailures: chaos.restartFailures,
      unexpectedExits: chaos.unexpectedExits,
      staleLocksAtRestart: chaos.staleLocksAtRestart,
      replayEntriesAtRestart: {
        max: chaos.replayEntriesAtRestart.max,
        mean: chaos.replayEntriesAtRestart.count
          ? Math.round(chaos.replayEntriesAtRestart.sum / chaos.replayEntriesAtRestart.count)
          : 0,
      },
      maxDownSeen: chaos.maxDownSeen,
      events: chaos.events,
      secondsWithDown: Object.fromEntries(
        chaos.downTimeMs.map((ms, down) => [String(down), Math.round(ms / 100) / 10]).filter(([, s]) => s !== 0),
      ),
    },
    records: { atStart: recordsAtStart, atEnd: records.length },
    memory: {
      gcForced: typeof (globalThis as { gc?: unknown }).gc === 'function',
      start: memoryStart,
      end: memoryEnd,
      timeline: memoryTimeline,
      heapGrowthPct,
      objectsGrowthPct,
      rssGrowthPct,
    },
    processes: { started: spawnedPids.length, pids: spawnedPids, stillRunning: [...children].filter(alive).length },
    /** The temporary folder of the run (removed at the end). */
    dataDir: dir,
    failures: [] as string[],
  };
  if (stats.unexpected > 0) report.failures.push(`${stats.unexpected} unexpected error(s)`);
  if (stats.wrongPlaintexts > 0) report.failures.push(`${stats.wrongPlaintexts} wrong plaintext(s)`);
  if ((warmup?.unexpected ?? 0) > 0 || (warmup?.wrongPlaintexts ?? 0) > 0) {
    report.failures.push(
      `warm-up: ${warmup?.unexpected} unexpected error(s), ${warmup?.wrongPlaintexts} wrong plaintext(s)`,
    );
  }
  if (chaos.unexpectedExits > 0) report.failures.push(`${chaos.unexpectedExits} node process(es) died on their own`);
  if (stats.requests === 0 && !interrupted) report.failures.push('no requests were made');
  if (memoryFailed) {
    report.failures.push(
      `memory grew more than ${opts.maxGrowthPct} % (heap objects ${objectsGrowthPct} %, heapUsed ${heapGrowthPct} %, RSS ${rssGrowthPct} %)`,
    );
  }

  if (opts.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } else {
    printReport(report);
  }
  if (interrupted) return 130;
  return report.failures.length > 0 ? 1 : 0;
}

function printReport(report: {
  command: string;
  seed: number;
  soakSeconds: number;
  requests: number;
  ok: number;
  requestsPerSecond: number;
  errors: {
    total: number;
    expected: number;
    unexpected: number;
    byCode: Record<string, ErrorCount>;
    unexpectedSamples: Sample[];
  };
  wrongPlaintexts: number;
  latency: Record<string, ReturnType<Histogram['summary']>>;
  operations: Record<string, { requests: number; ok: number; errors: number }>;
  chaos: Record<string, unknown>;
  records: { atStart: number; atEnd: number };
  memory: {
    gcForced: boolean;
    start: MemorySample | undefined;
    end: MemorySample | undefined;
    heapGrowthPct: number | undefined;
    objectsGrowthPct: number | undefined;
    rssGrowthPct: number | undefined;
    timeline: { atSeconds: number; rssMiB: number; heapUsedMiB: number; objectsMiB: number }[];
  };
  warmup: { requests: number; expectedErrors: number; unexpectedErrors: number; wrongPlaintexts: number };
  interrupted: boolean;
  failures: string[];
}): void {
  const out: string[] = [];
  out.push('', `KOS soak — ${report.command} (seed ${report.seed})${report.interrupted ? ' — INTERRUPTED' : ''}`);
  out.push(
    `requests ${report.requests} in ${report.soakSeconds} s (${report.requestsPerSecond}/s), ok ${report.ok}, ` +
      `errors ${report.errors.total} (expected ${report.errors.expected}, unexpected ${report.errors.unexpected}), ` +
      `wrong plaintexts ${report.wrongPlaintexts}`,
  );
  const w = report.warmup;
  out.push(
    `warm-up (not in the figures): requests ${w.requests}, expected errors ${w.expectedErrors}, ` +
      `unexpected ${w.unexpectedErrors}, wrong plaintexts ${w.wrongPlaintexts}`,
  );
  out.push('', 'errors by code           total  expected  unexpected');
  for (const [code, count] of Object.entries(report.errors.byCode)) {
    out.push(
      `  ${code.padEnd(22)} ${String(count.total).padStart(5)} ${String(count.expected).padStart(9)} ${String(count.unexpected).padStart(11)}`,
    );
  }
  if (Object.keys(report.errors.byCode).length === 0) out.push('  (none)');
  out.push('', 'latency (ok requests)    count    p50 ms    p99 ms    max ms');
  for (const [tier, s] of Object.entries(report.latency)) {
    out.push(
      `  ${tier.padEnd(22)} ${String(s.count).padStart(5)} ${s.p50Ms.toFixed(1).padStart(9)} ${s.p99Ms.toFixed(1).padStart(9)} ${s.maxMs.toFixed(1).padStart(9)}`,
    );
  }
  out.push('', 'operations               requests     ok  errors');
  for (const [name, o] of Object.entries(report.operations)) {
    out.push(
      `  ${name.padEnd(22)} ${String(o.requests).padStart(8)} ${String(o.ok).padStart(6)} ${String(o.errors).padStart(7)}`,
    );
  }
  const { events, ...chaos } = report.chaos as { events?: string[] };
  out.push('', `chaos: ${JSON.stringify(chaos)}`);
  out.push(`records: ${report.records.atStart} at start, ${report.records.atEnd} at end`);
  const m = report.memory;
  const fmt = (s: MemorySample | undefined) =>
    s
      ? `rss ${s.rssMiB} MiB, heapUsed ${s.heapUsedMiB} MiB (objects ${s.objectsMiB}, code ${s.codeMiB}), external ${s.externalMiB} MiB`
      : 'n/a';
  out.push(`memory (gc forced: ${m.gcForced ? 'yes' : 'no — run with --expose-gc'})`);
  out.push(`  start ${fmt(m.start)}`);
  out.push(`  end   ${fmt(m.end)}`);
  out.push(
    `  growth heap objects ${m.objectsGrowthPct ?? 'n/a'} % (checked), heapUsed ${m.heapGrowthPct ?? 'n/a'} %, rss ${m.rssGrowthPct ?? 'n/a'} %`,
  );
  if (m.timeline.length > 0) {
    out.push(
      `  timeline, taken under load (s: objects/heapUsed/rss MiB) ${m.timeline.map((t) => `${t.atSeconds}: ${t.objectsMiB}/${t.heapUsedMiB}/${t.rssMiB}`).join(', ')}`,
    );
  }
  if (report.errors.unexpectedSamples.length > 0) {
    out.push('', 'unexpected errors (first ones):');
    for (const sample of report.errors.unexpectedSamples) out.push(`  ${JSON.stringify(sample)}`);
    out.push('', 'node state changes (soak phase):', `  ${(events ?? []).join('\n  ')}`);
  }
  out.push('', report.failures.length === 0 ? 'PASS' : `FAIL: ${report.failures.join('; ')}`, '');
  console.log(out.join('\n'));
}

main().then(
  (code) => {
    process.exitCode = code;
    // Nothing of ours is left running; exit even if a library keeps a handle open.
    setTimeout(() => process.exit(code), 200).unref();
  },
  (error: unknown) => {
    console.error(`[soak] crashed: ${(error as Error)?.stack ?? String(error)}`);
    killAllNow();
    process.exit(2);
  },
);
