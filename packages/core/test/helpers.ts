import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { isKosError, type KosErrorCode } from '../src/index.js';

export function hex(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'hex'));
}

export function loadVectors<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`./vectors/wycheproof/${name}`, import.meta.url), 'utf8')) as T;
}

/** Awaits `action` and asserts it rejects (or throws) a KosError with `code`. */
export async function expectKosError(action: () => unknown, code: KosErrorCode): Promise<void> {
  let caught: unknown;
  try {
    await action();
  } catch (error) {
    caught = error;
  }
  expect(caught, `expected ${code}`).toBeDefined();
  if (!isKosError(caught, code)) {
    throw new Error(`expected KosError ${code}, got ${String((caught as { code?: string })?.code ?? caught)}`);
  }
}

/** Awaits `action` and returns the KosError code it failed with (fails the test on success or a foreign error). */
export async function kosErrorCode(action: () => unknown): Promise<KosErrorCode> {
  try {
    await action();
  } catch (error) {
    if (isKosError(error)) return error.code;
    throw new Error(`expected a KosError, got ${String(error)}`);
  }
  throw new Error('expected a KosError, but the call succeeded');
}
