import { createHmac } from 'node:crypto';
import { toBase64url } from '../bytes.js';
import { isKosError, KosError } from '../errors.js';

/**
 * What happened, for the audit trail (DESIGN invariant 17). Raw client ids and grant ids go
 * in `clientId` / `jti` and are replaced by keyed pseudonyms before any sink sees them;
 * nothing secret (keys, shares, tokens) is ever part of an event.
 */
export interface AuditEvent {
  readonly type:
    | 'startup'
    | 'decision'
    | 'denied'
    | 'key.released'
    | 'key.rebuilt'
    | 'key.rotated'
    | 'key.versions-retired'
    | 'key.version-destroyed'
    | 'shares.rejected'
    | 'client-set.provisioned'
    | 'client-set.deleted'
    | 'client.revoked'
    | 'grant.issued'
    | 'grant.redeemed'
    | 'grant.refused'
    | 'share.released'
    | 'share.stored'
    | 'share.deleted'
    | 'recovery';
  readonly outcome?: 'ok' | 'denied' | 'error';
  readonly code?: string;
  /** Raw client id: pseudonymised before recording. */
  readonly clientId?: string;
  /** Raw grant id: pseudonymised before recording. */
  readonly jti?: string;
  readonly tier?: string;
  readonly band?: string;
  readonly n?: number;
  readonly k?: number;
  readonly kid?: string;
  readonly version?: number;
  readonly kids?: readonly string[];
  readonly nodeId?: string;
  /** Nodes a rebuild or grant involved, and those that answered with a good share. */
  readonly nodesAsked?: readonly string[];
  readonly nodesAnswered?: readonly string[];
  readonly failures?: readonly { nodeId: string; reason: string; code?: string }[];
  readonly reason?: string;
  /** Non-secret context (configuration summary at startup, counts). */
  readonly details?: Readonly<Record<string, unknown>>;
}

/** An event as sinks receive it: ids pseudonymised, time added. */
export interface AuditRecord extends Omit<AuditEvent, 'clientId' | 'jti'> {
  readonly time: string;
  /** Keyed pseudonym of the client id (correlatable, not readable). */
  readonly client?: string;
  readonly grant?: string;
}

export interface AuditSink {
  write(record: AuditRecord): Promise<void> | void;
  close?(): Promise<void>;
}

export interface AuditTrailOptions {
  /** Secret key for pseudonyms (at least 16 bytes). Keep it stable to correlate across restarts. */
  readonly salt: Uint8Array;
  readonly sinks: readonly AuditSink[];
  /** When true, a failed write makes `record` throw ERR_AUDIT_UNAVAILABLE so no key material is released. */
  readonly failClosed?: boolean;
  /** Told about write failures that do not fail the operation. */
  readonly onError?: (error: unknown) => void;
  readonly clock?: () => number;
}

export interface AuditTrail {
  readonly failClosed: boolean;
  /** The pseudonym of an identifier: HMAC-SHA256(salt, id), first 16 bytes, base64url. */
  pseudonym(id: string): string;
  /** Writes an event to every sink. Rejects with ERR_AUDIT_UNAVAILABLE in fail-closed mode. */
  record(event: AuditEvent): Promise<void>;
  close(): Promise<void>;
}

/** Creates the audit trail. Options are checked here; the salt is copied. */
export function createAuditTrail(options: AuditTrailOptions): AuditTrail {
  if (!options || !(options.salt instanceof Uint8Array) || options.salt.length < 16) {
    throw new KosError('ERR_INVALID_OPTIONS', 'audit trail: salt must be at least 16 bytes');
  }
  if (!Array.isArray(options.sinks) || options.sinks.some((sink) => typeof sink?.write !== 'function')) {
    throw new KosError('ERR_INVALID_OPTIONS', 'audit trail: sinks must be a list of { write(record) }');
  }
  const salt = Buffer.from(options.salt);
  const sinks = [...options.sinks];
  const failClosed = options.failClosed ?? false;
  const clock = options.clock ?? Date.now;
  const pseudonym = (id: string) => toBase64url(createHmac('sha256', salt).update(id, 'utf8').digest().subarray(0, 16));

  return {
    failClosed,
    pseudonym,
    async record(event) {
      const { clientId, jti, ...rest } = event;
      const record: AuditRecord = {
        time: new Date(clock()).toISOString(),
        ...rest,
        ...(clientId === undefined ? {} : { client: pseudonym(clientId) }),
        ...(jti === undefined ? {} : { grant: pseudonym(jti) }),
      };
      const results = await Promise.allSettled(sinks.map(async (sink) => sink.write(record)));
      const failed = results.find((result) => result.status === 'rejected') as PromiseRejectedResult | undefined;
      if (!failed) return;
      options.onError?.(failed.reason);
      if (failClosed) {
        throw new KosError('ERR_AUDIT_UNAVAILABLE', 'the audit trail could not be written; nothing was released', {
          details: { code: isKosError(failed.reason) ? failed.reason.code : 'unknown' },
        });
      }
    },
    async close() {
      for (const sink of sinks) await sink.close?.();
    },
  };
}

/** A sink that hands records to a pino-compatible logger (`logger.info(object, message)`). */
export function createLoggerSink(logger: { info(object: object, message?: string): void }): AuditSink {
  return { write: (record) => logger.info({ audit: record }, `kos audit: ${record.type}`) };
}

/** A sink that calls a function (to ship records anywhere). */
export function createCallbackSink(write: (record: AuditRecord) => Promise<void> | void): AuditSink {
  return { write };
}
