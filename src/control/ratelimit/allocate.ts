/**
 * Dividing a global rate limit's budget between the proxies that enforce it, by their demand (requests offered
 * per second, admitted or not, over the last window): max-min fair with a floor.
 *
 * 1. Every active proxy gets a floor, `floorFraction` of an equal split (so a proxy whose traffic starts between
 *    two rebalancings can admit some at once).
 * 2. The rest is water-filled: proxies are served in order of their demand beyond the floor, smallest first; each
 *    gets what it asks for while that is under an equal split of what is left, and the others split the remainder
 *    equally. No proxy gets more than it asked for while another asked for more than it got.
 * 3. What nobody asked for (total demand under the budget) is returned to the pool and split equally, as headroom
 *    for demand that grows before the next window.
 *
 * The shares always add up to the budget (with at least one proxy), so the mesh never admits more than the limit
 * at steady state whatever the demand.
 */

export interface ProxyDemand {
  id: string
  /** requests per second offered in the last window */
  demand: number
}

export const DEFAULT_FLOOR_FRACTION = 0.1

/** Each proxy's share of `budget` (requests per second), by id. */
export function allocate(
  budget: number,
  proxies: readonly ProxyDemand[],
  floorFraction = DEFAULT_FLOOR_FRACTION,
): Map<string, number> {
  const out = new Map<string, number>()
  const n = proxies.length
  if (n === 0 || !(budget > 0)) {
    for (const p of proxies) out.set(p.id, 0)
    return out
  }
  const floor = (budget / n) * Math.min(1, Math.max(0, floorFraction))
  let left = budget - floor * n
  const wants = proxies
    .map((p) => ({ id: p.id, want: Math.max(0, (Number.isFinite(p.demand) ? p.demand : 0) - floor) }))
    .sort((a, b) => a.want - b.want || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const given = new Map<string, number>()
  let m = n
  for (const w of wants) {
    const level = left / m
    const g = w.want <= level ? w.want : level
    given.set(w.id, g)
    left -= g
    m--
  }
  const headroom = left > 1e-9 ? left / n : 0
  for (const p of proxies) out.set(p.id, floor + (given.get(p.id) ?? 0) + headroom)
  return out
}
