/**
 * Stats kept as plain number fields on small objects, so the hot path bumps a property and never looks up a name.
 * Names and the Prometheus rendering follow Envoy's (`envoy_cluster_upstream_rq_total{envoy_cluster_name="x"}`).
 */

import type { UpstreamCluster } from '../cluster/cluster.js'
import { HealthCheckStats } from '../cluster/health-check/checker.js'
import { EJECTION_TYPES, OutlierStats } from '../cluster/outlier.js'
import type { PathStats } from './paths.js'
import { IstioMetrics } from '../telemetry/metrics.js'

/** Envoy's default histogram buckets, in milliseconds. */
export const BUCKETS_MS = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
]

/** The bucket bounds, then +Infinity: the search in `record` stops at the last bucket without a bounds test. */
const BOUNDS = Float64Array.of(...BUCKETS_MS, Number.POSITIVE_INFINITY)

export class Histogram {
  readonly counts = new Float64Array(BUCKETS_MS.length + 1)
  sum = 0
  count = 0
  record(ms: number): void {
    // the first bucket whose bound is at least ms (NaN: the first, as `ms > bound` is false)
    let i = 0
    while (ms > BOUNDS[i]!) i++
    this.counts[i]!++
    this.sum += ms
    this.count++
  }
  /** Approximate quantile from the buckets (upper bound of the bucket that holds it). */
  quantile(q: number): number {
    if (this.count === 0) return 0
    const target = q * this.count
    let acc = 0
    for (let i = 0; i < this.counts.length; i++) {
      acc += this.counts[i]!
      if (acc >= target) return BUCKETS_MS[i] ?? Number.POSITIVE_INFINITY
    }
    return Number.POSITIVE_INFINITY
  }
}

/** Request/response counters shared by the connection manager, clusters and routes. */
export class RequestStats {
  rq_total = 0
  rq_active = 0
  rq_1xx = 0
  rq_2xx = 0
  rq_3xx = 0
  rq_4xx = 0
  rq_5xx = 0
  rq_timeout = 0
  readonly rq_time = new Histogram()
  countStatus(status: number): void {
    if (status < 200) this.rq_1xx++
    else if (status < 300) this.rq_2xx++
    else if (status < 400) this.rq_3xx++
    else if (status < 500) this.rq_4xx++
    else this.rq_5xx++
  }
}

export class HttpConnManagerStats {
  readonly prefix: string
  readonly rq = new RequestStats()
  downstream_cx_total = 0
  downstream_cx_active = 0
  downstream_cx_http1_total = 0
  downstream_cx_http2_total = 0
  downstream_cx_rx_bytes_total = 0
  downstream_cx_tx_bytes_total = 0
  downstream_cx_protocol_error = 0
  downstream_rq_rx_reset = 0
  /** streams ended by stream_idle_timeout (or a route's idle_timeout) */
  downstream_rq_idle_timeout = 0
  /** request heads not received whole within request_headers_timeout */
  downstream_rq_header_timeout = 0
  /** connections closed because drain_timeout expired with requests still in flight */
  downstream_cx_drain_close = 0
  /** connections drained because they reached max_connection_duration */
  downstream_cx_max_duration_reached = 0
  downstream_rq_ws_on_non_ws_route = 0
  /** requests answered 400 because their path could not be normalized (or held an escaped slash under REJECT_REQUEST) */
  downstream_rq_failed_path_normalization = 0
  /** requests redirected to their path with escaped slashes decoded (UNESCAPE_AND_REDIRECT) */
  downstream_rq_redirected_with_normalized_path = 0
  downstream_cx_upgrades_total = 0
  /** Local replies and resets by Envoy response flag (NR, UH, UF, UT, DC, ...). */
  readonly flags = new Map<string, number>()
  /** Each HTTP filter's own counters (`fault` → FaultStats), kept across config versions like the rest. */
  readonly filters = new Map<string, object>()
  constructor(prefix: string) {
    this.prefix = prefix
  }
  flag(f: string): void {
    this.flags.set(f, (this.flags.get(f) ?? 0) + 1)
  }
  /** The counters object of filter `name` (made on first use; its number fields are the stats). */
  filterStats<T extends object>(name: string, make: new () => T): T {
    let s = this.filters.get(name) as T | undefined
    if (s === undefined) this.filters.set(name, (s = new make()))
    return s
  }
}

function* filterEntries(s: HttpConnManagerStats): Generator<[string, number]> {
  for (const [name, obj] of s.filters) {
    for (const [k, n] of Object.entries(obj)) if (typeof n === 'number') yield [`${name}.${k}`, n]
  }
}

export class ClusterStats {
  readonly name: string
  readonly rq = new RequestStats()
  upstream_cx_total = 0
  upstream_cx_active = 0
  upstream_cx_connect_fail = 0
  upstream_cx_connect_timeout = 0
  upstream_cx_destroy_with_active_rq = 0
  upstream_cx_protocol_error = 0
  upstream_cx_rx_bytes_total = 0
  upstream_cx_tx_bytes_total = 0
  upstream_rq_pending_total = 0
  upstream_rq_retry = 0
  upstream_rq_retry_success = 0
  upstream_rq_retry_overflow = 0
  upstream_rq_retry_limit_exceeded = 0
  upstream_rq_per_try_timeout = 0
  retry_or_shadow_abandoned = 0
  upstream_cx_none_healthy = 0
  upstream_cx_overflow = 0
  upstream_rq_pending_overflow = 0
  /** `outlier_detection.*` counters */
  readonly outlier = new OutlierStats()
  /** `health_check.*` counters */
  readonly healthCheck = new HealthCheckStats()
  /** The running cluster of this name (for the circuit breaker and outlier gauges), once bound. */
  cluster: UpstreamCluster | null = null
  constructor(name: string) {
    this.name = name
  }
}

/** Circuit breaker gauges and outlier detection stats of a cluster that configures them, `[name, value, gauge]`. */
function* resilienceEntries(s: ClusterStats): Generator<[string, number, boolean]> {
  const c = s.cluster
  const cb = c?.circuitBreakers
  if (c != null && cb != null) {
    yield ['upstream_rq_pending_active', cb.pending, true]
    for (const [k, n] of cb.gauges(c.retryBudget)) yield [`circuit_breakers.default.${k}`, n, true]
  }
  if (c?.outlierDetector != null || s.outlier.ejections_enforced_total > 0) {
    const o = s.outlier
    yield ['outlier_detection.ejections_active', c?.outlierDetector?.ejectionsActive ?? 0, true]
    yield ['outlier_detection.ejections_enforced_total', o.ejections_enforced_total, false]
    yield ['outlier_detection.ejections_overflow', o.ejections_overflow, false]
    for (const t of EJECTION_TYPES) {
      yield [`outlier_detection.ejections_enforced_${t}`, o.enforced.get(t) ?? 0, false]
      yield [`outlier_detection.ejections_detected_${t}`, o.detected.get(t) ?? 0, false]
    }
  }
  const hc = c?.healthChecker
  if (hc != null || s.healthCheck.attempt > 0) {
    const h = s.healthCheck
    yield ['health_check.attempt', h.attempt, false]
    yield ['health_check.success', h.success, false]
    yield ['health_check.failure', h.failure, false]
    yield ['health_check.network_failure', h.network_failure, false]
    yield ['health_check.passive_failure', h.passive_failure, false]
    yield ['health_check.verify_cluster', h.verify_cluster, false]
    yield ['health_check.healthy', hc?.healthyCount() ?? 0, true]
    yield ['health_check.degraded', 0, true]
  }
}

export class TcpProxyStats {
  readonly prefix: string
  downstream_cx_total = 0
  downstream_cx_rx_bytes_total = 0
  downstream_cx_tx_bytes_total = 0
  upstream_flush_active = 0
  idle_timeout = 0
  downstream_cx_no_route = 0
  constructor(prefix: string) {
    this.prefix = prefix
  }
}

/**
 * Counters named in full under a prefix (Envoy's network RBAC filter: `<stat_prefix>rbac.allowed`), for the
 * filters whose stats are not kept by a connection manager or a TCP proxy.
 */
export class CounterSet {
  readonly prefix: string
  readonly values: Record<string, number> = {}
  constructor(prefix: string) {
    this.prefix = prefix
  }
}

export class ListenerStats {
  readonly address: string
  downstream_cx_total = 0
  downstream_cx_active = 0
  downstream_cx_destroy = 0
  /** connections whose first bytes matched no filter chain */
  no_filter_chain_match = 0
  /** TLS handshakes refused because the chain's secrets have not arrived */
  downstream_cx_tls_secret_missing = 0
  /** TLS connections closed because the client's certificate was refused */
  downstream_cx_tls_peer_rejected = 0
  constructor(address: string) {
    this.address = address
  }
}

export class RouteStats {
  readonly vhost: string
  readonly route: string
  readonly rq = new RequestStats()
  constructor(vhost: string, route: string) {
    this.vhost = vhost
    this.route = route
  }
}

/** Everything the admin endpoints render. Objects register once when config is built. */
export class StatsStore {
  readonly hcm = new Map<string, HttpConnManagerStats>()
  readonly clusters = new Map<string, ClusterStats>()
  readonly listeners = new Map<string, ListenerStats>()
  readonly tcp = new Map<string, TcpProxyStats>()
  readonly routes = new Map<string, RouteStats>()
  readonly counters = new Map<string, CounterSet>()
  /** the busiest request paths of the connection managers that are not inbound; null: not kept */
  paths: PathStats | null = null
  /** Istio's standard metrics (the istio.stats filters'), rendered after Envoy's */
  readonly istio = new IstioMetrics()

  forHcm(prefix: string): HttpConnManagerStats {
    let s = this.hcm.get(prefix)
    if (s === undefined) this.hcm.set(prefix, (s = new HttpConnManagerStats(prefix)))
    return s
  }
  forCluster(name: string): ClusterStats {
    let s = this.clusters.get(name)
    if (s === undefined) this.clusters.set(name, (s = new ClusterStats(name)))
    return s
  }
  forListener(address: string): ListenerStats {
    let s = this.listeners.get(address)
    if (s === undefined) this.listeners.set(address, (s = new ListenerStats(address)))
    return s
  }
  forTcp(prefix: string): TcpProxyStats {
    let s = this.tcp.get(prefix)
    if (s === undefined) this.tcp.set(prefix, (s = new TcpProxyStats(prefix)))
    return s
  }
  /** The counters under `prefix`, kept across config versions like the rest. */
  forCounters(prefix: string): CounterSet {
    let s = this.counters.get(prefix)
    if (s === undefined) this.counters.set(prefix, (s = new CounterSet(prefix)))
    return s
  }
  forRoute(vhost: string, route: string): RouteStats {
    const key = `${vhost}\u0000${route}`
    let s = this.routes.get(key)
    if (s === undefined) this.routes.set(key, (s = new RouteStats(vhost, route)))
    return s
  }

  /** Envoy's plain-text `/stats` form: `name: value` lines, sorted. */
  renderText(): string {
    const lines: string[] = []
    for (const [name, value] of this.entries()) lines.push(`${name}: ${value}`)
    return `${lines.sort().join('\n')}\n`
  }

  /** `[dotted.name, value]` pairs, counters and gauges; histograms as their summary. */
  *entries(): Generator<[string, number]> {
    for (const s of this.hcm.values()) {
      const p = `http.${s.prefix}.`
      yield* rqEntries(`${p}downstream_`, s.rq)
      for (const k of HCM_FIELDS) yield [`${p}${k}`, s[k]]
      for (const [f, n] of s.flags) yield [`${p}response_flag.${f}`, n]
      for (const [k, n] of filterEntries(s)) yield [`${p}${k}`, n]
    }
    for (const s of this.clusters.values()) {
      const p = `cluster.${s.name}.`
      yield* rqEntries(`${p}upstream_`, s.rq)
      for (const k of CLUSTER_FIELDS) yield [`${p}${k}`, s[k]]
      for (const [k, n] of resilienceEntries(s)) yield [`${p}${k}`, n]
    }
    for (const s of this.listeners.values()) {
      const p = `listener.${s.address}.`
      yield [`${p}downstream_cx_total`, s.downstream_cx_total]
      yield [`${p}downstream_cx_active`, s.downstream_cx_active]
      yield [`${p}downstream_cx_destroy`, s.downstream_cx_destroy]
      yield [`${p}no_filter_chain_match`, s.no_filter_chain_match]
      yield [`${p}downstream_cx_tls_secret_missing`, s.downstream_cx_tls_secret_missing]
      yield [`${p}downstream_cx_tls_peer_rejected`, s.downstream_cx_tls_peer_rejected]
    }
    for (const s of this.tcp.values()) {
      const p = `tcp.${s.prefix}.`
      for (const k of TCP_FIELDS) yield [`${p}${k}`, s[k]]
    }
    for (const s of this.routes.values()) {
      yield* rqEntries(`vhost.${s.vhost}.route.${s.route}.`, s.rq)
    }
    for (const s of this.counters.values()) for (const [k, n] of Object.entries(s.values)) yield [`${s.prefix}${k}`, n]
    yield* this.istio.entries()
  }

  /** Prometheus text exposition, Envoy's names with tags turned into labels. */
  renderPrometheus(): string {
    const out: string[] = []
    const emitted = new Set<string>()
    const line = (metric: string, type: string, labels: string, value: number) => {
      if (!emitted.has(metric)) {
        emitted.add(metric)
        out.push(`# TYPE ${metric} ${type}`)
      }
      out.push(`${metric}{${labels}} ${value}`)
    }
    const hist = (metric: string, labels: string, h: Histogram) => {
      if (!emitted.has(metric)) {
        emitted.add(metric)
        out.push(`# TYPE ${metric} histogram`)
      }
      let acc = 0
      for (let i = 0; i < BUCKETS_MS.length; i++) {
        acc += h.counts[i]!
        out.push(`${metric}_bucket{${labels},le="${BUCKETS_MS[i]}"} ${acc}`)
      }
      out.push(`${metric}_bucket{${labels},le="+Inf"} ${h.count}`)
      out.push(`${metric}_sum{${labels}} ${h.sum}`)
      out.push(`${metric}_count{${labels}} ${h.count}`)
    }
    const rq = (base: string, labels: string, r: RequestStats) => {
      line(`${base}rq_total`, 'counter', labels, r.rq_total)
      line(`${base}rq_active`, 'gauge', labels, r.rq_active)
      line(`${base}rq_timeout`, 'counter', labels, r.rq_timeout)
      for (const cls of ['1xx', '2xx', '3xx', '4xx', '5xx'] as const) {
        line(`${base}rq_xx`, 'counter', `${labels},envoy_response_code_class="${cls[0]}"`, r[`rq_${cls}`])
      }
      hist(`${base}rq_time`, labels, r.rq_time)
    }
    for (const s of this.hcm.values()) {
      const l = `envoy_http_conn_manager_prefix="${esc(s.prefix)}"`
      rq('envoy_http_downstream_', l, s.rq)
      for (const k of HCM_FIELDS) line(`envoy_http_${k}`, k.endsWith('_active') ? 'gauge' : 'counter', l, s[k])
      for (const [f, n] of s.flags) line('envoy_http_response_flags_total', 'counter', `${l},response_flag="${f}"`, n)
      for (const [k, n] of filterEntries(s)) {
        line(`envoy_http_${k.replace('.', '_')}`, k.endsWith('active_faults') ? 'gauge' : 'counter', l, n)
      }
    }
    for (const s of this.clusters.values()) {
      const l = `envoy_cluster_name="${esc(s.name)}"`
      rq('envoy_cluster_upstream_', l, s.rq)
      for (const k of CLUSTER_FIELDS) line(`envoy_cluster_${k}`, k.endsWith('_active') ? 'gauge' : 'counter', l, s[k])
      for (const [k, n, gauge] of resilienceEntries(s)) {
        line(`envoy_cluster_${k.replace(/\./g, '_')}`, gauge ? 'gauge' : 'counter', l, n)
      }
    }
    for (const s of this.listeners.values()) {
      const l = `envoy_listener_address="${esc(s.address)}"`
      line('envoy_listener_downstream_cx_total', 'counter', l, s.downstream_cx_total)
      line('envoy_listener_downstream_cx_active', 'gauge', l, s.downstream_cx_active)
      line('envoy_listener_downstream_cx_destroy', 'counter', l, s.downstream_cx_destroy)
      line('envoy_listener_no_filter_chain_match', 'counter', l, s.no_filter_chain_match)
      line('envoy_listener_downstream_cx_tls_secret_missing', 'counter', l, s.downstream_cx_tls_secret_missing)
      line('envoy_listener_downstream_cx_tls_peer_rejected', 'counter', l, s.downstream_cx_tls_peer_rejected)
    }
    for (const s of this.tcp.values()) {
      const l = `envoy_tcp_prefix="${esc(s.prefix)}"`
      for (const k of TCP_FIELDS) line(`envoy_tcp_${k}`, k.endsWith('_active') ? 'gauge' : 'counter', l, s[k])
    }
    for (const s of this.routes.values()) {
      rq('envoy_route_', `envoy_virtual_host="${esc(s.vhost)}",envoy_route="${esc(s.route)}"`, s.rq)
    }
    for (const s of this.counters.values()) {
      for (const [k, n] of Object.entries(s.values))
        line(`envoy_${`${s.prefix}${k}`.replace(/\W/g, '_')}`, 'counter', '', n)
    }
    this.istio.renderPrometheus(out)
    return `${out.join('\n')}\n`
  }
}

const HCM_FIELDS = [
  'downstream_cx_total',
  'downstream_cx_active',
  'downstream_cx_http1_total',
  'downstream_cx_http2_total',
  'downstream_cx_rx_bytes_total',
  'downstream_cx_tx_bytes_total',
  'downstream_cx_protocol_error',
  'downstream_rq_rx_reset',
  'downstream_rq_idle_timeout',
  'downstream_rq_header_timeout',
  'downstream_cx_drain_close',
  'downstream_cx_max_duration_reached',
  'downstream_cx_upgrades_total',
  'downstream_rq_failed_path_normalization',
  'downstream_rq_redirected_with_normalized_path',
] as const
const CLUSTER_FIELDS = [
  'upstream_cx_total',
  'upstream_cx_active',
  'upstream_cx_connect_fail',
  'upstream_cx_connect_timeout',
  'upstream_cx_destroy_with_active_rq',
  'upstream_cx_protocol_error',
  'upstream_cx_rx_bytes_total',
  'upstream_cx_tx_bytes_total',
  'upstream_cx_none_healthy',
  'upstream_rq_retry',
  'upstream_rq_retry_success',
  'upstream_rq_retry_overflow',
  'upstream_rq_retry_limit_exceeded',
  'upstream_rq_per_try_timeout',
  'retry_or_shadow_abandoned',
  'upstream_rq_pending_total',
  'upstream_cx_overflow',
  'upstream_rq_pending_overflow',
] as const
const TCP_FIELDS = [
  'downstream_cx_total',
  'downstream_cx_rx_bytes_total',
  'downstream_cx_tx_bytes_total',
  'idle_timeout',
  'downstream_cx_no_route',
] as const

function* rqEntries(p: string, r: RequestStats): Generator<[string, number]> {
  yield [`${p}rq_total`, r.rq_total]
  yield [`${p}rq_active`, r.rq_active]
  yield [`${p}rq_1xx`, r.rq_1xx]
  yield [`${p}rq_2xx`, r.rq_2xx]
  yield [`${p}rq_3xx`, r.rq_3xx]
  yield [`${p}rq_4xx`, r.rq_4xx]
  yield [`${p}rq_5xx`, r.rq_5xx]
  yield [`${p}rq_timeout`, r.rq_timeout]
  yield [`${p}rq_time.count`, r.rq_time.count]
  yield [`${p}rq_time.p50`, r.rq_time.quantile(0.5)]
  yield [`${p}rq_time.p99`, r.rq_time.quantile(0.99)]
}

function esc(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}
