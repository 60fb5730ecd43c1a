import type { AuditEvent } from '@kos/core';
import type { KmsNodeEvent } from '../kms-node/kms-handler.js';

/** A KMS node event as an audit event (the trail pseudonymises client and grant ids). */
export function auditEventOfNode(event: KmsNodeEvent): AuditEvent {
  switch (event.type) {
    case 'share.released':
      return event.via === 'grant'
        ? {
            type: 'grant.redeemed',
            outcome: 'ok',
            nodeId: event.nodeId,
            ...(event.clientId ? { clientId: event.clientId } : {}),
            ...(event.jti ? { jti: event.jti } : {}),
          }
        : { type: 'share.released', outcome: 'ok', nodeId: event.nodeId, reason: 'service token' };
    case 'share.refused':
      return { type: 'grant.refused', outcome: 'denied', nodeId: event.nodeId, code: event.code };
    case 'share.stored':
      return { type: 'share.stored', outcome: 'ok', nodeId: event.nodeId };
    case 'share.deleted':
      return { type: 'share.deleted', outcome: 'ok', nodeId: event.nodeId };
  }
}
