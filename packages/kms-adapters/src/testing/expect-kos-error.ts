import { isKosError } from '@kos/core';
import { expect } from 'vitest';

/**
 * Asserts that `call` rejects (or throws) a KosError with `code`. A resolved call, another
 * error class or another code all fail, and the failure shows what came instead.
 */
export async function expectKosError(call: () => Promise<unknown>, code: string): Promise<void> {
  let outcome: unknown;
  try {
    outcome = { resolved: await call() };
  } catch (error) {
    outcome = isKosError(error) ? error.code : error;
  }
  expect(outcome).toBe(code);
}

/** Waits `ms` milliseconds of real time (TTL tests cannot fake the clock of another process). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolveDelay) => setTimeout(resolveDelay, ms));
}
