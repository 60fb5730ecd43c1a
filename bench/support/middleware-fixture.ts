/**
 * What `bench/middleware.bench.ts` and its server child (`middleware-server.ts`) share: the
 * record, the route, the identity issuer/audience, the client ids of each case and the KOS
 * runtime (configured, memory metadata and share stores, as in the conformance tests).
 */
import { createAccessControl } from '@kos/core';
import {
  createKosRuntime,
  createMemoryMetadataStore,
  createMemoryShareStore,
  type KosRuntime,
} from '@kos/kms-adapters';
import { generateKeyPair, type JWK } from 'jose';

export const FRAMEWORKS = ['express', 'hono', 'koa'] as const;
export type Framework = (typeof FRAMEWORKS)[number];
/** bare: no middleware; kos: kosMiddleware; floor / floor-low: the reference middlewares of `floor-middleware.ts`. */
export type ServerMode = 'bare' | 'kos' | 'floor' | 'floor-low';

export const ISSUER = 'https://idp.bench';
export const AUDIENCE = 'records-api';
export const KID = 'records';
export const RECORD_ID = 'r1';
export const RECORD_PATH = `/records/${RECORD_ID}`;
export const RECORD_BYTES = 1024;
/** Env var that carries the identity issuer's public JWK (JSON) to a `kos` server child. */
export const IDENTITY_ENV = 'KOS_BENCH_IDENTITY_JWK';

/**
 * One client id per KOS case: a client's tier is stable in real use, and a low/high request of
 * a client that holds medium-tier share sets would drop them (`dropSetsIfAny`), so sharing an id
 * across interleaved cases would measure re-provisioning instead of the hot path.
 */
export const CLIENTS = {
  low: 'bench-low',
  high: 'bench-high',
  medium: 'bench-medium',
  mediumBound: 'bench-medium-bound',
} as const;

/** The plaintext record: a JSON object whose `JSON.stringify` is exactly RECORD_BYTES bytes. */
export function benchRecord(): Record<string, unknown> {
  const base = {
    id: RECORD_ID,
    patient: 'p-0000017',
    diagnosis: 'influenza A',
    visits: [3, 14, 27],
    active: true,
    notes: '',
  };
  const filler = 'The quick brown fox jumps over the lazy dog. ';
  const missing = RECORD_BYTES - JSON.stringify(base).length;
  const notes = filler.repeat(Math.ceil(missing / filler.length)).slice(0, missing);
  const record = { ...base, notes };
  if (JSON.stringify(record).length !== RECORD_BYTES) throw new Error('bench record is not 1 KiB');
  return record;
}

/**
 * A configured KOS runtime: identity tokens from ISSUER (EdDSA, verified with `identityJwk`),
 * memory metadata, five memory share stores, default-deny access with every bench client
 * granted KID, default tier policy (deny below 10).
 */
export async function buildBenchRuntime(identityJwk: JWK): Promise<KosRuntime> {
  const signing = await generateKeyPair('EdDSA', { extractable: true });
  const metadata = createMemoryMetadataStore();
  const access = createAccessControl({ metadata, defaultDeny: true, cacheMs: 1000 });
  for (const client of Object.values(CLIENTS)) await access.grant(client, KID);
  const nodes = Array.from({ length: 5 }, (_, i) => createMemoryShareStore({ nodeId: `node-${i + 1}` }));
  return createKosRuntime({
    config: {
      issuer: 'https://kos.bench',
      signingKey: signing.privateKey,
      identity: { key: identityJwk, algorithms: ['EdDSA'], issuer: ISSUER, audience: AUDIENCE },
      metadata,
      nodes: nodes.map((store) => ({ nodeId: store.nodeId, store, publicUrl: `https://kms.bench/${store.nodeId}` })),
      access,
      tiers: { denyBelow: 10 },
      autoCreateKeys: true,
    },
  });
}
