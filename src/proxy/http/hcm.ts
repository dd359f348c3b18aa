/**
 * The HTTP connection manager's compiled configuration: everything a request needs, built once per config version
 * and shared by every connection of a filter chain.
 */
import type { HttpConnectionManager } from '../../config/envoy.js'
import { parseDurationMs } from '../../core/duration.js'
import type { AccessLogSink } from '../access-log.js'
import { createAccessLogs } from '../access-log.js'
import type { BlockList } from 'node:net'
import type { ClusterManager } from '../cluster/index.js'
import type { CompiledRouteConfig } from '../route/router.js'
import type { HttpConnManagerStats, StatsStore } from '../stats/stats.js'
import { type KeepaliveOptions, keepaliveOptions } from './h2/keepalive.js'
import { DEFAULT_LIMITS, type HttpParseError, type Limits } from './h1/parse.js'
import { Deadlines } from './deadlines.js'
import { decisionsOf, ExplainFilterFactory } from './filters/explain/explain.js'
import { compileHttpFilters } from './filters/index.js'
import type { HttpFilterFactory } from './filters/filter.js'
import type { TelemetryContext } from './filters/istio-stats/istio-stats.js'
import { compileInternalAddresses } from './edge.js'
import { PathNormalizer } from './path-normalize.js'
import type { PoolManager } from './pools.js'
import type { ActiveStream } from './stream.js'
import { XfccPolicy } from './xfcc.js'

function durationMs(d: string | undefined, otherwise: number): number {
  return d === undefined ? otherwise : (parseDurationMs(d) ?? otherwise)
}

export class HcmContext {
  readonly statPrefix: string
  readonly stats: HttpConnManagerStats
  readonly store: StatsStore
  /** replaced in place when RDS delivers a new version of `rdsName` */
  router: CompiledRouteConfig
  readonly rdsName: string | null
  readonly clusters: ClusterManager
  readonly pools: PoolManager
  readonly accessLogs: AccessLogSink[]
  // edge rules (see edge.ts)
  readonly generateRequestId: boolean
  readonly preserveExternalRequestId: boolean
  readonly useRemoteAddress: boolean
  readonly xffTrustedHops: number
  /** append the peer to x-forwarded-for: use_remote_address and not skip_xff_append */
  readonly appendXff: boolean
  /** internal_address_config.cidr_ranges; null: no address is internal */
  readonly internalAddresses: BlockList | null
  /** normalize_path, merge_slashes, path_with_escaped_slashes_action; null when none applies (Envoy's defaults) */
  readonly pathNormalizer: PathNormalizer | null
  readonly limits: Limits
  readonly idleTimeoutMs: number
  /** request_headers_timeout: first byte of a request head to its end; 0 disables (Envoy's default) */
  readonly requestHeadersTimeoutMs: number
  /** request_timeout: the whole request received; 0 disables (Envoy's default) */
  readonly requestTimeoutMs: number
  /** stream_idle_timeout: default 5 min as Envoy; 0 disables; a route's idle_timeout overrides it */
  readonly streamIdleTimeoutMs: number
  /** common_http_protocol_options.max_connection_duration: the connection drains once this old; 0: never */
  readonly maxConnectionDurationMs: number
  /** drain_timeout: how long a draining connection may finish its requests before it is closed; default 5 s */
  readonly drainTimeoutMs: number
  readonly upgrades: Set<string>
  readonly rejectUnderscores: boolean
  readonly dropUnderscores: boolean
  readonly codec: 'AUTO' | 'HTTP1' | 'HTTP2'
  readonly http2: {
    maxConcurrentStreams: number
    initialWindowSize: number
    initialConnectionWindowSize: number
    keepalive: KeepaliveOptions
  }
  /** route timeouts of this connection manager's streams */
  readonly deadlines = new Deadlines()
  /** the HTTP filters before the router, in order; empty for a router-only chain */
  readonly filters: HttpFilterFactory[]
  /**
   * the chain has the explain filter, which decides who may send `x-loom-explain`: the edge rules leave that
   * header to it instead of removing it with the other `x-loom-*` headers
   */
  readonly explainFilter: boolean
  /** forward_client_cert_details / set_current_client_cert_details (Envoy's default: SANITIZE) */
  readonly xfcc: XfccPolicy

  constructor(
    cfg: HttpConnectionManager,
    router: CompiledRouteConfig,
    clusters: ClusterManager,
    pools: PoolManager,
    store: StatsStore,
    rdsName: string | null = null,
    telemetry?: TelemetryContext,
  ) {
    this.rdsName = rdsName
    this.statPrefix = cfg.stat_prefix
    this.store = store
    this.stats = store.forHcm(cfg.stat_prefix)
    this.filters = compileHttpFilters(cfg.http_filters ?? [], this.stats, { clusters, pools, store }, telemetry)
    this.explainFilter = this.filters.some((f) => f instanceof ExplainFilterFactory)
    this.xfcc = new XfccPolicy(cfg)
    this.router = router
    this.clusters = clusters
    this.pools = pools
    this.accessLogs = createAccessLogs(cfg.access_log)
    this.generateRequestId = cfg.generate_request_id ?? true
    this.preserveExternalRequestId = cfg.preserve_external_request_id ?? false
    this.useRemoteAddress = cfg.use_remote_address ?? false
    this.xffTrustedHops = cfg.xff_num_trusted_hops ?? 0
    this.appendXff = this.useRemoteAddress && cfg.skip_xff_append !== true
    this.internalAddresses = compileInternalAddresses(cfg.internal_address_config?.cidr_ranges)
    this.pathNormalizer = PathNormalizer.compile(cfg)
    const common = cfg.common_http_protocol_options
    this.limits = {
      maxHeadBytes: (cfg.max_request_headers_kb ?? DEFAULT_LIMITS.maxHeadBytes / 1024) * 1024,
      maxHeaders: common?.max_headers_count ?? DEFAULT_LIMITS.maxHeaders,
    }
    this.idleTimeoutMs = common?.idle_timeout === undefined ? 3600_000 : parseDurationMs(common.idle_timeout)!
    this.requestHeadersTimeoutMs = durationMs(cfg.request_headers_timeout, 0)
    this.requestTimeoutMs = durationMs(cfg.request_timeout, 0)
    this.streamIdleTimeoutMs = durationMs(cfg.stream_idle_timeout, 300_000)
    this.drainTimeoutMs = durationMs(cfg.drain_timeout, 5000)
    this.maxConnectionDurationMs = durationMs(common?.max_connection_duration, 0)
    this.rejectUnderscores = common?.headers_with_underscores_action === 'REJECT_REQUEST'
    this.dropUnderscores = common?.headers_with_underscores_action === 'DROP_HEADER'
    this.upgrades = new Set(
      (cfg.upgrade_configs ?? []).filter((u) => u.enabled !== false).map((u) => u.upgrade_type.toLowerCase()),
    )
    this.codec = cfg.codec_type ?? 'AUTO'
    this.http2 = {
      maxConcurrentStreams: cfg.http2_protocol_options?.max_concurrent_streams ?? 2147483647,
      initialWindowSize: cfg.http2_protocol_options?.initial_stream_window_size ?? 268435456,
      initialConnectionWindowSize: cfg.http2_protocol_options?.initial_connection_window_size ?? 268435456,
      keepalive: keepaliveOptions(cfg.http2_protocol_options?.connection_keepalive),
    }
  }

  logAccess(s: ActiveStream, ms: number): void {
    const head = s.head
    const entry = {
      start_time: new Date(Date.now() - ms).toISOString(),
      method: head?.method ?? null,
      path: s.originalPath || null,
      protocol: head?.protocol ?? null,
      response_code: s.status,
      response_flags: s.flag || '-',
      reason: s.reason || null,
      bytes_received: s.bytesReceived,
      bytes_sent: s.bytesSent,
      duration_ms: Math.round(ms * 1000) / 1000,
      authority: head?.authority ?? null,
      downstream_remote_address: s.sourceIp,
      downstream_direct_remote_address: s.peerIp,
      upstream_cluster: s.cluster?.name ?? null,
      upstream_host: s.host?.key ?? null,
      route_name: s.route?.name ?? null,
      request_id: s.requestId || null,
      user_agent: head?.headers.get('user-agent') ?? null,
    }
    // the decision record of a request that asked for it (x-loom-explain, filters/explain/)
    const decisions = decisionsOf(s)
    if (decisions !== undefined) (entry as Record<string, unknown>).loom_decisions = decisions
    for (const l of this.accessLogs) l.write(entry)
  }

  logProtocolError(sourceIp: string, err: HttpParseError): void {
    if (this.accessLogs.length === 0) return
    const entry = {
      start_time: new Date().toISOString(),
      response_code: err.status,
      response_flags: 'DPE',
      reason: err.reason,
      downstream_remote_address: sourceIp,
    }
    for (const l of this.accessLogs) l.write(entry)
  }

  close(): void {
    for (const l of this.accessLogs) l.close()
  }
}
