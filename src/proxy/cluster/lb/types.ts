import type { Host } from '../host.js'

/**
 * A load balancer compiled for one set of hosts (one priority level's healthy or degraded hosts). It is rebuilt
 * when that set changes, so `pick` can be O(1) or O(log n) and allocate nothing.
 */
export interface LoadBalancer {
  /** Picks one of the hosts it was built for (never an empty set). `hash` matters to RING_HASH and MAGLEV only. */
  pick(hash: number | undefined): Host
}

/** Builds a load balancer for a non-empty host set. */
export type LbFactory = (hosts: readonly Host[]) => LoadBalancer

export function allWeightsEqual(hosts: readonly Host[]): boolean {
  const w = hosts[0]?.weight
  for (let i = 1; i < hosts.length; i++) if (hosts[i]!.weight !== w) return false
  return true
}

/** A uniformly random uint32. */
export function randomUint32(): number {
  return (Math.random() * 0x100000000) >>> 0
}

/** Hosts in a fixed order (by key), so that hash-based tables do not depend on the order updates list them in. */
export function sortedByKey(hosts: readonly Host[]): Host[] {
  return hosts.slice().sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
}
