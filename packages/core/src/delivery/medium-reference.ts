import { KosError } from '../errors.js';
import type { TokenIssuer } from '../grants/token-issuer.js';
import type { KeyManager } from '../keys/key-manager.js';
import { shareUrl } from '../kms-api/share-body.js';

/** Where clients reach each KMS node (its public base URL). */
export type NodeDirectory = ReadonlyMap<string, string>;

/** One placement as the client sees it. */
export interface ShareReference {
  readonly nodeId: string;
  /** Full URL of the share on its node. */
  readonly url: string;
  readonly shareId: string;
  readonly x: number;
  /** base64url digest the fetched share must match (docs/wire-format.md §5). */
  readonly digest: string;
}

/**
 * What a medium-tier client receives instead of a key: where its own shares are, how many
 * it needs, one signed grant for all of them, and the values to verify what it fetches.
 */
export interface MediumKeyReference {
  readonly kid: string;
  readonly ver: number;
  readonly setId: string;
  readonly k: number;
  /** Key-check value of the version (base64url). */
  readonly kcv: string;
  /** The grant (JWT); good once per node, until `expiresAt`. */
  readonly grant: string;
  readonly expiresAt: number;
  /** True when the grant is DPoP-bound: requests must carry a proof by the client's key. */
  readonly dpop: boolean;
  readonly shares: readonly ShareReference[];
}

export interface MediumReferenceInput {
  readonly keys: KeyManager;
  readonly tokens: TokenIssuer;
  readonly nodes: NodeDirectory;
  readonly clientId: string;
  readonly kid: string;
  readonly version: number;
  readonly n: number;
  readonly k: number;
  /** Bind the grant to this DPoP key thumbprint (RFC 9449). */
  readonly dpopJkt?: string | undefined;
}

/**
 * Medium-tier delivery for one key version: provisions (or reuses) the client's own share set
 * with (n, k) from its score, then signs one grant covering its placements.
 */
export async function createMediumReference(input: MediumReferenceInput): Promise<MediumKeyReference> {
  const set = await input.keys.provisionClientSet(input.kid, input.version, input.clientId, { n: input.n, k: input.k });
  const version = await input.keys.getVersion(input.kid, input.version);
  const shares = set.placements.map((placement) => {
    const base = input.nodes.get(placement.nodeId);
    if (!base) {
      throw new KosError('ERR_NOT_ENOUGH_NODES', 'a placement names a node without a public URL', {
        details: { nodeId: placement.nodeId },
      });
    }
    return {
      nodeId: placement.nodeId,
      url: shareUrl(base, placement.shareId),
      shareId: placement.shareId,
      x: placement.x,
      digest: placement.digest,
    };
  });
  const grant = await input.tokens.issueGrant({
    clientId: input.clientId,
    kid: input.kid,
    version: input.version,
    setId: set.setId,
    shares: Object.fromEntries(set.placements.map((p) => [p.nodeId, p.shareId])),
    dpopJkt: input.dpopJkt,
  });
  return {
    kid: input.kid,
    ver: input.version,
    setId: set.setId,
    k: set.k,
    kcv: version.kcv,
    grant: grant.token,
    expiresAt: grant.expiresAt,
    dpop: Boolean(input.dpopJkt),
    shares,
  };
}
