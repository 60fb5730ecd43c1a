// A tour of @kos/core on real file-backed stores in ./.kos (kept between runs).
// Until the framework adapters land, `npm start` runs this. Key and share bytes are never printed.
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  createAccessControl,
  createTierPolicy,
  encodeEnvelope,
  isKosError,
  KeyManager,
  type KeyManagerEvent,
  utf8,
} from '@kos/core';
import { createFileMetadataStore, createFileShareStore } from '@kos/kms-adapters';

const root = resolve(process.env.KOS_DIR ?? join(process.env.INIT_CWD ?? process.cwd(), '.kos'));
await mkdir(root, { recursive: true, mode: 0o700 });
const metadata = createFileMetadataStore({ dir: join(root, 'metadata') });
const nodes = Array.from({ length: 5 }, (_, i) =>
  createFileShareStore({ nodeId: `node-${i + 1}`, dir: join(root, 'nodes', `node-${i + 1}`) }),
);
const tierPolicy = createTierPolicy();
const log = (event: KeyManagerEvent) => console.log(`  [event] ${JSON.stringify(event)}`);
const keys = new KeyManager({ metadata, nodes, tierPolicy, onEvent: log });
const access = createAccessControl({ metadata });
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

console.log(`KOS core demo — stores in ${root}`);
console.log(`5 file-backed KMS nodes, system share set n=${keys.systemShares.n} k=${keys.systemShares.k}\n`);

if (!(await keys.listKeys()).includes('records')) await keys.createKey('records');
const record = { id: 'rec-1', patient: 'Ada Lovelace', diagnosis: 'analytical' };
const envelope = await keys.seal('records', utf8(JSON.stringify(record)), { dataId: record.id });
console.log('1. A record sealed under the primary version (JSON form, as a route would store it):');
console.log(`   ${JSON.stringify(encodeEnvelope(envelope, 'json')).slice(0, 150)}…\n`);

console.log('2. What each client would get, decided from its verified score:');
await access.grant('client-a', 'records');
for (const [clientId, score] of [
  ['client-a', 92],
  ['client-a', 65],
  ['client-a', 50],
  ['client-a', 30],
] as const) {
  const decision = tierPolicy.decide(score);
  if (decision.tier === 'high') {
    const dek = await keys.getDek('records', envelope.header.ver);
    console.log(`   score ${score} → high (${decision.band}): envelope + the ${dek.length}-byte DEK`);
    dek.fill(0);
  } else if (decision.tier === 'medium') {
    const set = await keys.provisionClientSet('records', envelope.header.ver, clientId, {
      n: decision.n as number,
      k: decision.k as number,
    });
    const nodesList = set.placements.map((p) => `${p.nodeId}(x=${p.x})`).join(', ');
    console.log(`   score ${score} → medium (${decision.band}): k=${set.k} of n=${set.n} shares on ${nodesList}`);
    const rebuilt = await keys.rebuildFromSet(set);
    console.log(`     the client's own share set rebuilds the DEK and passes the key check (${rebuilt.length} bytes)`);
    rebuilt.fill(0);
  } else {
    const plaintext = text(await keys.open(envelope, { dataId: record.id }));
    console.log(`   score ${score} → low (${decision.band}): plaintext only: ${plaintext}`);
  }
}
try {
  tierPolicy.decide(Number.NaN);
} catch (error) {
  if (isKosError(error)) console.log(`   score NaN → refused: ${error.code}`);
}

console.log('\n3. Rotation: a fresh DEK; the old envelope still opens, new data uses the new version.');
const next = await keys.rotate('records', { reason: 'demo' });
const fresh = await keys.seal('records', utf8('{"note":"after rotation"}'), { dataId: 'rec-2' });
keys.clearCache();
console.log(
  `   primary is now v${next.version}; old envelope (v${envelope.header.ver}) opens: ${text(await keys.open(envelope))}`,
);
console.log(`   new envelope uses v${fresh.header.ver}`);
console.log(
  `\nKeys: ${(await keys.listKeys()).join(', ')}; versions of "records": ${(await keys.getKey('records')).versions.map((v) => `v${v.version}:${v.state}`).join(' ')}`,
);
console.log('Run `npm test` for the full suite.');
