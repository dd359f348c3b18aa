/**
 * Envoy's priority levels. Each level's availability is min(100, 1.4 * 100 * healthy / total) percent: with the
 * overprovisioning factor 1.4 a level keeps all its traffic until fewer than ~71% of its hosts are healthy, then
 * spills the shortfall to the next level. Healthy hosts of every level are used before degraded hosts of any
 * level. When the levels together offer less than 100%, the loads are scaled up so they still sum to 100.
 */

export const overprovisioningFactor = 1.4

export interface LevelCounts {
  /** HEALTHY or UNKNOWN hosts. */
  healthy: number
  /** DEGRADED hosts. */
  degraded: number
  /** All hosts of the level, whatever their health. */
  total: number
}

/** Percent of traffic per level, to its healthy and to its degraded hosts. All zero when nothing is available. */
export interface PriorityLoad {
  healthy: number[]
  degraded: number[]
}

export function computePriorityLoad(levels: readonly LevelCounts[]): PriorityLoad {
  const n = levels.length
  const health = new Array<number>(n).fill(0)
  const degraded = new Array<number>(n).fill(0)
  let sum = 0
  for (let i = 0; i < n; i++) {
    const l = levels[i]!
    if (l.total === 0) continue
    health[i] = Math.min(100, (overprovisioningFactor * 100 * l.healthy) / l.total)
    degraded[i] = Math.min(100, (overprovisioningFactor * 100 * l.degraded) / l.total)
    sum += Math.min(100, health[i]! + degraded[i]!)
  }
  const out: PriorityLoad = { healthy: new Array<number>(n).fill(0), degraded: new Array<number>(n).fill(0) }
  const totalAvailability = Math.min(100, sum)
  if (totalAvailability === 0) return out
  let remaining = 100
  for (let i = 0; i < n; i++) {
    const load = Math.min(remaining, (health[i]! * 100) / totalAvailability)
    out.healthy[i] = load
    remaining -= load
  }
  for (let i = 0; i < n; i++) {
    const load = Math.min(remaining, (degraded[i]! * 100) / totalAvailability)
    out.degraded[i] = load
    remaining -= load
  }
  return out
}
