import type { Cluster } from '../../../config/envoy.js'
import { leastRequest } from './least-request.js'
import { maglev } from './maglev.js'
import { random } from './random.js'
import { ringHash } from './ring-hash.js'
import { roundRobin } from './round-robin.js'
import type { LbFactory } from './types.js'

export type { LbFactory, LoadBalancer } from './types.js'

export type LbPolicy = NonNullable<Cluster['lb_policy']>

/** The load balancer factory for a cluster's lb_policy and its settings (validated beforehand). */
export function lbFactoryFor(config: Cluster): LbFactory {
  switch (config.lb_policy ?? 'ROUND_ROBIN') {
    case 'ROUND_ROBIN':
      return roundRobin
    case 'LEAST_REQUEST':
      return leastRequest(config.least_request_lb_config?.choice_count)
    case 'RANDOM':
      return random
    case 'RING_HASH':
      return ringHash(config.ring_hash_lb_config?.minimum_ring_size, config.ring_hash_lb_config?.maximum_ring_size)
    case 'MAGLEV':
      return maglev(config.maglev_lb_config?.table_size)
  }
}

/** Whether the policy routes by the request hash (and so picks the priority level by it too). */
export function usesHash(policy: LbPolicy): boolean {
  return policy === 'RING_HASH' || policy === 'MAGLEV'
}
