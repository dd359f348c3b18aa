/**
 * Envoy's locality-weighted load balancing (`common_lb_config.locality_weighted_lb_config`). Once the priority level
 * (and healthy or degraded hosts) is drawn, a locality of that level is drawn by its effective weight, then a host by
 * the cluster's lb_policy among that locality's hosts:
 *
 *   availability(L)     = overprovisioning factor (1.4) × available hosts of L / all hosts of L
 *   effective_weight(L) = load_balancing_weight(L) × min(1, availability(L))
 *
 * so a locality keeps its whole share until fewer than ~71% of its hosts are available, then spills the shortfall
 * to the other localities of the level. A locality without a load_balancing_weight gets no traffic. When no locality
 * of the set has an effective weight, the set is balanced as a whole, as Envoy does.
 *
 * Localities are drawn by an earliest-deadline-first schedule (Envoy's weighted round robin over localities). With
 * RING_HASH and MAGLEV the draw uses the request hash instead, so a key keeps to one locality while the weights stay.
 * Everything is built with the level's load balancers; a pick is one more O(log n) step and allocates nothing.
 */
import { EdfScheduler } from './lb/edf.js'
import type { LbFactory, LoadBalancer } from './lb/types.js'
import type { Host, Locality } from './host.js'
import { overprovisioningFactor } from './priority.js'

/** Identity of a locality: Envoy compares region, zone and sub_zone. */
export function localityKey(l: Locality): string {
  return `${l.region ?? ''}/${l.zone ?? ''}/${l.sub_zone ?? ''}`
}

export interface LocalityCounts {
  /** the locality's load_balancing_weight (0: none) */
  weight: number
  /** hosts of the set being balanced (healthy, or degraded) in this locality */
  available: number
  /** every host of the locality at this priority, whatever its health */
  total: number
}

/** Envoy's effective locality weights (see the module doc); `factor` is the overprovisioning factor (1.4). */
export function effectiveLocalityWeights(
  localities: readonly LocalityCounts[],
  factor = overprovisioningFactor,
): number[] {
  return localities.map((l) => (l.total === 0 ? 0 : l.weight * Math.min(1, (factor * l.available) / l.total)))
}

/**
 * The load balancer for one priority level's `available` hosts (its healthy or its degraded ones), by locality.
 * `level` is every host of the level, whatever its health (the availability denominators). `byHash`: draw the
 * locality by the request hash (RING_HASH, MAGLEV).
 */
export function localityWeightedLb(
  available: readonly Host[],
  level: readonly Host[],
  factory: LbFactory,
  byHash: boolean,
): LoadBalancer {
  const groups = new Map<string, { weight: number; total: number; hosts: Host[] }>()
  for (const h of level) {
    const key = localityKey(h.locality)
    const g = groups.get(key)
    if (g === undefined) groups.set(key, { weight: h.localityWeight, total: 1, hosts: [] })
    else g.total++
  }
  for (const h of available) groups.get(localityKey(h.locality))?.hosts.push(h)
  const lbs: LoadBalancer[] = []
  const weights: number[] = []
  for (const g of groups.values()) {
    const [w] = effectiveLocalityWeights([{ weight: g.weight, available: g.hosts.length, total: g.total }])
    if (w! <= 0 || g.hosts.length === 0) continue
    lbs.push(factory(g.hosts))
    weights.push(w!)
  }
  if (lbs.length === 0) return factory(available)
  if (lbs.length === 1) return lbs[0]!
  return byHash ? new HashLocalityLb(lbs, weights) : new EdfLocalityLb(lbs, weights)
}

class EdfLocalityLb implements LoadBalancer {
  readonly #lbs: LoadBalancer[]
  readonly #weights: Float64Array
  readonly #edf: EdfScheduler

  constructor(lbs: LoadBalancer[], weights: number[]) {
    this.#lbs = lbs
    this.#weights = Float64Array.from(weights)
    this.#edf = new EdfScheduler(this.#weights, true)
  }

  pick(hash: number | undefined): Host {
    const i = this.#edf.peek()
    this.#edf.advance(this.#weights[i]!)
    return this.#lbs[i]!.pick(hash)
  }
}

class HashLocalityLb implements LoadBalancer {
  readonly #lbs: LoadBalancer[]
  /** cumulative weights, as fractions of the total */
  readonly #cumulative: Float64Array

  constructor(lbs: LoadBalancer[], weights: number[]) {
    this.#lbs = lbs
    const total = weights.reduce((a, b) => a + b, 0)
    let sum = 0
    this.#cumulative = Float64Array.from(weights, (w) => (sum += w) / total)
  }

  pick(hash: number | undefined): Host {
    // the priority draw used `hash % 100`: mix the bits so the locality draw does not follow it
    const u = hash === undefined ? Math.random() : mix(hash) / 0x100000000
    const c = this.#cumulative
    let i = 0
    while (i < c.length - 1 && u >= c[i]!) i++
    return this.#lbs[i]!.pick(hash)
  }
}

/** A 32-bit integer finalizer (murmur3's fmix32). */
function mix(h: number): number {
  let x = h >>> 0
  x ^= x >>> 16
  x = Math.imul(x, 0x85ebca6b)
  x ^= x >>> 13
  x = Math.imul(x, 0xc2b2ae35)
  x ^= x >>> 16
  return x >>> 0
}
