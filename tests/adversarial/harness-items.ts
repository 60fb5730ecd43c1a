import type { MediumKeyReference } from '@kos/core';
import type { HighTierItem, MediumTierItem } from '@kos/core/client';
import { expect } from 'vitest';
import type { Deployment, HttpAnswer } from '../../test-support/deployment.js';
import type { Framework } from '../../test-support/frameworks.js';

/** Reads `path` as `clientId` with `score` and returns the medium-tier item of the record. */
export async function mediumItem(
  d: Deployment,
  framework: Framework,
  clientId: string,
  score: number,
  path: string,
): Promise<MediumTierItem & { key: MediumKeyReference }> {
  const answer = await d.call(framework, path, { token: await d.mintIdentity({ clientId, score }) });
  expect(answer.status, answer.text).toBe(200);
  expect(answer.headers.get('kos-tier')).toBe('medium');
  const item = answer.body.data as MediumTierItem & { key: MediumKeyReference };
  d.remember(`grant of ${clientId} (${item.key.grant.slice(-8)})`, item.key.grant);
  return item;
}

/** Reads `path` as `clientId` with a high score and returns the high-tier item. */
export async function highItem(d: Deployment, framework: Framework, clientId: string, path: string) {
  const answer = await d.call(framework, path, { token: await d.mintIdentity({ clientId, score: 95 }) });
  expect(answer.status, answer.text).toBe(200);
  expect(answer.headers.get('kos-tier')).toBe('high');
  return answer.body.data as HighTierItem;
}

/** GET a share URL with a credential. */
export function getShare(d: Deployment, url: string, authorization: string): Promise<HttpAnswer> {
  return d.fetch(url, { headers: { authorization } });
}

/** A JWS with `alg: none` (no signature). */
export function unsignedJwt(header: Record<string, unknown>, payload: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ ...header, alg: 'none' })}.${part(payload)}.`;
}

/** The claims of a JWT (no verification). */
// biome-ignore lint/suspicious/noExplicitAny: claims are read field by field
export function claimsOf(token: string): Record<string, any> {
  return JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString('utf8'));
}

/** Secrets an attacker might try as an HMAC key made from a public Ed25519 JWK. */
export function hmacKeysFromPublicJwk(jwk: Record<string, unknown>): Uint8Array[] {
  const { x, crv, kty } = jwk as { x: string; crv: string; kty: string };
  return [
    new Uint8Array(Buffer.from(x, 'base64url')),
    new Uint8Array(Buffer.from(x, 'utf8')),
    new Uint8Array(Buffer.from(JSON.stringify(jwk), 'utf8')),
    new Uint8Array(Buffer.from(JSON.stringify({ crv, kty, x }), 'utf8')),
  ];
}
