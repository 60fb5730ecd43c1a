import { randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { type AuditSink, type AuditTrail, createAuditTrail, createLoggerSink, KosError } from '@kos/core';
import type { CryptoKey } from 'jose';
import { writeFileAtomic } from '../atomic-file.js';
import { createHashChainedFileSink } from './hash-chained-file-sink.js';

/** How a runtime or a node records its audit trail. */
export interface AuditConfig {
  /**
   * Hash-chained JSON-lines file. One writer per file: `{host}` and `{pid}` in the name are
   * replaced, so processes sharing a configuration (instances, the `kos` command) never
   * interleave one chain.
   */
  readonly file?: string;
  /** Pseudonym key (>= 16 bytes), or a file holding it (created with 32 random bytes, 0600, if missing). */
  readonly salt?: Uint8Array;
  readonly saltFile?: string;
  /** No audit write, no release: 503 ERR_AUDIT_UNAVAILABLE (default false). */
  readonly failClosed?: boolean;
  /** A pino-compatible logger that also receives every record. */
  readonly logger?: { info(object: object, message?: string): void };
  /** More sinks. */
  readonly sinks?: readonly AuditSink[];
  /** Checkpoint interval of the file (default 100 records). */
  readonly checkpointEvery?: number;
}

/** The audit file name with `{host}` and `{pid}` filled in. */
export function auditFilePath(template: string): string {
  return template.replaceAll('{host}', hostname()).replaceAll('{pid}', String(process.pid));
}

/** Reads the salt file, creating it (32 random bytes, mode 0600, atomic) when missing. */
export async function loadOrCreateSalt(path: string): Promise<Uint8Array> {
  try {
    const salt = new Uint8Array(await readFile(path));
    if (salt.length < 16) throw new KosError('ERR_INVALID_OPTIONS', `audit salt in ${path} is shorter than 16 bytes`);
    return salt;
  } catch (error) {
    if ((error as { code?: string }).code !== 'ENOENT') throw error;
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const salt = new Uint8Array(randomBytes(32));
  await writeFileAtomic(path, salt, { mode: 0o600 });
  return salt;
}

/** Builds the audit trail a configuration describes (undefined when it names no sink). */
export async function openAuditTrail(
  config: AuditConfig | undefined,
  signingKey: CryptoKey | undefined,
  onError?: (error: unknown) => void,
): Promise<AuditTrail | undefined> {
  if (!config) return undefined;
  const sinks: AuditSink[] = [...(config.sinks ?? [])];
  if (config.logger) sinks.push(createLoggerSink(config.logger));
  if (config.file) {
    const path = auditFilePath(config.file);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    sinks.push(
      await createHashChainedFileSink({
        path,
        ...(signingKey ? { signingKey } : {}),
        ...(config.checkpointEvery ? { checkpointEvery: config.checkpointEvery } : {}),
      }),
    );
  }
  if (sinks.length === 0) return undefined;
  const salt = config.salt ?? (config.saltFile ? await loadOrCreateSalt(config.saltFile) : undefined);
  if (!salt)
    throw new KosError('ERR_INVALID_OPTIONS', 'audit: salt or saltFile is required (pseudonyms need a secret key)');
  return createAuditTrail({ salt, sinks, failClosed: config.failClosed ?? false, ...(onError ? { onError } : {}) });
}
