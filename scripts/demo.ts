// `npm run demo`: starts the Express example on the embedded default (in a temporary folder),
// then a scripted client writes one record and reads it as a low-, medium- and high-tier
// client, printing what each received and what it could open. Exits 0 when all three worked.
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createOpener, generateClientKeyPair } from '@kos/core/client';
import { createApp } from '@kos/example-express';

const dir = await mkdtemp(join(tmpdir(), 'kos-demo-'));
const { app, kos, runtime } = await createApp({ dir });
const server = app.listen(0, '127.0.0.1');
await new Promise((resolve) => server.once('listening', resolve));
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const mint = runtime.mintDevToken as NonNullable<typeof runtime.mintDevToken>;
const record = { patient: 'Ada Lovelace', diagnosis: 'analytical engine fever' };
let failures = 0;

/** What a client received, described without printing key material. */
function describe(data: Record<string, unknown>): string {
  if (data.kosTier === 'high') {
    return data.dekJwe
      ? 'envelope + the DEK wrapped to the client key (compact JWE, ECDH-ES) [redacted]'
      : 'envelope + the 32-byte DEK (base64url) [redacted]';
  }
  if (data.kosTier === 'medium') {
    const key = data.key as { k: number; shares: Array<{ nodeId: string }>; dpop: boolean };
    const nodes = key.shares.map((share) => share.nodeId).join(', ');
    return `envelope + references to k=${key.k} of n=${key.shares.length} shares on ${nodes}, one grant${key.dpop ? ' bound to the client key (DPoP)' : ''} [grant redacted]`;
  }
  return JSON.stringify(data);
}

try {
  console.log(`KOS demo: Express example on ${base} (embedded default in ${dir})\n`);
  const writer = await mint({ clientId: 'demo-writer', score: 95 });
  const created = await fetch(`${base}/records`, {
    method: 'POST',
    headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/json' },
    body: JSON.stringify(record),
  });
  const { id } = (await created.json()) as { id: string };
  console.log(`wrote record ${id}: ${JSON.stringify(record)}\n`);

  for (const [label, score, withKey] of [
    ['low', 30, false],
    ['medium', 65, false],
    ['medium, key-bound (DPoP)', 70, true],
    ['high', 90, false],
    ['high, key-wrapped (JWE)', 92, true],
  ] as const) {
    const key = withKey ? await generateClientKeyPair() : undefined;
    const token = await mint({ clientId: `demo-${score}`, score, publicJwk: key?.publicJwk as never });
    const response = await fetch(`${base}/records/${id}`, { headers: { authorization: `Bearer ${token}` } });
    const body = (await response.json()) as { data: Record<string, unknown> };
    console.log(
      `score ${score} → ${label}: HTTP ${response.status}, kos-tier: ${response.headers.get('kos-tier')}, cache-control: ${response.headers.get('cache-control') ?? '-'}`,
    );
    console.log(`  received: ${describe(body.data)}`);
    const opener = createOpener(key ? { clientKey: key } : {});
    const opened = (await opener.openBody(body)) as { data: unknown };
    opener.dispose();
    const ok = JSON.stringify(opened.data) === JSON.stringify(record);
    if (!ok) failures++;
    console.log(
      `  ${body.data.kosTier ? 'opened by the client' : 'plaintext from the server'}: ${JSON.stringify(opened.data)} ${ok ? '✓' : '✗'}\n`,
    );
  }
  const anonymous = await fetch(`${base}/records/${id}`);
  console.log(`no token → HTTP ${anonymous.status} ${JSON.stringify(await anonymous.json())}`);
  if (anonymous.status !== 401) failures++;
} finally {
  server.close();
  await kos.close();
  await rm(dir, { recursive: true, force: true });
}
console.log(failures === 0 ? '\nAll tiers worked.' : `\n${failures} check(s) failed.`);
process.exit(failures === 0 ? 0 : 1);
