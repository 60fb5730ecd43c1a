import { KosError } from '../errors.js';
import { assertId } from '../stores/ids.js';
import type { AccessRecord, MetadataStore } from '../stores/metadata-store.js';

/** Grants every key when in a client's allow list (or deny list). */
export const ANY_KEY = '*';

export interface AccessControlOptions {
  readonly metadata: MetadataStore;
  /** When true (the default), a client reads only keys it was granted. */
  readonly defaultDeny?: boolean;
}

export interface AccessControl {
  readonly defaultDeny: boolean;
  grant(clientId: string, kid: string): Promise<void>;
  revoke(clientId: string, kid: string): Promise<void>;
  isAllowed(clientId: string, kid: string): Promise<boolean>;
  /** Throws ERR_ACCESS_DENIED unless allowed. */
  assertAllowed(clientId: string, kid: string): Promise<void>;
  list(): Promise<AccessRecord[]>;
}

function checkKid(kid: string): void {
  if (kid !== ANY_KEY) assertId(kid, 'key id');
}

/**
 * Which clients may read which keys. Default-deny: a client needs a grant for the key (or
 * `*`). Default-allow: every client may read every key except those revoked from it. A
 * revoke always wins over a `*` grant.
 */
export function createAccessControl(options: AccessControlOptions): AccessControl {
  if (!options?.metadata) throw new KosError('ERR_INVALID_OPTIONS', 'access control: metadata store is required');
  const { metadata } = options;
  const defaultDeny = options.defaultDeny ?? true;
  if (typeof defaultDeny !== 'boolean') throw new KosError('ERR_INVALID_OPTIONS', 'defaultDeny must be a boolean');

  async function update(clientId: string, kid: string, allow: boolean): Promise<void> {
    assertId(clientId, 'client id');
    checkKid(kid);
    const current = (await metadata.getAccess(clientId)) ?? { clientId, allow: [], deny: [] };
    const allowSet = new Set(current.allow);
    const denySet = new Set(current.deny);
    if (allow) {
      allowSet.add(kid);
      denySet.delete(kid);
    } else {
      allowSet.delete(kid);
      denySet.add(kid);
    }
    await metadata.putAccess({ clientId, allow: [...allowSet].sort(), deny: [...denySet].sort() });
  }

  async function isAllowed(clientId: string, kid: string): Promise<boolean> {
    assertId(clientId, 'client id');
    assertId(kid, 'key id');
    const record = await metadata.getAccess(clientId);
    if (record?.deny.includes(kid) || record?.deny.includes(ANY_KEY)) return false;
    if (!defaultDeny) return true;
    return Boolean(record?.allow.includes(kid) || record?.allow.includes(ANY_KEY));
  }

  return {
    defaultDeny,
    grant: (clientId, kid) => update(clientId, kid, true),
    revoke: (clientId, kid) => update(clientId, kid, false),
    isAllowed,
    async assertAllowed(clientId, kid) {
      if (!(await isAllowed(clientId, kid))) {
        throw new KosError('ERR_ACCESS_DENIED', 'client may not read this key');
      }
    },
    list: () => metadata.listAccess(),
  };
}
