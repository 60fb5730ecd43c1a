import { createNodeCryptoProvider, decodeEnvelope, encodeEnvelope, openWithKey, sealWithKey, utf8, createTokenVerifier, isKosError } from '@kos/core';
import { generateKeyPair, SignJWT } from 'jose';
import fc from 'fast-check';
import { it } from 'vitest';

it('probe', async () => {
  const crypto = createNodeCryptoProvider();
  const key = new Uint8Array(32).fill(7);
  const env = await sealWithKey({ crypto, key, kid: 'k', version: 1, dataId: 'a\uD800', plaintext: utf8('x') });
  const json = encodeEnvelope(env, 'json');
  const moved = decodeEnvelope({ ...json, did: 'a\uFFFD' });
  const out = await openWithKey({ crypto, key, envelope: moved, dataId: 'a\uFFFD' });
  console.log('moved opened', new TextDecoder().decode(out));
  const bin = decodeEnvelope(encodeEnvelope(env, 'binary'));
  console.log('binary did', JSON.stringify(bin.header.did));

  const { privateKey, publicKey } = await generateKeyPair('EdDSA');
  const v = createTokenVerifier({ nodeId: 'node-1', issuer: 'iss', keys: publicKey });
  const now = Math.floor(Date.now() / 1000);
  const sign = (claims: Record<string, unknown>, typ = 'kos-grant+jwt') => new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ }).sign(privateKey);
  const base = { iss: 'iss', aud: ['node-1', 42, { x: 1 }], sub: 'c1', iat: now, exp: now + 30, jti: 'x'.repeat(16), key: 'k', ver: 2 ** 40, set: 's', shr: ['s1'] , cnf: { jkt: '' } };
  try { console.log('grant', await v.verifyGrant(await sign(base))); } catch (e) { console.log('grant err', e); }
  try { console.log('svc', await v.verifyServiceToken(await sign({ ...base, aud: ['node-1', null] }, 'kos-service+jwt'))); } catch (e) { console.log('svc err', e); }
  console.log(fc.sample(fc.string({ unit: 'binary', maxLength: 4 }), 10).map((s) => JSON.stringify(s)));
});
