/** Where one share of a set lives and what it must hash to. */
export interface SharePlacement {
  readonly nodeId: string;
  readonly shareId: string;
  /** x coordinate assigned at split time (1–255). */
  readonly x: number;
  /** base64url SHA-256 digest bound to key id, version, set id, node and x. */
  readonly digest: string;
}

/**
 * A share set: one split of a version's DEK. The system set is KOS's own; each medium-tier
 * client gets its own set of the same DEK. Shares of different sets never combine.
 */
export interface ShareSetRecord {
  readonly setId: string;
  readonly kid: string;
  readonly version: number;
  /** `system` or the owning client id. */
  readonly owner: string;
  readonly n: number;
  readonly k: number;
  readonly placements: readonly SharePlacement[];
  readonly createdAt: number;
  /**
   * Set by a rotation or provisioning that failed and could not delete every share (a node
   * was down): nobody uses this set; the next rotation of the key collects it at once.
   */
  readonly abandoned?: boolean;
}

export const SYSTEM_OWNER = 'system';
