import type { AeadAlgorithm } from '../crypto/algorithms.js';

/**
 * Life cycle of a key version:
 * - `active`: the primary version; encrypts and decrypts (exactly one per key).
 * - `decrypt-only`: a former primary; decrypts old data, never encrypts.
 * - `retired`: below the minimum decryption version; refused with ERR_KEY_VERSION_RETIRED.
 * - `destroyed`: its shares are deleted; it can never decrypt again.
 */
export type KeyVersionState = 'active' | 'decrypt-only' | 'retired' | 'destroyed';

export interface KeyVersionRecord {
  readonly version: number;
  readonly state: KeyVersionState;
  readonly alg: AeadAlgorithm;
  /** Key-check value (base64url), see docs/wire-format.md. */
  readonly kcv: string;
  /** The system share set of this version. */
  readonly systemSetId: string;
  readonly createdAt: number;
}

export interface KeyRecord {
  readonly kid: string;
  readonly primaryVersion: number;
  /** Versions below this are retired. */
  readonly minDecryptVersion: number;
  readonly versions: readonly KeyVersionRecord[];
  readonly createdAt: number;
  readonly updatedAt: number;
}
