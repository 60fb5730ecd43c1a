import { readFile } from 'node:fs/promises';
import { KosError } from '@kos/core';
import { type CryptoKey, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import { writeFileAtomic } from '../atomic-file.js';

/** An Ed25519 key pair kept as a private JWK file (mode 0600). */
export interface KeyPairFromFile {
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  readonly publicJwk: JWK;
}

async function fromJwk(jwk: JWK, path: string): Promise<KeyPairFromFile> {
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.d !== 'string') {
    throw new KosError('ERR_INVALID_OPTIONS', `${path} must hold an Ed25519 private JWK`);
  }
  const { d: _private, ...publicJwk } = jwk;
  return {
    privateKey: (await importJWK(jwk, 'EdDSA')) as CryptoKey,
    publicKey: (await importJWK(publicJwk, 'EdDSA')) as CryptoKey,
    publicJwk: { ...publicJwk, alg: 'EdDSA', use: 'sig' },
  };
}

/** Reads an Ed25519 private JWK file. */
export async function readKeyPairFile(path: string): Promise<KeyPairFromFile> {
  let jwk: JWK;
  try {
    jwk = JSON.parse(await readFile(path, 'utf8')) as JWK;
  } catch (error) {
    throw new KosError('ERR_INVALID_OPTIONS', `cannot read the key file ${path}`, { cause: error });
  }
  return fromJwk(jwk, path);
}

/** Reads the key file, or creates it (Ed25519, mode 0600, written atomically) if it does not exist. */
export async function loadOrCreateKeyPairFile(path: string, keyId: string): Promise<KeyPairFromFile> {
  try {
    return await readKeyPairFile(path);
  } catch (error) {
    if ((error as { cause?: { code?: string } }).cause?.code !== 'ENOENT') throw error;
  }
  const { privateKey } = await generateKeyPair('EdDSA', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: keyId };
  await writeFileAtomic(path, JSON.stringify(jwk), { mode: 0o600 });
  return readKeyPairFile(path);
}
