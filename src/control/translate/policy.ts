/**
 * DestinationRule traffic policies: which policy applies to a (subset, port), and what it means for a cluster's load
 * balancer and a route's hash policy.
 *
 * Merging follows Istio:
 * 1. A `portLevelSettings` entry for the port replaces the destination-level loadBalancer, connectionPool,
 *    outlierDetection and tls wholesale: a field the port entry leaves out falls back to the default, it is not
 *    inherited.
 * 2. A subset's policy (after its own step 1) overrides the result field by field; if the subset has a port-level
 *    entry for the port, all four fields come from the subset.
 */
import type { DestinationRuleSpec, TrafficPolicy } from '../../api/index.js'
import type { ConsistentHashLB, LoadBalancerSettings, PortTrafficPolicy } from './types.js'
import { type Json, protoDuration } from './util.js'

/** The four fields Loom reads from a policy. */
export interface EffectivePolicy {
  loadBalancer?: LoadBalancerSettings
  connectionPool?: TrafficPolicy['connectionPool']
  outlierDetection?: TrafficPolicy['outlierDetection']
  tls?: TrafficPolicy['tls']
}

function forPort(
  policy: TrafficPolicy | undefined,
  port: number,
): { policy: EffectivePolicy | undefined; portLevel: boolean } {
  if (policy === undefined) return { policy: undefined, portLevel: false }
  const p: PortTrafficPolicy | undefined = (policy.portLevelSettings ?? []).find((s) => s.port?.number === port)
  if (p === undefined) return { policy: pick(policy), portLevel: false }
  return { policy: pick(p), portLevel: true }
}

function pick(p: EffectivePolicy): EffectivePolicy {
  const out: EffectivePolicy = {}
  if (p.loadBalancer !== undefined) out.loadBalancer = p.loadBalancer
  if (p.connectionPool !== undefined) out.connectionPool = p.connectionPool
  if (p.outlierDetection !== undefined) out.outlierDetection = p.outlierDetection
  if (p.tls !== undefined) out.tls = p.tls
  return out
}

/** The policy for traffic to `subset` (empty: the whole service) on `port`, per the rules above. */
export function effectivePolicy(
  dr: DestinationRuleSpec | undefined,
  subset: string,
  port: number,
): EffectivePolicy | undefined {
  const top = forPort(dr?.trafficPolicy, port).policy
  const ss = subset === '' ? undefined : (dr?.subsets ?? []).find((s) => s.name === subset)
  if (ss?.trafficPolicy === undefined) return top
  const sub = forPort(ss.trafficPolicy, port)
  if (top === undefined || sub.portLevel) return sub.policy
  return { ...top, ...sub.policy }
}

export type LbPolicy = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM' | 'RING_HASH' | 'MAGLEV'

/** Istio's default ring size for consistent hashing. */
export const DEFAULT_MIN_RING_SIZE = 1024

/**
 * Cluster fields for a load balancer setting. `fallback` is the mesh default (Istio's is LEAST_REQUEST). Proxyless
 * gRPC has neither LEAST_REQUEST, RANDOM nor MAGLEV: those become ROUND_ROBIN and RING_HASH.
 */
export function loadBalancerFields(
  lb: LoadBalancerSettings | undefined,
  fallback: LbPolicy,
  generator: 'envoy' | 'grpc',
): Json {
  const out: Json = {}
  const ch = lb?.consistentHash
  if (ch !== undefined) {
    if (ch.maglev !== undefined && generator === 'envoy') {
      out.lb_policy = 'MAGLEV'
      if (typeof ch.maglev.tableSize === 'number') out.maglev_lb_config = { table_size: ch.maglev.tableSize }
    } else {
      out.lb_policy = 'RING_HASH'
      const size = ch.ringHash?.minimumRingSize ?? ch.minimumRingSize
      out.ring_hash_lb_config = {
        minimum_ring_size: typeof size === 'number' && size > 0 ? size : DEFAULT_MIN_RING_SIZE,
      }
    }
    return out
  }
  let policy: LbPolicy = fallback
  switch (lb?.simple) {
    case 'ROUND_ROBIN':
      policy = 'ROUND_ROBIN'
      break
    case 'LEAST_REQUEST':
    case 'LEAST_CONN':
      policy = 'LEAST_REQUEST'
      break
    case 'RANDOM':
      policy = 'RANDOM'
      break
    default:
      // UNSPECIFIED, and PASSTHROUGH (an original-destination cluster, which Loom does not have): the mesh default
      break
  }
  if (generator === 'grpc' && (policy === 'LEAST_REQUEST' || policy === 'RANDOM')) policy = 'ROUND_ROBIN'
  if (generator === 'grpc' && policy === 'MAGLEV') policy = 'RING_HASH'
  out.lb_policy = policy
  return out
}

/** The route hash policy for a consistent-hash setting; null when there is none (or gRPC cannot use it). */
export function hashPolicy(ch: ConsistentHashLB | undefined, generator: 'envoy' | 'grpc'): Json | null {
  if (ch === undefined) return null
  if (typeof ch.httpHeaderName === 'string' && ch.httpHeaderName !== '') {
    return { header: { header_name: ch.httpHeaderName.toLowerCase() } }
  }
  if (generator === 'grpc') return null
  if (ch.httpCookie !== undefined && typeof ch.httpCookie.name === 'string' && ch.httpCookie.name !== '') {
    const cookie: Json = { name: ch.httpCookie.name }
    const ttl = protoDuration(ch.httpCookie.ttl)
    if (ttl !== null) cookie.ttl = ttl
    if (typeof ch.httpCookie.path === 'string' && ch.httpCookie.path !== '') cookie.path = ch.httpCookie.path
    return { cookie }
  }
  if (ch.useSourceIp === true) return { connection_properties: { source_ip: true } }
  if (typeof ch.httpQueryParameterName === 'string' && ch.httpQueryParameterName !== '') {
    return { query_parameter: { name: ch.httpQueryParameterName } }
  }
  return null
}

/** connectionPool.tcp.connectTimeout in proto3 JSON form, or null. */
export function connectTimeout(p: EffectivePolicy | undefined): string | null {
  return protoDuration(p?.connectionPool?.tcp?.connectTimeout)
}
