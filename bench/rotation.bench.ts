// Rotation at scale (issue 6): create N keys, then rotate all N, with 5 KMS nodes on Redis
// (share stores and metadata on one private redis-server with AOF, appendfsync always).
// Prints keys/s for each phase and checks the target: rotate 10,000 keys in under 10 s.
// Run: npm run bench:rotation [-- --keys 10000 --concurrency 64]
import { KeyManager } from '@kos/core';
import { createRedisMetadataStore, createRedisShareStore } from '@kos/kms-adapters';
import { Redis } from 'ioredis';
import { findRedisServerBinary, startRedisServer } from '../test-support/redis-server.js';

const args = process.argv.slice(2);
const option = (name: string, fallback: number) => {
  const at = args.indexOf(`--${name}`);
  return at === -1 ? fallback : Number(args[at + 1]);
};
const KEYS = option('keys', 10_000);
const CONCURRENCY = option('concurrency', 64);
// `--everysec`: AOF fsync once a second (the common production setting) instead of on every write.
const EVERYSEC = args.includes('--everysec');
const TARGET_SECONDS = 10;

if (!findRedisServerBinary()) {
  console.log('REDIS PARTS SKIPPED: redis-server not installed');
  process.exit(0);
}
const server = await startRedisServer({
  persistence: 'aof',
  ...(EVERYSEC ? { extraArgs: ['--appendfsync', 'everysec'] } : {}),
});
if (!server) process.exit(0);
const redis = new Redis(server.url, { enableAutoPipelining: true, maxRetriesPerRequest: 2 });
try {
  const metadata = createRedisMetadataStore({ redis, keyPrefix: 'bench:', requirePersistence: 'refuse' });
  const nodes = Array.from({ length: 5 }, (_, i) =>
    createRedisShareStore({
      nodeId: `node-${i + 1}`,
      redis,
      keyPrefix: `bench:n${i + 1}:`,
      requirePersistence: 'refuse',
    }),
  );
  const keys = new KeyManager({ metadata, nodes, systemShares: { n: 5, k: 3 }, dekCache: { maxEntries: 100 } });
  const kids = Array.from({ length: KEYS }, (_, i) => `key-${i}`);
  const rssBefore = process.memoryUsage().rss;

  let started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < kids.length) await keys.createKey(kids[next++] as string);
    }),
  );
  const createSeconds = (performance.now() - started) / 1000;

  started = performance.now();
  const { rotated, failed } = await keys.rotateMany(kids, { concurrency: CONCURRENCY });
  const rotateSeconds = (performance.now() - started) / 1000;
  const rssAfter = process.memoryUsage().rss;

  console.log(
    `rotation at scale — ${KEYS} keys, 5 Redis-backed nodes (n=5, k=3), AOF fsync ${EVERYSEC ? 'everysec' : 'always'}, concurrency ${CONCURRENCY}`,
  );
  console.log(`  create ${KEYS} keys: ${createSeconds.toFixed(2)} s (${Math.round(KEYS / createSeconds)} keys/s)`);
  console.log(
    `  rotate ${rotated.length} keys: ${rotateSeconds.toFixed(2)} s (${Math.round(rotated.length / rotateSeconds)} keys/s), ${failed.length} failed`,
  );
  console.log(`  RSS ${Math.round(rssBefore / 2 ** 20)} MiB → ${Math.round(rssAfter / 2 ** 20)} MiB`);
  const scaled = (rotateSeconds * 10_000) / KEYS;
  console.log(
    `${scaled < TARGET_SECONDS && failed.length === 0 ? 'PASS' : 'FAIL'}  rotate 10,000 keys < ${TARGET_SECONDS} s (measured ${rotateSeconds.toFixed(2)} s for ${KEYS})`,
  );
} finally {
  redis.disconnect();
  await server.stop();
}
