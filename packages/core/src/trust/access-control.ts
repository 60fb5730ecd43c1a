import { KosError } from '../errors.js';
import { assertId, isValidId } from '../stores/ids.js';
import type { AccessRecord, MetadataStore } from '../stores/metadata-store.js';

/** Grants every key when in a client's allow list (or deny list). */
export const ANY_KEY = '*';

/** At most this many clients' records are remembered (the oldest go first). */
const MAX_REMEMBERED = 10_000;

export interface AccessControlOptions {
  readonly metadata: MetadataStore;
  /** When true (the default), a client reads only keys it was granted. */
  readonly defaultDeny?: boolean;
  /**
   * Remember each client's access record this long (ms, default 0: read the store on every
   * check). Grants and revocations made through this AccessControl apply at once; ones made
   * elsewhere (another instance sharing the store, the CLI) apply within `cacheMs`. A cached
   * record lets KOS answer a request without waiting (`peekAllowed`).
   */
  readonly cacheMs?: number;
  /** Milliseconds now (default Date.now); for tests. */
  readonly clock?: () => number;
}

export interface AccessControl {
  readonly defaultDeny: boolean;
  grant(clientId: string, kid: string): Promise<void>;
  revoke(clientId: string, kid: string): Promise<void>;
  isAllowed(clientId: string, kid: string): Promise<boolean>;
  /**
   * What `isAllowed` would answer, without waiting, from a remembered access record (see
   * `cacheMs`); undefined when none is remembered, or the ids are not valid. Absent when
   * nothing is ever remembered (`cacheMs` 0).
   */
  peekAllowed?(clientId: string, kid: string): boolean | undefined;
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
  const cacheMs = options.cacheMs ?? 0;
  if (typeof cacheMs !== 'number' || !Number.isInteger(cacheMs) || cacheMs < 0 || cacheMs > 60_000) {
    throw new KosError('ERR_INVALID_OPTIONS', 'access control: cacheMs must be an integer from 0 to 60000');
  }
  const clock = options.clock ?? Date.now;
  if (typeof clock !== 'function')
    throw new KosError('ERR_INVALID_OPTIONS', 'access control: clock must be a function');

  // Remembered records (cacheMs > 0), oldest first; `changes` counts this instance's updates so
  // that a read begun before one is never remembered after it.
  const remembered = new Map<string, { readonly record: AccessRecord | undefined; readonly atMs: number }>();
  let changes = 0;

  function freshRecord(clientId: string): { readonly record: AccessRecord | undefined } | undefined {
    const entry = remembered.get(clientId);
    return entry && clock() - entry.atMs < cacheMs ? entry : undefined;
  }

  async function recordOf(clientId: string): Promise<AccessRecord | undefined> {
    if (cacheMs === 0) return metadata.getAccess(clientId);
    const known = freshRecord(clientId);
    if (known) return known.record;
    const before = changes;
    const record = await metadata.getAccess(clientId);
    if (changes === before) {
      remembered.delete(clientId);
      remembered.set(clientId, { record, atMs: clock() });
      if (remembered.size > MAX_REMEMBERED) remembered.delete(remembered.keys().next().value as string);
    }
    return record;
  }

  function allows(record: AccessRecord | undefined, kid: string): boolean {
    if (record?.deny.includes(kid) || record?.deny.includes(ANY_KEY)) return false;
    if (!defaultDeny) return true;
    return Boolean(record?.allow.includes(kid) || record?.allow.includes(ANY_KEY));
  }

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
    try {
      await metadata.putAccess({ clientId, allow: [...allowSet].sort(), deny: [...denySet].sort() });
    } finally {
      // Forgotten once written (or failed), and a read begun before now is not remembered.
      changes++;
      remembered.delete(clientId);
    }
  }

  async function isAllowed(clientId: string, kid: string): Promise<boolean> {
    assertId(clientId, 'client id');
    assertId(kid, 'key id');
    return allows(await recordOf(clientId), kid);
  }

  function peekAllowed(clientId: string, kid: string): boolean | undefined {
    if (!isValidId(clientId) || !isValidId(kid)) return undefined;
    const known = freshRecord(clientId);
    return known ? allows(known.record, kid) : undefined;
  }

  return {
    defaultDeny,
    grant: (clientId, kid) => update(clientId, kid, true),
    revoke: (clientId, kid) => update(clientId, kid, false),
    isAllowed,
    // Only when records are remembered: without it, callers know at once there is nothing to peek at.
    ...(cacheMs > 0 ? { peekAllowed } : {}),
    async assertAllowed(clientId, kid) {
      if (!(await isAllowed(clientId, kid))) {
        throw new KosError('ERR_ACCESS_DENIED', 'client may not read this key');
      }
    },
    list: () => metadata.listAccess(),
  };
}
