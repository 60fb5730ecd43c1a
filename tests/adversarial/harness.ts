import { afterAll, afterEach, beforeAll, describe, expect } from 'vitest';
import { type Deployment, type HttpAnswer, startDeployment } from '../../test-support/deployment.js';
import { findRedisServerBinary, REDIS_SKIP_WARNING } from '../../test-support/redis-server.js';

const haveRedis = findRedisServerBinary() !== undefined;
if (!haveRedis) console.warn(REDIS_SKIP_WARNING);
/** `describe` when redis-server is installed; skipped (loudly) otherwise, and failing under CI=true. */
export const describeDeployment = (haveRedis ? describe : describe.skip) as typeof describe;

/** A JWS compact serialisation (a token or grant) of any kind. */
const JWT = /eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}/;
const isKeyMaterial = (label: string) => label.startsWith('DEK ') || label.startsWith('share ');

/**
 * Starts one deployment for the file and, after every test, scans for secrets: the answers the
 * test got (no DEK or share bytes, except in a high-tier answer or a node's 200 to a valid
 * credential; no token in any refusal), the node processes' stderr, the KOS audit file and
 * the nodes' audit files (no DEK, share, grant or token of any kind).
 */
export function useDeployment(): { readonly d: Deployment } {
  const holder = {} as { d: Deployment };
  beforeAll(async () => {
    holder.d = await startDeployment();
  }, 60_000);
  afterEach(async () => {
    const d = holder.d;
    if (!d) return;
    await d.captureSecrets();
    const answers = d.takeAnswers();
    const scanned = answers.filter(
      ({ source, text }) =>
        !(/ → 200$/.test(source) && (/^kos-tier: high$/m.test(text) || /\/v1\/shares\//.test(source))),
    );
    expect(d.findSecrets(scanned, { only: isKeyMaterial }), 'key or share bytes in an answer').toEqual([]);
    const refusals = answers.filter(({ source }) => !/ → [23]\d\d$/.test(source));
    expect(d.findSecrets(refusals), 'a secret in a refusal').toEqual([]);
    expect(
      refusals.filter(({ text }) => JWT.test(text)).map(({ source }) => source),
      'a token in a refusal',
    ).toEqual([]);
    const logs = await d.logs();
    expect(d.findSecrets(logs), 'a secret in a log or audit file').toEqual([]);
    // Audit checkpoints carry their own signature (a JWS over seq and hash): not a credential.
    const withoutCheckpoints = logs.map(({ source, text }) => ({
      source,
      text: text.replace(/"jws":"([A-Za-z0-9_-]+)\.[A-Za-z0-9_.-]+"/g, (whole, header: string) =>
        JSON.parse(Buffer.from(header, 'base64url').toString('utf8')).typ === 'kos-audit-checkpoint'
          ? '"jws":"<checkpoint>"'
          : whole,
      ),
    }));
    expect(
      withoutCheckpoints.filter(({ text }) => JWT.test(text)).map(({ source }) => source),
      'a token in a log or audit file',
    ).toEqual([]);
  }, 30_000);
  afterAll(async () => {
    await holder.d?.stop();
  }, 30_000);
  return {
    get d() {
      return holder.d;
    },
  };
}

/** Asserts a refusal: status, the one error body shape and its code. */
export function expectRefused(answer: HttpAnswer, status: number, code: string): void {
  expect(answer.body?.error?.code, answer.text).toBe(code);
  expect(answer.status, answer.text).toBe(status);
  expect(Object.keys(answer.body)).toEqual(['error']);
  expect(Object.keys(answer.body.error).sort()).toEqual(['code', 'message']);
}
