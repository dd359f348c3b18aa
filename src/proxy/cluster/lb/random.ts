import type { Host } from '../host.js'
import { allWeightsEqual, type LoadBalancer } from './types.js'

/** RANDOM: uniform when weights are equal, else weighted (binary search over cumulative weights). */
export function random(hosts: readonly Host[]): LoadBalancer {
  return allWeightsEqual(hosts) ? new UniformRandom(hosts) : new WeightedRandom(hosts)
}

class UniformRandom implements LoadBalancer {
  readonly #hosts: readonly Host[]

  constructor(hosts: readonly Host[]) {
    this.#hosts = hosts
  }

  pick(): Host {
    const hosts = this.#hosts
    return hosts[Math.floor(Math.random() * hosts.length)]!
  }
}

class WeightedRandom implements LoadBalancer {
  readonly #hosts: readonly Host[]
  /** cumulative[i] = sum of the weights of hosts 0..i. */
  readonly #cumulative: Float64Array
  readonly #total: number

  constructor(hosts: readonly Host[]) {
    this.#hosts = hosts
    this.#cumulative = new Float64Array(hosts.length)
    let sum = 0
    for (let i = 0; i < hosts.length; i++) {
      sum += hosts[i]!.weight
      this.#cumulative[i] = sum
    }
    this.#total = sum
  }

  pick(): Host {
    const c = this.#cumulative
    const u = Math.random() * this.#total
    // First i with cumulative[i] > u.
    let lo = 0
    let hi = c.length - 1
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (c[mid]! > u) hi = mid
      else lo = mid + 1
    }
    return this.#hosts[lo]!
  }
}
