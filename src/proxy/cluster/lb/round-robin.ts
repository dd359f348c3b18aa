import type { Host } from '../host.js'
import { EdfScheduler } from './edf.js'
import { allWeightsEqual, type LoadBalancer } from './types.js'

/**
 * ROUND_ROBIN: plain rotation when all weights are equal, otherwise weighted round robin by an EDF schedule (as
 * Envoy does), which interleaves hosts smoothly rather than sending runs to the heaviest one.
 */
export function roundRobin(hosts: readonly Host[]): LoadBalancer {
  return allWeightsEqual(hosts) ? new PlainRoundRobin(hosts) : new WeightedRoundRobin(hosts)
}

class PlainRoundRobin implements LoadBalancer {
  readonly #hosts: readonly Host[]
  #next: number

  constructor(hosts: readonly Host[]) {
    this.#hosts = hosts
    // A random start, so a fleet of proxies does not send its first requests to the same host.
    this.#next = Math.floor(Math.random() * hosts.length)
  }

  pick(): Host {
    const hosts = this.#hosts
    const i = this.#next
    this.#next = i + 1 === hosts.length ? 0 : i + 1
    return hosts[i]!
  }
}

class WeightedRoundRobin implements LoadBalancer {
  readonly #hosts: readonly Host[]
  readonly #weights: Float64Array
  readonly #edf: EdfScheduler

  constructor(hosts: readonly Host[]) {
    this.#hosts = hosts
    this.#weights = Float64Array.from(hosts, (h) => h.weight)
    this.#edf = new EdfScheduler(this.#weights, true)
  }

  pick(): Host {
    const i = this.#edf.peek()
    this.#edf.advance(this.#weights[i]!)
    return this.#hosts[i]!
  }
}
