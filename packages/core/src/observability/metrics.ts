import { isKosError } from '../errors.js';
import type { KeyRecord } from '../keys/key-record.js';
import type { Tier } from '../trust/tier-policy.js';

/**
 * How one share fetch from a KMS node ended:
 * - `ok`: the node answered with a share (checked against the set record afterwards);
 * - `missing`: the node answered that it has no such share;
 * - `error`: the node failed (unreachable, bad status, bad body…);
 * - `timeout`: the fetch was aborted after the per-node timeout;
 * - `cancelled`: the fetch was aborted because k good shares had already arrived (hedging).
 */
export type ShareFetchOutcome = 'ok' | 'missing' | 'error' | 'timeout' | 'cancelled';

/** What a metrics sink may read from the key registry (ids and creation times only). */
export interface KeyRegistryReader {
  listKeys(): Promise<string[]>;
  getKey(kid: string): Promise<KeyRecord>;
}

/**
 * Where KOS reports what it does, for dashboards and alerts. Called on the hot path: an
 * implementation must be cheap and must never throw. Arguments carry only non-secret,
 * bounded values: tiers, stable error codes, key ids and node ids — never client ids,
 * tokens, shares or key bytes.
 */
export interface KosMetrics {
  /** A request was identified and decided into a tier. */
  decision(tier: Tier): void;
  /** A response left with key material in the tier's form (plaintext, share references or a DEK). */
  keyRelease(tier: Tier): void;
  /** A DEK was wanted: served from the cache (`true`) or rebuilt from shares (`false`). */
  dekCache(hit: boolean): void;
  /** One share fetch from a KMS node: how long it took, and how it ended. */
  shareFetch(nodeId: string, seconds: number, outcome: ShareFetchOutcome): void;
  /** KOS answered with an error response carrying this stable code (`ERR_…`). */
  error(code: string): void;
  /** A new version of a key became primary (also on creation, version 1). */
  rotation(kid: string, version: number, createdAtMs: number): void;
  /** A rotation failed with this stable code. */
  rotationFailure?(code: string): void;
  /**
   * Handed the key registry once by each KeyManager built with this sink, so an
   * implementation can read key ages when it is scraped (it must bound what it exports).
   */
  watchKeys?(registry: KeyRegistryReader): void;
}

function nothing(): void {}

/** The default sink: does nothing, costs a call. */
export const noopMetrics: KosMetrics = Object.freeze({
  decision: nothing,
  keyRelease: nothing,
  dekCache: nothing,
  shareFetch: nothing,
  error: nothing,
  rotation: nothing,
  rotationFailure: nothing,
});

/** Calls several sinks (e.g. Prometheus and a custom one); a sink that throws does not stop the others. */
export function combineMetrics(...sinks: readonly KosMetrics[]): KosMetrics {
  const all = sinks.filter((sink) => sink && sink !== noopMetrics);
  if (all.length === 0) return noopMetrics;
  if (all.length === 1) return all[0] as KosMetrics;
  const each =
    <A extends unknown[]>(call: (sink: KosMetrics, ...args: A) => void) =>
    (...args: A) => {
      for (const sink of all) {
        try {
          call(sink, ...args);
        } catch {
          // A metrics sink must never change what KOS does.
        }
      }
    };
  return {
    decision: each((sink, tier: Tier) => sink.decision(tier)),
    keyRelease: each((sink, tier: Tier) => sink.keyRelease(tier)),
    dekCache: each((sink, hit: boolean) => sink.dekCache(hit)),
    shareFetch: each((sink, nodeId: string, seconds: number, outcome: ShareFetchOutcome) =>
      sink.shareFetch(nodeId, seconds, outcome),
    ),
    error: each((sink, code: string) => sink.error(code)),
    rotation: each((sink, kid: string, version: number, createdAtMs: number) =>
      sink.rotation(kid, version, createdAtMs),
    ),
    rotationFailure: each((sink, code: string) => sink.rotationFailure?.(code)),
    watchKeys: each((sink, registry: KeyRegistryReader) => sink.watchKeys?.(registry)),
  };
}

/**
 * A pino-compatible logger (`logger.warn({ nodeId }, 'message')`). KOS logs ids, codes and
 * reasons only: never key, share or token bytes, never raw client ids.
 */
export interface KosLogger {
  info(object: object, message?: string): void;
  warn(object: object, message?: string): void;
  error(object: object, message?: string): void;
  debug(object: object, message?: string): void;
}

/** The default logger: says nothing (KOS is silent unless given a logger). */
export const silentLogger: KosLogger = Object.freeze({
  info: nothing,
  warn: nothing,
  error: nothing,
  debug: nothing,
});

/** The stable code of an error, for logs and metrics (`ERR_INTERNAL` for anything that is not a KosError). */
export function errorCodeOf(error: unknown): string {
  return isKosError(error) ? error.code : 'ERR_INTERNAL';
}
