import type { Cluster } from '../../../config/envoy.js'
import { TypeUrls } from '../../../config/type-urls.js'
import { leastRequest } from './least-request.js'
import { maglev } from './maglev.js'
import { peakEwma, peakEwmaSettings } from './peak-ewma.js'
import { random } from './random.js'
import { ringHash } from './ring-hash.js'
import { roundRobin } from './round-robin.js'
import { slowStartSettings, withSlowStart } from './slow-start.js'
import type { LbFactory } from './types.js'

export type { LbFactory, LoadBalancer } from './types.js'

/** lb_policy, or PEAK_EWMA for Loom's load_balancing_policy extension. */
export type LbPolicy = Exclude<NonNullable<Cluster['lb_policy']>, 'CLUSTER_PROVIDED'> | 'PEAK_EWMA'

type PolicyConfig = NonNullable<
  Cluster['load_balancing_policy']
>['policies'][number]['typed_extension_config']['typed_config']

/** The policy load_balancing_policy selects: its first entry (the schema admits only policies Loom runs). */
function selectedPolicy(config: Cluster): PolicyConfig | undefined {
  return config.load_balancing_policy?.policies[0]?.typed_extension_config.typed_config
}

/** The policy a cluster runs: load_balancing_policy's first entry, else lb_policy (default ROUND_ROBIN). */
export function lbPolicyOf(config: Cluster): LbPolicy {
  const p = selectedPolicy(config)
  // CLUSTER_PROVIDED (an ORIGINAL_DST cluster's): the cluster picks no host by a policy; round robin stands in
  if (p === undefined)
    return config.lb_policy === undefined || config.lb_policy === 'CLUSTER_PROVIDED' ? 'ROUND_ROBIN' : config.lb_policy
  if (p['@type'] === TypeUrls.peakEwma) return 'PEAK_EWMA'
  return p['@type'] === TypeUrls.roundRobinLb ? 'ROUND_ROBIN' : 'LEAST_REQUEST'
}

/** The load balancer factory for a cluster's policy and its settings (validated beforehand). */
export function lbFactoryFor(config: Cluster): LbFactory {
  const p = selectedPolicy(config)
  if (p !== undefined) {
    switch (p['@type']) {
      case TypeUrls.peakEwma:
        return peakEwma(peakEwmaSettings(p))
      case TypeUrls.roundRobinLb:
        return slowStarted(roundRobin, p.slow_start_config, false)
      case TypeUrls.leastRequestLb:
        return slowStarted(leastRequest(p.choice_count), p.slow_start_config, true)
    }
  }
  switch (config.lb_policy ?? 'ROUND_ROBIN') {
    case 'ROUND_ROBIN':
    case 'CLUSTER_PROVIDED':
      return slowStarted(roundRobin, config.round_robin_lb_config?.slow_start_config, false)
    case 'LEAST_REQUEST': {
      const lr = config.least_request_lb_config
      return slowStarted(leastRequest(lr?.choice_count), lr?.slow_start_config, true)
    }
    case 'RANDOM':
      return random
    case 'RING_HASH':
      return ringHash(config.ring_hash_lb_config?.minimum_ring_size, config.ring_hash_lb_config?.maximum_ring_size)
    case 'MAGLEV':
      return maglev(config.maglev_lb_config?.table_size)
  }
}

function slowStarted(
  factory: LbFactory,
  config: Parameters<typeof slowStartSettings>[0],
  leastRequest: boolean,
): LbFactory {
  const s = slowStartSettings(config)
  return s === null ? factory : withSlowStart(factory, s, leastRequest)
}

/** Whether the policy routes by the request hash (and so picks the priority level by it too). */
export function usesHash(policy: LbPolicy): boolean {
  return policy === 'RING_HASH' || policy === 'MAGLEV'
}

/** Whether the policy needs response latencies from the data path (host.latency). */
export function samplesLatency(policy: LbPolicy): boolean {
  return policy === 'PEAK_EWMA'
}
