import type { KeyManagerEvent } from '../keys/key-manager.js';
import type { AuditEvent } from './audit-trail.js';

/** A key-manager event as an audit event (ids stay raw here; the trail pseudonymises them). */
export function auditEventOf(event: KeyManagerEvent): AuditEvent {
  switch (event.type) {
    case 'key.rotated':
      return { type: 'key.rotated', outcome: 'ok', kid: event.kid, version: event.version, reason: event.reason };
    case 'key.versions-retired':
      return { type: 'key.versions-retired', outcome: 'ok', kid: event.kid, version: event.minDecryptVersion };
    case 'key.version-destroyed':
      return { type: 'key.version-destroyed', outcome: 'ok', kid: event.kid, version: event.version };
    case 'shares.rejected':
      return {
        type: 'shares.rejected',
        outcome: 'error',
        kid: event.kid,
        version: event.version,
        failures: event.failures,
      };
    case 'key.rebuilt':
      return {
        type: 'key.rebuilt',
        outcome: 'ok',
        kid: event.kid,
        version: event.version,
        nodesAsked: event.nodesAsked,
        nodesAnswered: event.nodesAnswered,
        ...(event.owner === 'system' ? {} : { clientId: event.owner }),
      };
    case 'client-set.provisioned':
      return {
        type: 'client-set.provisioned',
        outcome: 'ok',
        kid: event.kid,
        version: event.version,
        clientId: event.clientId,
        n: event.n,
        k: event.k,
      };
    case 'client-set.deleted':
      return {
        type: 'client-set.deleted',
        outcome: 'ok',
        kid: event.kid,
        version: event.version,
        clientId: event.clientId,
      };
  }
}
