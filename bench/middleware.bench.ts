/**
 * Middleware throughput (issue 4): req/s of one GET route in Express, Hono (@hono/node-server)
 * and Koa, bare (no middleware, plaintext 1 KiB record) and through KOS at low, high and medium
 * tier (hot key: the DEK is cached; the same record, sealed), measured with autocannon on
 * loopback.
 *
 *   npm run bench:middleware              # tables on stdout (progress on stderr), ~3 min
 *   npm run bench:middleware -- --json    # machine-readable JSON on stdout instead
 *   npm run bench:middleware -- --quick   # ~40–50 s smoke run (1 round of 1 s per case); noisier
 *
 * Extra flags, for profiling: --seconds=N (length of each measured run), --framework=express,koa and --case=bare,low (run a subset; the
 * targets need the bare case of the framework), --no-breakdown (skip the in-process part),
 * --cpu-prof=DIR (server children run with `node --cpu-prof`, one folder per server:
 * DIR/express-kos/…, one profile per thread; the main thread's is the larger file).
 *
 * Method: every server runs in its own child process (`bench/support/middleware-server.ts`),
 * pinned to CPU 1 with `taskset -c 1`; this process (autocannon, the load generator) is pinned
 * to CPU 0. Each case is one framework + one token against the bare or the KOS server of that
 * framework. Every case is warmed up, then measured in rounds: each round runs every case once
 * (autocannon, 10 connections, pipelining 1) in a rotated order, so bare and KOS see the same
 * machine conditions. Reported: the median req/s over the rounds, and beside it the server
 * process's own CPU time per request (`process.cpuUsage()` of the child, before/after each run).
 *
 * Targets (issue 4): added server CPU per request = 1e6/req_s(KOS) − 1e6/req_s(bare) ≤ 15 µs at
 * low and high tier and ≤ 30 µs at medium tier; Express with KOS at low tier ≥ 0.9x the bare
 * req/s. The medium target is checked on the bearer-grant case if it meets 30 µs, otherwise on
 * the key-bound case (token with `cnf.jwk`: the grant is DPoP-bound and reused), and the
 * report says which. 1e6/req_s is the server's CPU per request only while the pinned server is
 * saturated; when the bare or the KOS server was under 85 % busy in its median run, req/s was
 * set by something else (autocannon, other jobs) and the verdict uses the measured server CPU
 * per request instead. Both figures are always printed.
 *
 * Two more rows per framework are not KOS: "reference: same high-tier bytes, no checks" and
 * "reference: same low-tier bytes, one decrypt, no checks" put the sealed route behind
 * `bench/support/floor-middleware.ts`, which sends exactly KOS's high- or low-tier body and
 * headers without verifying anything (the low one decrypts the record with node:crypto, as it
 * must). Their added µs is what any middleware answering those bytes pays on this machine
 * (framework, Node, loopback, and for low one AES-GCM open); KOS's row minus it is KOS's own
 * work. They take part in no target.
 *
 * It also times, in this process and without HTTP, the two calls every adapter makes per
 * request (`kos.decide`, `kos.deliver` per tier) and the parts they contain, as process CPU
 * time per call (--no-breakdown skips it).
 *
 * It is a report: it exits 0 whether or not a target is met (non-zero only if a sanity check
 * fails: wrong body, a non-2xx answer or a socket error during a run).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { availableParallelism, loadavg, cpus as osCpus } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { snapshotBody } from '@kos/core';
import autocannon from 'autocannon';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK, jwtVerify, SignJWT } from 'jose';
import { getGlobalDispatcher } from 'undici';
import {
  AUDIENCE,
  benchRecord,
  buildBenchRuntime,
  CLIENTS,
  FRAMEWORKS,
  type Framework,
  IDENTITY_ENV,
  ISSUER,
  KID,
  RECORD_BYTES,
  RECORD_ID,
  RECORD_PATH,
  type ServerMode,
} from './support/middleware-fixture.js';
import { check, fixed, log, table } from './support/output.js';
import { median, quantile } from './support/sampler.js';

// ------------------------------------------------------------------ options

const argv = process.argv.slice(2);
const flags = new Set(argv.filter((a) => !a.includes('=')));
const flagValue = (name: string): string | undefined =>
  argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) || undefined;
const JSON_OUTPUT = flags.has('--json');
const QUICK = flags.has('--quick');
/** Measured rounds; every round runs every case once. */
const ROUNDS = QUICK ? 1 : 3;
/** Seconds per measured run. */
const RUN_S = Number(flagValue('seconds') ?? (QUICK ? 1 : 3));
/** Seconds of warm-up per case (JIT, DEK cache, client share sets, bound-grant cache). */
const WARMUP_S = QUICK ? 0.5 : 1;
const CONNECTIONS = 10;
const PIPELINING = 1;
const CPU_PROF_DIR = flagValue('cpu-prof');
const ONLY_FRAMEWORKS = flagValue('framework')?.split(',');
const ONLY_CASES = flagValue('case')?.split(',');
/** Skip the in-process breakdown (kos.decide / kos.deliver timed without HTTP). */
const NO_BREAKDOWN = flags.has('--no-breakdown');

/** The issue-4 limits. */
const LIMIT_US = { low: 15, high: 15, medium: 30 } as const;
const EXPRESS_LOW_MIN_RATIO = 0.9;
/** Server CPU / wall time from which a run counts as server-bound (1e6/req_s ≈ server CPU per request). */
const SERVER_BOUND_BUSY = 0.85;

const SERVER_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'support', 'middleware-server.ts');

// ------------------------------------------------------------------ cases

type CaseId = 'bare' | 'low' | 'floor-low' | 'high' | 'floor-high' | 'medium-bearer' | 'medium-bound';
type TokenName = 'low' | 'high' | 'medium' | 'mediumBound';

interface CaseDef {
  readonly id: CaseId;
  readonly label: string;
  readonly mode: ServerMode;
  readonly token: TokenName;
}

const CASE_DEFS: readonly CaseDef[] = [
  // The bare route ignores the header; it is sent so both see the same request bytes.
  { id: 'bare', label: 'bare route, no middleware', mode: 'bare', token: 'low' },
  { id: 'low', label: 'KOS low tier (score 30)', mode: 'kos', token: 'low' },
  // Not KOS: decrypts the record (node:crypto AES-GCM, key fixed) and sends the low-tier bytes, no checks.
  { id: 'floor-low', label: 'reference: same low-tier bytes, one decrypt, no checks', mode: 'floor-low', token: 'low' },
  { id: 'high', label: 'KOS high tier (score 90)', mode: 'kos', token: 'high' },
  // Not KOS: the least a middleware could do to send the high-tier bytes (no checks), to show
  // in the same run what any middleware answering them pays (bench/support/floor-middleware.ts).
  { id: 'floor-high', label: 'reference: same high-tier bytes, no checks', mode: 'floor', token: 'high' },
  { id: 'medium-bearer', label: 'KOS medium (65), bearer grant', mode: 'kos', token: 'medium' },
  { id: 'medium-bound', label: 'KOS medium (65), key-bound grant', mode: 'kos', token: 'mediumBound' },
];

interface Case extends CaseDef {
  readonly framework: Framework;
  readonly key: string;
}

interface Run {
  readonly reqPerSec: number;
  readonly requests: number;
  readonly durationS: number;
  /** Server process CPU (user + system) per answered request, µs. */
  readonly cpuUsPerReq: number;
  /** Server CPU time / wall time of the run (1 = one core fully busy). */
  readonly busy: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
}

interface CaseResult {
  readonly framework: Framework;
  readonly id: CaseId;
  readonly label: string;
  readonly reqPerSec: number;
  readonly reqPerSecMin: number;
  readonly reqPerSecMax: number;
  /** 1e6 / median req/s. */
  readonly usPerReq: number;
  readonly cpuUsPerReq: number;
  readonly busy: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
  /** vs the bare case of the same framework (null for bare itself or when it was not run). */
  readonly ratio: number | null;
  /** Median of the per-round (case / bare) req/s ratios. */
  readonly pairedRatio: number | null;
  /** 1e6/req_s(case) − 1e6/req_s(bare): the issue-4 "added server CPU per request". */
  readonly addedUs: number | null;
  /** The same from the server's measured CPU time per request. */
  readonly addedCpuUs: number | null;
  readonly runs: readonly Run[];
}

interface Target {
  readonly framework: Framework;
  readonly kind: 'target' | 'info';
  readonly what: string;
  readonly caseId: CaseId;
  /** The issue-4 figure, from req/s: added µs per request, or the req/s ratio. */
  readonly value: number | null;
  /** The same figure from the server's measured CPU time per request. */
  readonly cpuValue: number | null;
  readonly limit: number;
  readonly unit: 'µs' | 'x';
  /** Both the bare and the KOS server were saturated (busy >= SERVER_BOUND_BUSY) in the median run. */
  readonly serverBound: boolean;
  /** What the verdict used: req/s when the servers were saturated, else the measured server CPU. */
  readonly basis: 'req/s' | 'server CPU';
  readonly pass: boolean;
  readonly note?: string;
}

// ------------------------------------------------------------------ pinning

interface Pinning {
  readonly serverPrefix: readonly string[];
  readonly note: string;
}

function pinCpus(): Pinning {
  let taskset = '';
  try {
    taskset = execFileSync('sh', ['-c', 'command -v taskset'], { encoding: 'utf8' }).trim();
  } catch {
    taskset = '';
  }
  if (!taskset) return { serverPrefix: [], note: 'not pinned (taskset not found)' };
  if (availableParallelism() < 2) return { serverPrefix: [], note: 'not pinned (fewer than 2 CPUs available)' };
  try {
    const affinity = execFileSync(taskset, ['-c', '-p', String(process.pid)], { encoding: 'utf8' });
    const list = affinity.slice(affinity.lastIndexOf(':') + 1).trim();
    const allowed = new Set<number>();
    for (const part of list.split(',')) {
      const [lo, hi] = part.split('-').map(Number) as [number, number | undefined];
      for (let cpu = lo; cpu <= (hi ?? lo); cpu++) allowed.add(cpu);
    }
    if (!allowed.has(0) || !allowed.has(1)) return { serverPrefix: [], note: `not pinned (affinity ${list})` };
    execFileSync(taskset, ['-a', '-c', '-p', '0', String(process.pid)], { stdio: 'ignore' });
    return { serverPrefix: [taskset, '-c', '1'], note: 'server child on CPU 1 (taskset -c 1), autocannon on CPU 0' };
  } catch (error) {
    return { serverPrefix: [], note: `not pinned (${(error as Error).message.split('\n')[0]})` };
  }
}

// ------------------------------------------------------------------ server children

interface ServerChild {
  readonly framework: Framework;
  readonly mode: ServerMode;
  readonly port: number;
  readonly pid: number;
  cpu(): Promise<{ cpuUs: number; requests: number }>;
  stop(): Promise<void>;
}

async function startServer(
  framework: Framework,
  mode: ServerMode,
  pinning: Pinning,
  identityJwk: string,
): Promise<ServerChild> {
  const nodeArgs = [
    ...process.execArgv,
    // One folder per server: Node writes one profile per thread (main, module loader).
    ...(CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${join(CPU_PROF_DIR, `${framework}-${mode}`)}`] : []),
    SERVER_SCRIPT,
    '--framework',
    framework,
    '--mode',
    mode,
  ];
  const [command, ...args] = [...pinning.serverPrefix, process.execPath, ...nodeArgs] as [string, ...string[]];
  const child: ChildProcess = spawn(command, args, {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, [IDENTITY_ENV]: identityJwk },
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const waiting: Array<(line: string) => void> = [];
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${framework}/${mode} server did not start in 60 s`)), 60_000);
    child.once('exit', (code) => reject(new Error(`${framework}/${mode} server exited (${code}) before listening`)));
    lines.on('line', (line) => {
      if (line.startsWith('listening ')) {
        clearTimeout(timer);
        resolve(Number(line.slice('listening '.length)));
      } else if (line.startsWith('cpu ')) waiting.shift()?.(line);
    });
  });
  return {
    framework,
    mode,
    port,
    pid: child.pid as number,
    cpu() {
      return new Promise((resolve) => {
        waiting.push((line) => {
          const [, user, system, requests] = line.split(' ').map(Number) as [number, number, number, number];
          resolve({ cpuUs: user + system, requests });
        });
        child.stdin?.write('cpu\n');
      });
    },
    async stop() {
      if (exited) return;
      child.stdin?.end();
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exit;
      clearTimeout(killer);
    },
  };
}

// ------------------------------------------------------------------ tokens

async function mintTokens() {
  const identity = await generateKeyPair('EdDSA', { extractable: true });
  const clientKey = await generateKeyPair('ES256', { extractable: true });
  const clientJwk = await exportJWK(clientKey.publicKey);
  const now = Math.floor(Date.now() / 1000);
  const mint = (sub: string, score: number, extra: Record<string, unknown> = {}) =>
    new SignJWT({ trust_score: score, ...extra })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject(sub)
      .setIssuedAt(now)
      .setExpirationTime(now + 3600)
      .sign(identity.privateKey);
  const tokens: Record<TokenName, string> = {
    low: await mint(CLIENTS.low, 30),
    high: await mint(CLIENTS.high, 90),
    medium: await mint(CLIENTS.medium, 65),
    mediumBound: await mint(CLIENTS.mediumBound, 65, { cnf: { jwk: clientJwk } }),
  };
  return { tokens, identityJwk: JSON.stringify(await exportJWK(identity.publicKey)) };
}

// ------------------------------------------------------------------ sanity

interface Answer {
  readonly status: number;
  readonly tier: string | null;
  readonly body: unknown;
  readonly bytes: number;
}

async function get(port: number, token: string): Promise<Answer> {
  const response = await fetch(`http://127.0.0.1:${port}${RECORD_PATH}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  const text = await response.text();
  return {
    status: response.status,
    tier: response.headers.get('kos-tier'),
    body: JSON.parse(text) as unknown,
    bytes: Buffer.byteLength(text),
  };
}

function grantOf(answer: Answer): { grant: string; claims: Record<string, unknown> } {
  const key = (answer.body as { data?: { key?: { grant?: unknown } } }).data?.key;
  const grant = typeof key?.grant === 'string' ? key.grant : '';
  const payload = grant.split('.')[1] ?? '';
  return { grant, claims: JSON.parse(Buffer.from(payload, 'base64url').toString('utf8') || '{}') };
}

/** Every route answers what it should, before anything is timed. Returns response sizes. */
async function sanity(
  servers: Map<string, ServerChild>,
  tokens: Record<TokenName, string>,
  frameworks: readonly Framework[],
) {
  const expected = { id: RECORD_ID, data: benchRecord() };
  const bytes: Record<string, number> = {};
  for (const framework of frameworks) {
    const bare = servers.get(`${framework}:bare`);
    const kos = servers.get(`${framework}:kos`);
    if (bare) {
      const answer = await get(bare.port, tokens.low);
      check(answer.status === 200 && isDeepStrictEqual(answer.body, expected), `${framework} bare returns the record`);
      bytes[`${framework}:bare`] = answer.bytes;
    }
    const floor = servers.get(`${framework}:floor`);
    if (floor) {
      const reference = await get(floor.port, tokens.high);
      const data = (reference.body as { data?: { kosTier?: string; dek?: string; envelope?: { kid?: string } } }).data;
      check(
        reference.status === 200 &&
          reference.tier === 'high' &&
          data?.kosTier === 'high' &&
          /^[A-Za-z0-9_-]{43}$/.test(data.dek ?? '') &&
          data.envelope?.kid === KID,
        `${framework} reference middleware answers the high-tier shape`,
      );
      bytes[`${framework}:floor-high`] = reference.bytes;
    }
    const floorLow = servers.get(`${framework}:floor-low`);
    if (floorLow) {
      const reference = await get(floorLow.port, tokens.low);
      check(
        reference.status === 200 && reference.tier === 'low' && isDeepStrictEqual(reference.body, expected),
        `${framework} low-tier reference middleware returns the plaintext record`,
      );
      bytes[`${framework}:floor-low`] = reference.bytes;
    }
    if (!kos) continue;
    const low = await get(kos.port, tokens.low);
    check(low.status === 200 && low.tier === 'low', `${framework} KOS low tier answers 200 low`);
    check(isDeepStrictEqual(low.body, expected), `${framework} KOS low tier returns the plaintext record`);
    bytes[`${framework}:low`] = low.bytes;
    const floorLowBytes = bytes[`${framework}:floor-low`];
    if (floorLowBytes !== undefined) {
      check(floorLowBytes === low.bytes, `${framework} low-tier reference sends as many bytes as KOS low`);
    }
    const high = await get(kos.port, tokens.high);
    const highData = (high.body as { data?: { kosTier?: string; dek?: string; envelope?: { kid?: string } } }).data;
    check(high.status === 200 && high.tier === 'high', `${framework} KOS high tier answers 200 high`);
    check(
      highData?.kosTier === 'high' && /^[A-Za-z0-9_-]{43}$/.test(highData.dek ?? '') && highData.envelope?.kid === KID,
      `${framework} KOS high tier returns the envelope and its DEK`,
    );
    bytes[`${framework}:high`] = high.bytes;
    const floorBytes = bytes[`${framework}:floor-high`];
    if (floorBytes !== undefined) {
      check(floorBytes === high.bytes, `${framework} reference middleware sends as many bytes as KOS high`);
    }
    for (const [token, bound] of [
      ['medium', false],
      ['mediumBound', true],
    ] as const) {
      const first = await get(kos.port, tokens[token]);
      const second = await get(kos.port, tokens[token]);
      check(first.status === 200 && first.tier === 'medium', `${framework} KOS medium tier answers 200 medium`);
      const a = grantOf(first);
      const b = grantOf(second);
      check(a.grant.split('.').length === 3, `${framework} KOS medium tier returns a grant`);
      check(
        bound
          ? a.grant === b.grant && typeof (a.claims.cnf as { jkt?: unknown })?.jkt === 'string'
          : a.grant !== b.grant,
        bound
          ? `${framework} key-bound medium grant is DPoP-bound and reused`
          : `${framework} bearer medium grant is new per response`,
      );
      bytes[`${framework}:${bound ? 'medium-bound' : 'medium-bearer'}`] = first.bytes;
    }
  }
  return bytes;
}

// ------------------------------------------------------------------ load

async function load(server: ServerChild, token: string, seconds: number): Promise<Run> {
  const before = await server.cpu();
  const started = performance.now();
  const result = await autocannon({
    url: `http://127.0.0.1:${server.port}${RECORD_PATH}`,
    connections: CONNECTIONS,
    pipelining: PIPELINING,
    duration: seconds,
    headers: { authorization: `Bearer ${token}` },
  });
  const wallUs = (performance.now() - started) * 1e3;
  const after = await server.cpu();
  const where = `${server.framework}/${server.mode}`;
  check(result.errors === 0 && result.timeouts === 0, `${where}: no socket errors or timeouts (${result.errors})`);
  check(result.non2xx === 0, `${where}: every answer is 2xx (${result.non2xx} were not)`);
  const requests = result['2xx'];
  const cpuUs = after.cpuUs - before.cpuUs;
  return {
    reqPerSec: requests / result.duration,
    requests,
    durationS: result.duration,
    cpuUsPerReq: cpuUs / Math.max(1, after.requests - before.requests),
    busy: cpuUs / wallUs,
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
  };
}

async function measure(
  cases: readonly Case[],
  servers: Map<string, ServerChild>,
  tokens: Record<TokenName, string>,
): Promise<Map<string, Run[]>> {
  const serverOf = (c: Case) => servers.get(`${c.framework}:${c.mode}`) as ServerChild;
  log(`bench: warm-up, ${WARMUP_S} s per case (${cases.length} cases)…`);
  for (const c of cases) await load(serverOf(c), tokens[c.token], WARMUP_S);
  const runs = new Map<string, Run[]>(cases.map((c) => [c.key, []]));
  for (let round = 0; round < ROUNDS; round++) {
    log(`bench: round ${round + 1}/${ROUNDS} (${cases.length} runs of ${RUN_S} s)…`);
    for (let j = 0; j < cases.length; j++) {
      const c = cases[(round + j) % cases.length] as Case;
      (runs.get(c.key) as Run[]).push(await load(serverOf(c), tokens[c.token], RUN_S));
    }
  }
  return runs;
}

// ------------------------------------------------------------------ in-process breakdown

interface PartCase {
  readonly id: string;
  readonly label: string;
  readonly group: string;
  readonly fn: () => unknown;
}

interface PartResult {
  readonly group: string;
  readonly id: string;
  readonly label: string;
  /** Process CPU time (user + system, all threads) per call: what a loaded server pays. */
  readonly cpuUs: number;
  /** Wall time per call, one call at a time (includes waits for the crypto thread pool). */
  readonly wallUs: number;
  /** (p75 − p25) / 2 / median of the CPU samples. */
  readonly spread: number;
  readonly samples: number;
  readonly batch: number;
}

/**
 * Interleaved rounds like `support/sampler.ts`, but each sample also records the process CPU
 * time: jose and KOS use WebCrypto, whose jobs run on the libuv thread pool, so wall time one
 * call at a time overstates what a busy server spends (it waits for the thread hop).
 */
async function sampleParts(cases: readonly PartCase[], perCaseMs: number): Promise<PartResult[]> {
  const SAMPLE_MS = 10;
  const run = async (fn: () => unknown, n: number) => {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await fn();
    const wallUs = (performance.now() - t0) * 1e3;
    const cpu = process.cpuUsage(cpu0);
    return { wallUs: wallUs / n, cpuUs: (cpu.user + cpu.system) / n };
  };
  const batches = new Map<string, number>();
  for (const c of cases) {
    await run(c.fn, 50);
    const probe = await run(c.fn, 20);
    batches.set(c.id, Math.max(5, Math.round((SAMPLE_MS * 1e3) / Math.max(probe.wallUs, 1))));
  }
  const samples = new Map(cases.map((c) => [c.id, [] as Array<{ wallUs: number; cpuUs: number }>]));
  const deadline = performance.now() + perCaseMs * cases.length;
  for (let round = 0; round < 5 || performance.now() < deadline; round++) {
    for (let j = 0; j < cases.length; j++) {
      const c = cases[(round + j) % cases.length] as PartCase;
      samples.get(c.id)?.push(await run(c.fn, batches.get(c.id) as number));
    }
  }
  return cases.map((c) => {
    const own = samples.get(c.id) as Array<{ wallUs: number; cpuUs: number }>;
    const cpu = own.map((x) => x.cpuUs).sort((a, b) => a - b);
    const cpuUs = median(cpu);
    return {
      group: c.group,
      id: c.id,
      label: c.label,
      cpuUs,
      wallUs: median(own.map((x) => x.wallUs)),
      spread: (quantile(cpu, 0.75) - quantile(cpu, 0.25)) / 2 / cpuUs,
      samples: own.length,
      batch: batches.get(c.id) as number,
    };
  });
}

/**
 * Where the per-request time goes, without HTTP: the two calls every adapter makes per request
 * (`kos.decide`, `kos.deliver`) timed in this process on a runtime configured like the
 * servers', beside the bare signature check and the parts they contain.
 */
async function breakdown(tokens: Record<TokenName, string>, identityJwk: string): Promise<PartResult[]> {
  const jwk = JSON.parse(identityJwk) as JWK;
  const runtime = await buildBenchRuntime(jwk);
  try {
    const { kos } = runtime;
    const row = { id: RECORD_ID, data: await kos.seal(KID, benchRecord(), { dataId: RECORD_ID }) };
    const requestFor = (token: string) => ({
      method: 'GET',
      url: `http://127.0.0.1:8080${RECORD_PATH}`,
      headers: { host: '127.0.0.1:8080', authorization: `Bearer ${token}`, 'user-agent': 'autocannon' },
    });
    const decided = async (token: TokenName) => {
      const request = requestFor(tokens[token]);
      const { decision, identity } = await kos.decide(request);
      return { request, decision, identity };
    };
    const low = await decided('low');
    const high = await decided('high');
    const medium = await decided('medium');
    const bound = await decided('mediumBound');
    const deliver = (d: typeof low) => () => kos.deliver(d.request, d.identity, d.decision, { status: 200, body: row });
    // The signature check alone (node:crypto, synchronous, KeyObject): the floor of any JWT check.
    const token = tokens.low;
    const dot = token.lastIndexOf('.');
    const signed = Buffer.from(token.slice(0, dot));
    const signature = Buffer.from(token.slice(dot + 1), 'base64url');
    const keyObject = createPublicKey({ key: jwk as never, format: 'jwk' });
    check(cryptoVerify(null, signed, keyObject, signature), 'the token signature verifies');
    const verifyOptions = { algorithms: ['EdDSA'], issuer: ISSUER, audience: AUDIENCE };
    const envelope = kos.keys.decode(row.data);
    const clientJwk = bound.identity.publicJwk as JWK;
    const cases: PartCase[] = [
      {
        group: 'identity',
        id: 'verify.raw',
        label: 'node:crypto verify (Ed25519 signature only, sync)',
        fn: () => cryptoVerify(null, signed, keyObject, signature),
      },
      {
        group: 'identity',
        id: 'verify.jose',
        label: 'jose jwtVerify (same token and key as KOS)',
        fn: () => jwtVerify(token, jwk, verifyOptions),
      },
      { group: 'identity', id: 'decide', label: 'kos.decide (identity + tier)', fn: () => kos.decide(low.request) },
      {
        group: 'deliver',
        id: 'open',
        label: '↳ kos.keys.open (cached DEK, parsed envelope)',
        fn: () => kos.keys.open(envelope),
      },
      {
        group: 'deliver',
        id: 'thumbprint',
        label: '↳ jose calculateJwkThumbprint (P-256, WebCrypto)',
        fn: () => calculateJwkThumbprint(clientJwk, 'sha256'),
      },
      {
        group: 'deliver',
        id: 'snapshot',
        label: '↳ snapshotBody(body) (the JSON view KOS shapes)',
        fn: () => snapshotBody(row),
      },
      {
        group: 'deliver',
        id: 'stringify',
        label: '↳ JSON.stringify(body) (what any JSON route pays)',
        fn: () => JSON.stringify(row),
      },
      { group: 'deliver', id: 'deliver.low', label: 'kos.deliver, low tier', fn: deliver(low) },
      { group: 'deliver', id: 'deliver.high', label: 'kos.deliver, high tier', fn: deliver(high) },
      {
        group: 'deliver',
        id: 'deliver.medium-bearer',
        label: 'kos.deliver, medium, bearer grant',
        fn: deliver(medium),
      },
      {
        group: 'deliver',
        id: 'deliver.medium-bound',
        label: 'kos.deliver, medium, key-bound grant',
        fn: deliver(bound),
      },
    ];
    log(`bench: in-process breakdown (${cases.length} cases, ~${QUICK ? 0.2 : 0.8} s each)…`);
    return await sampleParts(cases, QUICK ? 200 : 800);
  } finally {
    await runtime.close();
  }
}

// ------------------------------------------------------------------ results

function summarise(cases: readonly Case[], runs: Map<string, Run[]>): CaseResult[] {
  const partial = cases.map((c) => {
    const own = runs.get(c.key) as Run[];
    const reqPerSec = median(own.map((r) => r.reqPerSec));
    return {
      c,
      own,
      reqPerSec,
      cpuUsPerReq: median(own.map((r) => r.cpuUsPerReq)),
    };
  });
  return partial.map(({ c, own, reqPerSec, cpuUsPerReq }) => {
    const bare = c.id === 'bare' ? undefined : partial.find((p) => p.c.framework === c.framework && p.c.id === 'bare');
    return {
      framework: c.framework,
      id: c.id,
      label: c.label,
      reqPerSec,
      reqPerSecMin: Math.min(...own.map((r) => r.reqPerSec)),
      reqPerSecMax: Math.max(...own.map((r) => r.reqPerSec)),
      usPerReq: 1e6 / reqPerSec,
      cpuUsPerReq,
      busy: median(own.map((r) => r.busy)),
      latencyP50Ms: median(own.map((r) => r.latencyP50Ms)),
      latencyP99Ms: median(own.map((r) => r.latencyP99Ms)),
      ratio: bare ? reqPerSec / bare.reqPerSec : null,
      pairedRatio: bare ? median(own.map((r, i) => r.reqPerSec / (bare.own[i] as Run).reqPerSec)) : null,
      addedUs: bare ? 1e6 / reqPerSec - 1e6 / bare.reqPerSec : null,
      addedCpuUs: bare ? cpuUsPerReq - bare.cpuUsPerReq : null,
      runs: own,
    };
  });
}

/**
 * 1e6/req_s is the server's CPU per request only while the pinned server is the bottleneck.
 * When it is not (the load generator or other jobs on the machine are), req/s measures them,
 * and the verdict falls back to the server CPU time measured per request.
 */
function evaluate(results: readonly CaseResult[], frameworks: readonly Framework[]): Target[] {
  const targets: Target[] = [];
  const find = (framework: Framework, id: CaseId) => results.find((r) => r.framework === framework && r.id === id);
  const withBare = (framework: Framework, id: CaseId) => {
    const r = find(framework, id);
    const bare = find(framework, 'bare');
    return r && bare && r.addedUs !== null ? { r, bare } : undefined;
  };
  const serverBound = (r: CaseResult, bare: CaseResult) =>
    r.busy >= SERVER_BOUND_BUSY && bare.busy >= SERVER_BOUND_BUSY;
  const busyNote = (r: CaseResult, bare: CaseResult) =>
    serverBound(r, bare)
      ? ''
      : `req/s not server-bound (busy: bare ${fixed(bare.busy * 100, 0)}%, KOS ${fixed(r.busy * 100, 0)}%): verdict on measured CPU`;
  const usPass = (framework: Framework, id: CaseId, limit: number) => {
    const pair = withBare(framework, id);
    if (!pair) return undefined;
    return serverBound(pair.r, pair.bare)
      ? (pair.r.addedUs as number) <= limit
      : (pair.r.addedCpuUs as number) <= limit;
  };
  const usTarget = (
    framework: Framework,
    id: CaseId,
    limit: number,
    kind: Target['kind'],
    what: string,
    note?: string,
  ): Target | undefined => {
    const pair = withBare(framework, id);
    if (!pair) return undefined;
    const { r, bare } = pair;
    const bound = serverBound(r, bare);
    const notes = [note, busyNote(r, bare)].filter(Boolean).join('; ');
    return {
      framework,
      kind,
      what,
      caseId: id,
      value: r.addedUs,
      cpuValue: r.addedCpuUs,
      limit,
      unit: 'µs',
      serverBound: bound,
      basis: bound ? 'req/s' : 'server CPU',
      pass: usPass(framework, id, limit) as boolean,
      ...(notes ? { note: notes } : {}),
    };
  };
  for (const framework of frameworks) {
    const add = (t: Target | undefined) => {
      if (t) targets.push(t);
    };
    add(usTarget(framework, 'low', LIMIT_US.low, 'target', `low tier: added µs/req <= ${LIMIT_US.low}`));
    add(usTarget(framework, 'high', LIMIT_US.high, 'target', `high tier: added µs/req <= ${LIMIT_US.high}`));
    const bearerPasses = usPass(framework, 'medium-bearer', LIMIT_US.medium) === true;
    const boundRun = withBare(framework, 'medium-bound') !== undefined;
    const what = `medium tier: added µs/req <= ${LIMIT_US.medium}`;
    add(
      usTarget(
        framework,
        'medium-bearer',
        LIMIT_US.medium,
        bearerPasses || !boundRun ? 'target' : 'info',
        `${what} (bearer grant)`,
        bearerPasses ? undefined : 'bearer grant misses the limit (one EdDSA signature per response)',
      ),
    );
    add(
      usTarget(
        framework,
        'medium-bound',
        LIMIT_US.medium,
        bearerPasses ? 'info' : 'target',
        `${what} (key-bound grant)`,
        bearerPasses ? undefined : 'the target row, as the bearer variant cannot meet the limit',
      ),
    );
    const low = framework === 'express' ? withBare(framework, 'low') : undefined;
    if (low) {
      const bound = serverBound(low.r, low.bare);
      const cpuRatio = low.bare.cpuUsPerReq / low.r.cpuUsPerReq;
      targets.push({
        framework,
        kind: 'target',
        what: `low tier req/s >= ${EXPRESS_LOW_MIN_RATIO}x bare`,
        caseId: 'low',
        value: low.r.ratio,
        cpuValue: cpuRatio,
        limit: EXPRESS_LOW_MIN_RATIO,
        unit: 'x',
        serverBound: bound,
        basis: bound ? 'req/s' : 'server CPU',
        pass: (bound ? (low.r.ratio as number) : cpuRatio) >= EXPRESS_LOW_MIN_RATIO,
        note: [`paired per-round ratio ${fixed(low.r.pairedRatio, 2)}x`, busyNote(low.r, low.bare)]
          .filter(Boolean)
          .join('; '),
      });
    }
  }
  return targets;
}

function printReport(
  results: readonly CaseResult[],
  targets: readonly Target[],
  micro: readonly PartResult[],
  bytes: Record<string, number>,
  meta: Record<string, unknown>,
): void {
  const lines: string[] = [];
  lines.push(
    `middleware throughput — ${meta.node} on ${meta.cpuModel} (${meta.cpus} logical CPUs), ${meta.date}, load average ${(meta.loadavgStart as number[]).join(' ')} at start, ${(meta.loadavgEnd as number[]).join(' ')} at end`,
  );
  lines.push(
    `GET ${RECORD_PATH}, ${RECORD_BYTES} B record; autocannon ${CONNECTIONS} connections, pipelining ${PIPELINING}, loopback; ${meta.pinning}`,
  );
  lines.push(
    `${ROUNDS} round(s) x ${RUN_S} s per case, cases interleaved, after ${WARMUP_S} s warm-up each; figures are medians over the rounds`,
  );
  lines.push(
    'µs/req = 1e6 / req/s (server-bound: the server CPU per request); added = µs/req − bare µs/req (the issue-4 figure)',
  );
  lines.push(
    'srv CPU µs/req = the server process CPU time (user+sys) per request, measured; busy = server CPU / wall time',
  );
  for (const framework of FRAMEWORKS) {
    const own = results.filter((r) => r.framework === framework);
    if (own.length === 0) continue;
    lines.push('');
    lines.push(`${framework}${framework === 'hono' ? ' (@hono/node-server)' : ''}`);
    const rows: string[][] = [
      [
        'case',
        'req/s',
        'min–max',
        'vs bare',
        'µs/req',
        'added µs',
        'srv CPU µs/req',
        'added CPU µs',
        'busy',
        'p50 ms',
        'p99 ms',
        'body B',
      ],
    ];
    for (const r of own) {
      rows.push([
        r.label,
        fixed(r.reqPerSec, 0),
        `${fixed(r.reqPerSecMin, 0)}–${fixed(r.reqPerSecMax, 0)}`,
        r.ratio === null ? '' : `${fixed(r.ratio, 2)}x`,
        fixed(r.usPerReq, 1),
        r.addedUs === null ? '' : fixed(r.addedUs, 1),
        fixed(r.cpuUsPerReq, 1),
        r.addedCpuUs === null ? '' : fixed(r.addedCpuUs, 1),
        `${fixed(r.busy * 100, 0)}%`,
        fixed(r.latencyP50Ms, 0),
        fixed(r.latencyP99Ms, 0),
        String(bytes[`${framework}:${r.id}`] ?? ''),
      ]);
    }
    lines.push(table(rows, new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])));
    for (const [tier, referenceId] of [
      ['low', 'floor-low'],
      ['high', 'floor-high'],
    ] as const) {
      const kos = own.find((r) => r.id === tier);
      const reference = own.find((r) => r.id === referenceId);
      if (kos && reference) {
        lines.push(
          `KOS ${tier} − reference (KOS's own work for the same bytes): ${fixed(kos.usPerReq - reference.usPerReq, 1)} µs/req (server CPU: ${fixed(kos.cpuUsPerReq - reference.cpuUsPerReq, 1)} µs)`,
        );
      }
    }
  }
  if (micro.length > 0) {
    lines.push('');
    lines.push(
      'Where the time goes, in-process (no HTTP, this process, one call at a time): CPU = process CPU time (all threads) per call, median of ~10 ms batches',
    );
    const rows: string[][] = [['group', 'case', 'CPU µs', 'spread', 'wall µs']];
    let previous = '';
    for (const r of micro) {
      rows.push([
        r.group === previous ? '' : r.group,
        r.label,
        fixed(r.cpuUs, 1),
        `±${fixed(r.spread * 100, 0)}%`,
        fixed(r.wallUs, 1),
      ]);
      previous = r.group;
    }
    lines.push(table(rows, new Set([2, 3, 4])));
  }
  lines.push('');
  if (targets.length === 0) {
    lines.push('Targets: none evaluated (a target needs the bare case and the KOS case of a framework)');
    process.stdout.write(`${lines.join('\n')}\n`);
    return;
  }
  lines.push('Targets (issue 4; kind "info" = reported, not the target row):');
  lines.push(
    table(
      [
        ['result', 'kind', 'framework', 'target', 'from req/s', 'from srv CPU', 'verdict on', 'note'],
        ...targets.map((t) => [
          `${t.pass ? 'PASS' : 'FAIL'}${t.serverBound ? '' : '?'}`,
          t.kind,
          t.framework,
          t.what,
          t.unit === 'µs' ? `${fixed(t.value, 1)} µs` : `${fixed(t.value, 2)}x`,
          t.unit === 'µs' ? `${fixed(t.cpuValue, 1)} µs` : `${fixed(t.cpuValue, 2)}x`,
          t.basis,
          t.note ?? '',
        ]),
      ],
      new Set([4, 5]),
    ),
  );
  const counted = targets.filter((t) => t.kind === 'target');
  const failed = counted.filter((t) => !t.pass);
  const unsure = counted.filter((t) => !t.serverBound).length;
  lines.push('');
  if (unsure > 0) {
    lines.push(
      `? = the bare or the KOS server was under ${SERVER_BOUND_BUSY * 100}% busy: req/s was not set by the server, so the verdict uses the measured server CPU (less reliable on a loaded machine: rerun when it is idle)`,
    );
  }
  lines.push(
    `RESULT: ${counted.length - failed.length}/${counted.length} targets PASS${
      failed.length > 0
        ? ` (FAIL: ${failed.map((t) => `${t.framework} ${t.unit === 'x' ? `${t.caseId} req/s ratio` : t.caseId}`).join(', ')})`
        : ''
    }${unsure > 0 ? `; ${unsure} verdict(s) marked ? (not server-bound)` : ''}`,
  );
  process.stdout.write(`${lines.join('\n')}\n`);
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const started = performance.now();
  const frameworks = FRAMEWORKS.filter((f) => !ONLY_FRAMEWORKS || ONLY_FRAMEWORKS.includes(f));
  const cases: Case[] = frameworks.flatMap((framework) =>
    CASE_DEFS.filter((d) => !ONLY_CASES || ONLY_CASES.includes(d.id)).map((d) => ({
      ...d,
      framework,
      key: `${framework}:${d.id}`,
    })),
  );
  check(cases.length > 0, '--framework/--case select at least one case');
  const loadStart = loadavg().map((v) => Number(v.toFixed(2)));
  const pinning = pinCpus();
  log(`bench: ${pinning.note}`);
  const { tokens, identityJwk } = await mintTokens();
  const micro = NO_BREAKDOWN ? [] : await breakdown(tokens, identityJwk);
  const servers = new Map<string, ServerChild>();
  try {
    const wanted = [...new Set(cases.map((c) => `${c.framework}:${c.mode}`))];
    log(`bench: starting ${wanted.length} server processes…`);
    const children = await Promise.all(
      wanted.map((key) => {
        const [framework, mode] = key.split(':') as [Framework, ServerMode];
        return startServer(framework, mode, pinning, identityJwk);
      }),
    );
    for (const server of children) servers.set(`${server.framework}:${server.mode}`, server);
    const bytes = await sanity(servers, tokens, frameworks);
    await getGlobalDispatcher().close();

    const runs = await measure(cases, servers, tokens);
    const results = summarise(cases, runs);
    const targets = evaluate(results, frameworks);
    const cpus = osCpus();
    const meta = {
      node: process.version,
      v8: process.versions.v8,
      platform: `${process.platform}-${process.arch}`,
      cpuModel: cpus[0]?.model.trim() ?? 'unknown',
      cpus: cpus.length,
      loadavgStart: loadStart,
      loadavgEnd: loadavg().map((v) => Number(v.toFixed(2))),
      date: new Date().toISOString(),
      quick: QUICK,
      pinning: pinning.note,
      rounds: ROUNDS,
      runSeconds: RUN_S,
      warmupSeconds: WARMUP_S,
      connections: CONNECTIONS,
      pipelining: PIPELINING,
      recordBytes: RECORD_BYTES,
      durationS: Number(((performance.now() - started) / 1e3).toFixed(1)),
    };
    if (JSON_OUTPUT) {
      process.stdout.write(`${JSON.stringify({ meta, bodyBytes: bytes, results, targets, micro }, null, 2)}\n`);
    } else {
      printReport(results, targets, micro, bytes, meta);
      log(`bench: done in ${meta.durationS} s`);
    }
  } finally {
    await Promise.all([...servers.values()].map((server) => server.stop()));
  }
}

await main();
