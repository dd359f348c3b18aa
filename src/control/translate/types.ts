/**
 * Names for the parts of the Istio spec types (src/api) that the api module does not export by name.
 */
import type { DestinationRuleSpec, GatewaySpec, HTTPMatchRequest, HTTPRoute, TrafficPolicy } from '../../api/index.js'

export type StringMatch = NonNullable<HTTPMatchRequest['uri']>
export type HTTPRouteDestination = NonNullable<HTTPRoute['route']>[number]
export type HTTPRedirect = NonNullable<HTTPRoute['redirect']>
export type Subset = NonNullable<DestinationRuleSpec['subsets']>[number]
export type PortTrafficPolicy = NonNullable<TrafficPolicy['portLevelSettings']>[number]
export type LoadBalancerSettings = NonNullable<TrafficPolicy['loadBalancer']>
export type ConsistentHashLB = NonNullable<LoadBalancerSettings['consistentHash']>
export type Server = NonNullable<GatewaySpec['servers']>[number]
