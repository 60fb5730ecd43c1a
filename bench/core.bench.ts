/**
 * @kos/core micro-benchmarks against a raw node:crypto / shamir-secret-sharing baseline.
 *
 *   npm run bench              # aligned table on stdout (progress on stderr)
 *   npm run bench -- --json    # machine-readable JSON on stdout instead
 *   npm run bench -- --quick   # ~5x shorter run, for smoke checks (noisier)
 *
 * Method: cases that are compared with each other form a group. Each case is warmed up, then
 * given a batch size so one sample takes about SAMPLE_TARGET_MS. Samples are then taken in
 * rounds: every round takes one sample of every case in the group, in a rotated order, so
 * baseline and candidate see the same machine conditions. Reported: the median time per op,
 * the interquartile spread, and the KOS/raw ratio as the median of per-round paired ratios
 * (more robust on a shared, noisy machine than the ratio of two medians).
 *
 * It is a report: it exits 0 whether or not a target is met.
 */
import { createCipheriv, createDecipheriv, randomFillSync } from 'node:crypto';
import { loadavg, cpus as osCpus } from 'node:os';
import {
  createNodeCryptoProvider,
  decodeEnvelope,
  type Envelope,
  encodeEnvelope,
  encodeHeader,
  equalBytes,
  KeyManager,
  keyCheckValue,
  keyCommitment,
  openWithKey,
  rebuildDek,
  type ShareCandidate,
  type SharePlacement,
  sealWithKey,
  splitDek,
  toBase64url,
  verifyShare,
} from '@kos/core';
import { createMemoryMetadataStore, createMemoryShareStore } from '@kos/kms-adapters';
import { combine, split } from 'shamir-secret-sharing';
import { check, fixed, log, table } from './support/output.js';
import { type Case, type Group, type Result, runGroup, type SamplerOptions, sink } from './support/sampler.js';

// ------------------------------------------------------------------ options

const args = new Set(process.argv.slice(2));
const JSON_OUTPUT = args.has('--json');
const QUICK = args.has('--quick');
const SCALE = QUICK ? 0.2 : 1;
/** Sampling time per case (all cases of a group share rounds, so a group gets cases x this). */
const PER_CASE_MS = 1000 * SCALE;
const WARMUP_MS = 150 * SCALE;
const SAMPLE_TARGET_MS = 1;
const MIN_ROUNDS = 15;
const MAX_ROUNDS = 20_000;
const SAMPLER: SamplerOptions = {
  perCaseMs: PER_CASE_MS,
  warmupMs: WARMUP_MS,
  sampleTargetMs: SAMPLE_TARGET_MS,
  minRounds: MIN_ROUNDS,
  maxRounds: MAX_ROUNDS,
};

const KIB = 1024;
const SIZES = [KIB, 64 * KIB, 1024 * KIB] as const;
const KID = 'bench';
const VERSION = 1;
const DATA_ID = 'order-0000000017';
const TAG_BYTES = 16;

const crypto = createNodeCryptoProvider();

function random(length: number): Uint8Array {
  return randomFillSync(new Uint8Array(length));
}

// ------------------------------------------------------------------ raw baselines

interface RawSealed {
  readonly iv: Uint8Array;
  readonly ct: Uint8Array;
  readonly tag: Uint8Array;
}

/** The least a correct caller of node:crypto does: fresh IV, AAD, ciphertext, tag. */
function rawSeal(key: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): RawSealed {
  const iv = randomFillSync(new Uint8Array(12));
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const ct = cipher.update(plaintext);
  cipher.final();
  return { iv, ct, tag: cipher.getAuthTag() };
}

function rawOpen(key: Uint8Array, aad: Uint8Array, sealed: RawSealed): Uint8Array {
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.iv, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.tag);
  const plaintext = decipher.update(sealed.ct);
  decipher.final();
  return plaintext;
}

// ------------------------------------------------------------------ fixtures

function sizeLabel(bytes: number): string {
  return bytes >= 1024 * KIB ? `${bytes / (1024 * KIB)} MiB` : `${bytes / KIB} KiB`;
}

async function aeadGroups(keys: KeyManager): Promise<{ groups: Group[]; headerBytes: number }> {
  const key = random(32);
  const groups: Group[] = [];
  let headerBytes = 0;
  for (const size of SIZES) {
    const plaintext = random(size);
    const envelope: Envelope = await sealWithKey({
      crypto,
      key,
      kid: KID,
      version: VERSION,
      dataId: DATA_ID,
      plaintext,
    });
    const binary = encodeEnvelope(envelope, 'binary');
    const json = encodeEnvelope(envelope, 'json');
    headerBytes = encodeHeader(envelope.header).length;
    // The raw baseline authenticates associated data as long as the KOS header (its AAD).
    const aad = random(headerBytes);
    const rawSealed = rawSeal(key, aad, plaintext);

    check(equalBytes(rawOpen(key, aad, rawSealed), plaintext), 'raw open round-trips');
    for (const input of [envelope, decodeEnvelope(binary), decodeEnvelope(json)]) {
      const opened = await openWithKey({ crypto, key, envelope: input, dataId: DATA_ID });
      check(equalBytes(opened, plaintext), `KOS open round-trips at ${size} B`);
    }

    const label = sizeLabel(size);
    const sealCases: Case[] = [
      { id: `seal.raw.${size}`, label: 'raw node:crypto seal', bytes: size, fn: () => rawSeal(key, aad, plaintext) },
      {
        id: `seal.kos.${size}`,
        label: 'KOS sealWithKey',
        bytes: size,
        baseline: `seal.raw.${size}`,
        fn: () => sealWithKey({ crypto, key, kid: KID, version: VERSION, dataId: DATA_ID, plaintext }),
      },
    ];
    const openCases: Case[] = [
      { id: `open.raw.${size}`, label: 'raw node:crypto open', bytes: size, fn: () => rawOpen(key, aad, rawSealed) },
      {
        id: `open.kos.${size}`,
        label: 'KOS openWithKey (parsed)',
        bytes: size,
        baseline: `open.raw.${size}`,
        fn: () => openWithKey({ crypto, key, envelope, dataId: DATA_ID }),
      },
      {
        id: `open.kos-binary.${size}`,
        label: 'KOS decode(binary) + open',
        bytes: size,
        baseline: `open.raw.${size}`,
        fn: () => openWithKey({ crypto, key, envelope: decodeEnvelope(binary), dataId: DATA_ID }),
      },
      {
        id: `open.kos-json.${size}`,
        label: 'KOS decode(json) + open',
        bytes: size,
        baseline: `open.raw.${size}`,
        fn: () => openWithKey({ crypto, key, envelope: decodeEnvelope(json), dataId: DATA_ID }),
      },
    ];
    // Parts of the KOS cost, to explain the ratios (no baseline).
    const partCases: Case[] = [
      { id: `part.decode-binary.${size}`, label: '  part: decodeEnvelope(binary)', fn: () => decodeEnvelope(binary) },
      { id: `part.decode-json.${size}`, label: '  part: decodeEnvelope(json)', fn: () => decodeEnvelope(json) },
    ];
    if (size === KIB) {
      partCases.push({
        id: `part.commitment.${size}`,
        label: '  part: keyCommitment (HMAC-SHA256)',
        fn: () => keyCommitment(crypto, key, envelope.header.nonce),
      });
      const kmEnvelope = await keys.seal(KID, plaintext, { dataId: DATA_ID });
      check(equalBytes(await keys.open(kmEnvelope, { dataId: DATA_ID }), plaintext), 'KeyManager round-trips');
      sealCases.push({
        id: `seal.km.${size}`,
        label: 'KeyManager.seal (cached DEK)',
        bytes: size,
        baseline: `seal.raw.${size}`,
        fn: () => keys.seal(KID, plaintext, { dataId: DATA_ID }),
      });
      openCases.push({
        id: `open.km.${size}`,
        label: 'KeyManager.open (cached DEK)',
        bytes: size,
        baseline: `open.raw.${size}`,
        fn: () => keys.open(kmEnvelope, { dataId: DATA_ID }),
      });
    }
    openCases.push(...partCases);
    groups.push({ name: `seal ${label}`, cases: sealCases }, { name: `open ${label}`, cases: openCases });
  }
  return { groups, headerBytes };
}

async function shareGroup(): Promise<Group> {
  const dek = random(32);
  const nodes = Array.from({ length: 5 }, (_, i) => ({ nodeId: `node-${i + 1}` }));
  const split5of3 = () =>
    splitDek({ crypto, dek, kid: KID, version: VERSION, owner: 'system', n: 5, k: 3, nodes, now: 0 });
  const { record, shares } = await split5of3();
  const kcv = toBase64url(await keyCheckValue(crypto, dek, KID, VERSION));
  const byNode = new Map<string, ShareCandidate>(
    shares.map(({ nodeId, share }) => [
      nodeId,
      { kid: share.kid, version: share.version, setId: share.setId, x: share.x, value: share.value },
    ]),
  );
  // rebuildDek wipes the values it combined, so every fetch hands out a copy (as a store does).
  const fetch = async (placement: SharePlacement): Promise<ShareCandidate | undefined> => {
    const candidate = byNode.get(placement.nodeId);
    return candidate && { ...candidate, value: new Uint8Array(candidate.value) };
  };
  const placement = record.placements[0] as SharePlacement;
  const candidate = byNode.get(placement.nodeId) as ShareCandidate;
  const rawParts = await split(new Uint8Array(dek), 5, 3);
  const rawThree = rawParts.slice(0, 3);

  check((await verifyShare(crypto, record, placement, candidate)) === undefined, 'verifyShare accepts a good share');
  check(equalBytes(await combine(rawThree), dek), 'raw combine rebuilds the secret');
  check(equalBytes((await rebuildDek({ crypto, set: record, kcv, fetch })).dek, dek), 'rebuildDek rebuilds the DEK');

  return {
    name: 'shares 32 B, n=5 k=3',
    cases: [
      { id: 'shares.split.raw', label: 'raw shamir split', fn: () => split(new Uint8Array(dek), 5, 3) },
      {
        id: 'shares.split.kos',
        label: 'KOS splitDek (+placement, digests)',
        baseline: 'shares.split.raw',
        fn: split5of3,
      },
      {
        id: 'shares.verify.kos',
        label: 'KOS verifyShare (one share)',
        fn: () => verifyShare(crypto, record, placement, candidate),
      },
      { id: 'shares.combine.raw', label: 'raw shamir combine (k=3)', fn: () => combine(rawThree) },
      {
        id: 'shares.rebuild.kos',
        label: 'KOS rebuildDek (3 of 5, verify+kcv)',
        baseline: 'shares.combine.raw',
        fn: () => rebuildDek({ crypto, set: record, kcv, fetch }),
      },
      {
        id: 'shares.rebuild-timers.kos',
        label: '  same, with KeyManager timers',
        baseline: 'shares.combine.raw',
        fn: () => rebuildDek({ crypto, set: record, kcv, fetch, timeoutMs: 5000, hedgeAfterMs: 250 }),
      },
    ],
  };
}

// ------------------------------------------------------------------ targets

interface Target {
  readonly name: string;
  readonly caseId: string;
  readonly kind: 'target' | 'info';
  /** What is compared with the threshold. */
  readonly metric: 'throughput-ratio' | 'time-ratio';
  readonly value: number;
  readonly threshold: number;
  readonly pass: boolean;
}

function targets(results: readonly Result[]): Target[] {
  const byId = new Map(results.map((r) => [r.id, r]));
  const ratioOf = (id: string) => byId.get(id)?.ratio ?? Number.NaN;
  const out: Target[] = [];
  const mib = 1024 * KIB;
  for (const [id, kind] of [
    [`open.kos.${mib}`, 'target'],
    [`open.kos-binary.${mib}`, 'info'],
    [`open.kos-json.${mib}`, 'info'],
  ] as const) {
    const value = 1 / ratioOf(id);
    out.push({
      name: 'open 1 MiB throughput >= 0.8x raw',
      caseId: id,
      kind,
      metric: 'throughput-ratio',
      value,
      threshold: 0.8,
      pass: value >= 0.8,
    });
  }
  for (const [id, kind] of [
    [`open.kos.${KIB}`, 'target'],
    [`open.kos-binary.${KIB}`, 'info'],
    [`open.kos-json.${KIB}`, 'info'],
    [`open.km.${KIB}`, 'info'],
  ] as const) {
    const value = ratioOf(id);
    out.push({
      name: 'open 1 KiB time <= 3x raw',
      caseId: id,
      kind,
      metric: 'time-ratio',
      value,
      threshold: 3,
      pass: value <= 3,
    });
  }
  return out;
}

// ------------------------------------------------------------------ output

function printTable(results: readonly Result[], checks: readonly Target[], meta: Record<string, unknown>): void {
  const lines: string[] = [];
  lines.push(`@kos/core benchmark — ${meta.node} on ${meta.cpuModel} (${meta.cpus} logical CPUs), ${meta.date}`);
  lines.push(
    `medians of ${SAMPLE_TARGET_MS} ms batches; spread = (p75-p25)/median; KOS/raw = median of per-round paired time ratios; MB/s = 10^6 B/s of plaintext`,
  );
  lines.push('');
  const rows: string[][] = [['group', 'case', 'µs/op', 'spread', 'MB/s', 'KOS/raw', 'samples x batch']];
  let previous = '';
  for (const r of results) {
    rows.push([
      r.group === previous ? '' : r.group,
      r.label,
      fixed(r.usPerOp, r.usPerOp < 100 ? 2 : 1),
      `±${fixed(((r.p75Ns - r.p25Ns) / r.medianNs) * 50, 0)}%`,
      fixed(r.mbPerSec, 0),
      r.ratio === null ? '' : `${fixed(r.ratio, 2)}x`,
      `${r.samples} x ${r.batch}`,
    ]);
    previous = r.group;
  }
  lines.push(table(rows, new Set([2, 3, 4, 5, 6])));
  lines.push('');
  lines.push('Targets (kind "info" = same check on another path, not a target):');
  const byId = new Map(results.map((r) => [r.id, r]));
  const targetRows = checks.map((t) => [
    t.pass ? 'PASS' : 'FAIL',
    t.kind,
    t.name,
    byId.get(t.caseId)?.label ?? t.caseId,
    t.metric === 'throughput-ratio' ? `${fixed(t.value, 2)}x of raw throughput` : `${fixed(t.value, 2)}x raw time`,
  ]);
  lines.push(table(targetRows, new Set()));
  const gating = checks.filter((t) => t.kind === 'target');
  const passed = gating.filter((t) => t.pass).length;
  lines.push('');
  lines.push(
    `RESULT: ${passed}/${gating.length} targets PASS${passed === gating.length ? '' : ' — see FAIL lines above'}`,
  );
  process.stdout.write(`${lines.join('\n')}\n`);
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const started = performance.now();
  const metadata = createMemoryMetadataStore();
  const keys = new KeyManager({
    metadata,
    nodes: Array.from({ length: 5 }, (_, i) => createMemoryShareStore({ nodeId: `node-${i + 1}` })),
  });
  await keys.createKey(KID);

  const { groups, headerBytes } = await aeadGroups(keys);
  groups.push(await shareGroup());

  const results: Result[] = [];
  for (const group of groups) {
    log(`bench: ${group.name} (${group.cases.length} cases)…`);
    results.push(...(await runGroup(group, SAMPLER)));
  }
  const checks = targets(results);
  const cpus = osCpus();
  const meta = {
    node: process.version,
    v8: process.versions.v8,
    openssl: process.versions.openssl,
    platform: `${process.platform}-${process.arch}`,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cpus: cpus.length,
    loadavg: loadavg().map((v) => Number(v.toFixed(2))),
    date: new Date().toISOString(),
    quick: QUICK,
    aadBytes: headerBytes,
    sampleTargetMs: SAMPLE_TARGET_MS,
    perCaseMs: PER_CASE_MS,
    opsRun: sink.ops,
    durationS: Number(((performance.now() - started) / 1e3).toFixed(1)),
  };
  if (JSON_OUTPUT) {
    process.stdout.write(`${JSON.stringify({ meta, results, targets: checks }, null, 2)}\n`);
  } else {
    printTable(results, checks, meta);
    log(`bench: done in ${meta.durationS} s`);
  }
}

await main();
