import type { Host } from '../host.js'
import { EdfScheduler } from './edf.js'
import { allWeightsEqual, type LbFactory, type LoadBalancer } from './types.js'

/**
 * LEAST_REQUEST, as Envoy does it. Equal weights: "power of N choices": pick `choiceCount` hosts at random (with
 * replacement) and take the one with the fewest active requests. Unequal weights: weighted round robin (EDF) where
 * a host's effective weight is weight / (active requests + 1), re-evaluated each time it is scheduled.
 */
export function leastRequest(choiceCount = 2): LbFactory {
  return (hosts) => (allWeightsEqual(hosts) ? new ChoiceOfN(hosts, choiceCount) : new WeightedLeastRequest(hosts))
}

class ChoiceOfN implements LoadBalancer {
  readonly #hosts: readonly Host[]
  readonly #choices: number

  constructor(hosts: readonly Host[], choices: number) {
    this.#hosts = hosts
    this.#choices = choices
  }

  pick(): Host {
    const hosts = this.#hosts
    const n = hosts.length
    let best = hosts[Math.floor(Math.random() * n)]!
    if (n === 1) return best
    for (let i = 1; i < this.#choices; i++) {
      const candidate = hosts[Math.floor(Math.random() * n)]!
      if (candidate.activeRequests < best.activeRequests) best = candidate
    }
    return best
  }
}

class WeightedLeastRequest implements LoadBalancer {
  readonly #hosts: readonly Host[]
  readonly #edf: EdfScheduler

  constructor(hosts: readonly Host[]) {
    this.#hosts = hosts
    this.#edf = new EdfScheduler(
      hosts.map((h) => effectiveWeight(h)),
      true,
    )
  }

  pick(): Host {
    const host = this.#hosts[this.#edf.peek()]!
    this.#edf.advance(effectiveWeight(host))
    return host
  }
}

/** weight / (active + 1)^bias, with Envoy's default active_request_bias of 1.0. */
function effectiveWeight(host: Host): number {
  return host.weight / (host.activeRequests + 1)
}
