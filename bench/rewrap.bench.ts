// Rewrap at scale (issue 6): N sealed 1 KiB records in a JSON-lines file are moved to the new
// primary version with `rewrapRecords` (what `kos rewrap` runs), beside raw node:crypto
// AES-256-GCM open+seal of the same payloads in the same run. Target: >= 50% of raw throughput.
// Run: npm run bench:rewrap [-- --records 100000] [--profile rewrap.cpuprofile (CPU profile of the rewrap alone)]
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeEnvelope, KeyManager, utf8 } from '@kos/core';
import { createMemoryMetadataStore, createMemoryShareStore, rewrapRecords } from '@kos/kms-adapters';

const args = process.argv.slice(2);
const at = args.indexOf('--records');
const RECORDS = at === -1 ? 100_000 : Number(args[at + 1]);
const PAYLOAD = 1024;
const profileAt = args.indexOf('--profile');
/** `--profile <file>`: a CPU profile of the rewrap alone (setup and the raw baseline left out). */
const PROFILE = profileAt === -1 ? undefined : args[profileAt + 1];

async function profiled<T>(run: () => Promise<T>): Promise<T> {
  if (!PROFILE) return run();
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  try {
    return await run();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    await writeFile(PROFILE, JSON.stringify(profile));
    session.disconnect();
  }
}

function rawOpenSeal(count: number): number {
  const key = randomBytes(32);
  const aad = randomBytes(80);
  const sealed: Array<{ iv: Buffer; ct: Buffer; tag: Buffer }> = [];
  for (let i = 0; i < Math.min(count, 1000); i++) {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(aad);
    const ct = Buffer.concat([cipher.update(randomBytes(PAYLOAD)), cipher.final()]);
    sealed.push({ iv, ct, tag: cipher.getAuthTag() });
  }
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    const item = sealed[i % sealed.length] as { iv: Buffer; ct: Buffer; tag: Buffer };
    const decipher = createDecipheriv('aes-256-gcm', key, item.iv);
    decipher.setAAD(aad);
    decipher.setAuthTag(item.tag);
    const plain = Buffer.concat([decipher.update(item.ct), decipher.final()]);
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(aad);
    Buffer.concat([cipher.update(plain), cipher.final()]);
    cipher.getAuthTag();
  }
  return count / ((performance.now() - started) / 1000);
}

const dir = await mkdtemp(join(tmpdir(), 'kos-rewrap-bench-'));
try {
  const keys = new KeyManager({
    metadata: createMemoryMetadataStore(),
    nodes: Array.from({ length: 5 }, (_, i) => createMemoryShareStore({ nodeId: `node-${i + 1}` })),
  });
  await keys.createKey('records');
  const input = join(dir, 'records.jsonl');
  const lines: string[] = [];
  const body = 'x'.repeat(PAYLOAD - 20);
  for (let i = 0; i < RECORDS; i++) {
    const envelope = await keys.seal('records', utf8(JSON.stringify({ i, body })), { dataId: `r${i}` });
    lines.push(JSON.stringify({ id: `r${i}`, data: encodeEnvelope(envelope, 'json') }));
  }
  await writeFile(input, `${lines.join('\n')}\n`);
  lines.length = 0;
  await keys.rotate('records');

  const rawBefore = rawOpenSeal(Math.min(RECORDS, 50_000));
  const rssBefore = process.memoryUsage().rss;
  const started = performance.now();
  const result = await profiled(() => rewrapRecords({ keys, input, output: join(dir, 'out.jsonl'), batchSize: 512 }));
  const seconds = (performance.now() - started) / 1000;
  const rssAfter = process.memoryUsage().rss;
  const rawAfter = rawOpenSeal(Math.min(RECORDS, 50_000));
  const raw = (rawBefore + rawAfter) / 2;
  const rate = result.records / seconds;
  console.log(
    `rewrap at scale — ${RECORDS} records of ${PAYLOAD} B (JSON lines, JSON-form envelopes), file in and out, fsync per batch of 512`,
  );
  console.log(
    `  raw node:crypto AES-256-GCM open+seal: ${Math.round(raw)} ops/s (before ${Math.round(rawBefore)}, after ${Math.round(rawAfter)})`,
  );
  console.log(
    `  kos rewrapRecords: ${Math.round(rate)} records/s (${seconds.toFixed(2)} s, ${result.envelopes} envelopes)`,
  );
  console.log(`  RSS ${Math.round(rssBefore / 2 ** 20)} MiB → ${Math.round(rssAfter / 2 ** 20)} MiB`);
  console.log(
    `${rate / raw >= 0.5 ? 'PASS' : 'FAIL'}  rewrap >= 0.5x raw open+seal throughput: ${(rate / raw).toFixed(2)}x`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
