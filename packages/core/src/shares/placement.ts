import { KosError } from '../errors.js';

export interface PlacementNode {
  readonly nodeId: string;
  readonly zone?: string | undefined;
}

/** Nodes without a zone count as a zone of their own. */
function zoneOf(node: PlacementNode): string {
  return node.zone === undefined ? `node:${node.nodeId}` : `zone:${node.zone}`;
}

function zonesConfigured(nodes: readonly PlacementNode[]): boolean {
  return nodes.some((node) => node.zone !== undefined);
}

/** How many shares of a k-threshold set can be placed: one per node, at most k-1 per zone. */
export function placementCapacity(nodes: readonly PlacementNode[], k: number): number {
  if (!zonesConfigured(nodes)) return nodes.length;
  const perZone = new Map<string, number>();
  for (const node of nodes) perZone.set(zoneOf(node), (perZone.get(zoneOf(node)) ?? 0) + 1);
  let capacity = 0;
  for (const count of perZone.values()) capacity += Math.min(count, k - 1);
  return capacity;
}

/** Throws ERR_NOT_ENOUGH_NODES when an (n, k) set cannot be placed on `nodes`. */
export function assertPlaceable(nodes: readonly PlacementNode[], n: number, k: number, what: string): void {
  const capacity = placementCapacity(nodes, k);
  if (capacity < n) {
    throw new KosError(
      'ERR_NOT_ENOUGH_NODES',
      `${what} needs ${n} shares on distinct nodes (at most ${k - 1} per zone) but only ${capacity} can be placed on ${nodes.length} nodes`,
      { details: { n, k, nodes: nodes.length, capacity } },
    );
  }
}

/**
 * Chooses n distinct nodes at random, at most k-1 per zone when zones are configured (so no
 * single zone can rebuild the key). Greedy over a random order reaches the full capacity.
 */
export function choosePlacement(
  nodes: readonly PlacementNode[],
  n: number,
  k: number,
  randomBytes: (length: number) => Uint8Array,
): PlacementNode[] {
  assertPlaceable(nodes, n, k, 'share set');
  const order = [...nodes];
  // Fisher-Yates with 32-bit random values (bias negligible for a few hundred nodes).
  const random = randomBytes(4 * order.length);
  const view = new DataView(random.buffer, random.byteOffset, random.byteLength);
  for (let i = order.length - 1; i > 0; i--) {
    const j = view.getUint32(4 * i, false) % (i + 1);
    [order[i], order[j]] = [order[j] as PlacementNode, order[i] as PlacementNode];
  }
  const cap = zonesConfigured(nodes) ? k - 1 : Number.POSITIVE_INFINITY;
  const used = new Map<string, number>();
  const chosen: PlacementNode[] = [];
  for (const node of order) {
    if (chosen.length === n) break;
    const zone = zoneOf(node);
    if ((used.get(zone) ?? 0) >= cap) continue;
    used.set(zone, (used.get(zone) ?? 0) + 1);
    chosen.push(node);
  }
  return chosen;
}
