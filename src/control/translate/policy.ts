/**
 * DestinationRule traffic policies: which policy applies to a (subset, port), and what it means for a cluster's load
 * balancer and a route's hash policy.
 *
 * Merging follows Istio:
 * 1. A `portLevelSettings` entry for the port replaces the destination-level loadBalancer, connectionPool,
 *    outlierDetection and tls wholesale: a field the port entry leaves out falls back to the default, it is not
 *    inherited.
 * 2. A subset's policy (after its own step 1) overrides the result field by field; if the subset has a port-level
 *    entry for the port, all five fields come from the subset.
 * `retryBudget` is a policy-level field (not in port-level settings): a port entry keeps its policy's.
 */
import type { DestinationRuleSpec, TrafficPolicy } from '../../api/index.js'
import { TypeUrls } from '../../config/type-urls.js'
import type { ConsistentHashLB, LoadBalancerSettings, PortTrafficPolicy } from './types.js'
import { type Json, protoDuration } from './util.js'

/** The fields Loom reads from a policy. */
export interface EffectivePolicy {
  loadBalancer?: LoadBalancerSettings
  connectionPool?: TrafficPolicy['connectionPool']
  outlierDetection?: TrafficPolicy['outlierDetection']
  tls?: TrafficPolicy['tls']
  /** a policy-level field only (port-level settings have none): a port entry keeps its policy's retryBudget */
  retryBudget?: TrafficPolicy['retryBudget']
}

function forPort(
  policy: TrafficPolicy | undefined,
  port: number,
): { policy: EffectivePolicy | undefined; portLevel: boolean } {
  if (policy === undefined) return { policy: undefined, portLevel: false }
  const p: PortTrafficPolicy | undefined = (policy.portLevelSettings ?? []).find((s) => s.port?.number === port)
  if (p === undefined) return { policy: pick(policy), portLevel: false }
  const out = pick(p)
  if (policy.retryBudget !== undefined) out.retryBudget = policy.retryBudget
  return { policy: out, portLevel: true }
}

function pick(p: EffectivePolicy): EffectivePolicy {
  const out: EffectivePolicy = {}
  if (p.loadBalancer !== undefined) out.loadBalancer = p.loadBalancer
  if (p.connectionPool !== undefined) out.connectionPool = p.connectionPool
  if (p.outlierDetection !== undefined) out.outlierDetection = p.outlierDetection
  if (p.tls !== undefined) out.tls = p.tls
  if (p.retryBudget !== undefined) out.retryBudget = p.retryBudget
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

/** Loom's load balancers beyond Istio's, chosen by a DestinationRule annotation (`loom.dev/load-balancer`). */
export type LoomLoadBalancer = 'peak-ewma'

/**
 * Cluster fields for a load balancer setting. `fallback` is the mesh default (Istio's is LEAST_REQUEST). Proxyless
 * gRPC has neither LEAST_REQUEST, RANDOM nor MAGLEV: those become ROUND_ROBIN and RING_HASH.
 *
 * Warmup (`warmup`, else the older `warmupDurationSecs`) becomes the slow_start_config of ROUND_ROBIN and
 * LEAST_REQUEST clusters, as Istio writes it; with RANDOM, PASSTHROUGH or consistentHash it is ignored, as in
 * Istio. Proxyless gRPC has no slow start: left out.
 *
 * `loom` (from the rule's annotation) replaces the simple load balancer of an Envoy-generator cluster: `peak-ewma`
 * becomes a load_balancing_policy whose first entry is Loom's PeakEwma and whose second is Envoy's LeastRequest, the
 * policy an Envoy that does not know Loom's extension runs instead. consistentHash keeps precedence (affinity needs
 * the hash), and warmup does not apply to it.
 */
export function loadBalancerFields(
  lb: LoadBalancerSettings | undefined,
  fallback: LbPolicy,
  generator: 'envoy' | 'grpc',
  loom?: LoomLoadBalancer,
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
  if (loom === 'peak-ewma' && generator === 'envoy') return { load_balancing_policy: PEAK_EWMA_POLICY }
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
  const slowStart = generator === 'envoy' && lb?.simple !== 'PASSTHROUGH' ? slowStartConfig(lb) : null
  if (slowStart !== null && policy === 'ROUND_ROBIN') out.round_robin_lb_config = { slow_start_config: slowStart }
  if (slowStart !== null && policy === 'LEAST_REQUEST') out.least_request_lb_config = { slow_start_config: slowStart }
  return out
}

/**
 * Istio's slow start from `warmup` (window, aggression default 1, minimum percent default 10, always written, with
 * Istio's runtime key) or `warmupDurationSecs` (the window alone); null when neither is set.
 */
function slowStartConfig(lb: LoadBalancerSettings | undefined): Json | null {
  const w = lb?.warmup
  if (w !== undefined) {
    const window = protoDuration(w.duration)
    if (window === null) return null
    return {
      slow_start_window: window,
      aggression: { default_value: w.aggression ?? 1, runtime_key: '(' },
      min_weight_percent: { value: w.minimumPercent ?? 10 },
    }
  }
  const window = protoDuration(lb?.warmupDurationSecs)
  return window === null ? null : { slow_start_window: window }
}

const PEAK_EWMA_POLICY: Json = {
  policies: [
    {
      typed_extension_config: {
        name: 'loom.load_balancing_policies.peak_ewma',
        typed_config: { '@type': TypeUrls.peakEwma },
      },
    },
    {
      typed_extension_config: {
        name: 'envoy.load_balancing_policies.least_request',
        typed_config: { '@type': TypeUrls.leastRequestLb },
      },
    },
  ],
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

/** Istio's circuit breaker thresholds for what a connectionPool leaves out: no limit (Envoy's 1024 and 3 are not used). */
export const NO_LIMIT = 4294967295

/**
 * What a connectionPool becomes on a cluster, as Istio's applyConnectionPool writes it: every cluster gets one
 * DEFAULT circuit breaker threshold (unlimited where the pool sets nothing; zero means unset, as in Istio);
 * `http.idleTimeout` (else `tcp.idleTimeout`) and `http.maxRequestsPerConnection` go to the HttpProtocolOptions'
 * `common_http_protocol_options`, `http.maxConcurrentStreams` to an HTTP/2 cluster's `http2_protocol_options`.
 * `tcp.connectTimeout` is read by connectTimeout().
 */
export function connectionPoolFields(p: EffectivePolicy | undefined, http2: boolean): Json {
  const pool = p?.connectionPool
  const positive = (n: number | undefined) => (typeof n === 'number' && n > 0 ? n : NO_LIMIT)
  const out: Json = {
    circuit_breakers: {
      thresholds: [
        {
          max_connections: positive(pool?.tcp?.maxConnections),
          max_pending_requests: positive(pool?.http?.http1MaxPendingRequests),
          max_requests: positive(pool?.http?.http2MaxRequests),
          max_retries: positive(pool?.http?.maxRetries),
          ...retryBudgetField(p?.retryBudget),
          track_remaining: true,
        },
      ],
    },
  }
  const common: Json = {}
  const idle = protoDuration(pool?.http?.idleTimeout) ?? protoDuration(pool?.tcp?.idleTimeout)
  if (idle !== null) common.idle_timeout = idle
  const perConnection = pool?.http?.maxRequestsPerConnection
  if (typeof perConnection === 'number' && perConnection > 0) common.max_requests_per_connection = perConnection
  const streams = pool?.http?.maxConcurrentStreams
  const h2: Json = {}
  if (http2 && typeof streams === 'number' && streams > 0) h2.max_concurrent_streams = streams
  if (!http2 && Object.keys(common).length === 0) return out
  const options: Json = {
    '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
    explicit_http_config: http2 ? { http2_protocol_options: h2 } : { http_protocol_options: {} },
  }
  if (Object.keys(common).length > 0) options.common_http_protocol_options = common
  out.typed_extension_protocol_options = { 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': options }
  return out
}

/**
 * A trafficPolicy.retryBudget on the threshold, as Istio's applyRetryBudget writes it: percent (default 20) as the
 * budget_percent, minRetryConcurrency (default 3; zero means unset) as min_retry_concurrency. Envoy then ignores
 * max_retries.
 */
function retryBudgetField(b: TrafficPolicy['retryBudget']): Json {
  if (b === undefined) return {}
  const min = b.minRetryConcurrency
  return {
    retry_budget: {
      budget_percent: { value: b.percent ?? 20 },
      min_retry_concurrency: typeof min === 'number' && min > 0 ? min : 3,
    },
  }
}

/**
 * What an outlierDetection becomes, as Istio's applyOutlierDetection writes it: success-rate ejection off, the
 * consecutive counters set (and enforced at 100% when non-zero), interval, base ejection time, max ejection percent,
 * and the local-origin split. Null without outlierDetection. (Istio also sets common_lb_config's panic threshold to
 * minHealthPercent; Loom's proxy has no panic mode, which is Istio's default of 0.)
 */
export function outlierDetectionFields(p: EffectivePolicy | undefined): Json | null {
  const o = p?.outlierDetection
  if (o === undefined) return null
  const out: Json = { enforcing_success_rate: 0 }
  if (typeof o.consecutive5xxErrors === 'number') {
    out.consecutive_5xx = o.consecutive5xxErrors
    out.enforcing_consecutive_5xx = o.consecutive5xxErrors > 0 ? 100 : 0
  }
  if (typeof o.consecutiveGatewayErrors === 'number') {
    out.consecutive_gateway_failure = o.consecutiveGatewayErrors
    out.enforcing_consecutive_gateway_failure = o.consecutiveGatewayErrors > 0 ? 100 : 0
  }
  const interval = protoDuration(o.interval)
  if (interval !== null) out.interval = interval
  const base = protoDuration(o.baseEjectionTime)
  if (base !== null) out.base_ejection_time = base
  if (typeof o.maxEjectionPercent === 'number' && o.maxEjectionPercent > 0) {
    out.max_ejection_percent = o.maxEjectionPercent
  }
  if (o.splitExternalLocalOriginErrors === true) {
    out.split_external_local_origin_errors = true
    if (typeof o.consecutiveLocalOriginFailures === 'number' && o.consecutiveLocalOriginFailures > 0) {
      out.consecutive_local_origin_failure = o.consecutiveLocalOriginFailures
      out.enforcing_consecutive_local_origin_failure = 100
    }
    out.enforcing_local_origin_success_rate = 0
  }
  return out
}
