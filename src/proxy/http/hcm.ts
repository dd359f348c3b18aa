/**
 * The HTTP connection manager's compiled configuration: everything a request needs, built once per config version
 * and shared by every connection of a filter chain.
 */
import type { HttpConnectionManager } from '../../config/envoy.js'
import { parseDurationMs } from '../../core/duration.js'
import type { AccessLogSink, FormatInput } from '../access-log.js'
import { createAccessLogs } from '../access-log.js'
import type { BlockList } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { connectionPeer } from '../identity/connection-peer.js'
import { TapHub } from '../tap/tap.js'
import type { ClusterManager } from '../cluster/index.js'
import type { OnDemandHosts } from '../route/on-demand.js'
import type { CompiledRouteConfig } from '../route/router.js'
import type { PathStats } from '../stats/paths.js'
import type { HttpConnManagerStats, StatsStore } from '../stats/stats.js'
import { type KeepaliveOptions, keepaliveOptions } from './h2/keepalive.js'
import { DEFAULT_LIMITS, type HttpParseError, type Limits } from './h1/parse.js'
import { Deadlines } from './deadlines.js'
import { decisionsOf, ExplainFilterFactory } from './filters/explain/explain.js'
import { compileHttpFilters } from './filters/index.js'
import { RBAC_METADATA } from './filters/rbac/rbac.js'
import type { HttpFilterFactory } from './filters/filter.js'
import type { TelemetryContext } from './filters/istio-stats/istio-stats.js'
import { compileInternalAddresses } from './edge.js'
import { PathNormalizer } from './path-normalize.js'
import type { PoolManager } from './pools.js'
import type { ActiveStream } from './stream.js'
import type { Headers } from './headers.js'
import { XfccPolicy } from './xfcc.js'
import { HcmTracer } from '../tracing/tracer.js'

function durationMs(d: string | undefined, otherwise: number): number {
  return d === undefined ? otherwise : (parseDurationMs(d) ?? otherwise)
}

/** `ip:port`, brackets around an IPv6 address; null without an address. */
export function addressOf(ip: string | undefined, port: number | undefined): string | null {
  if (ip === undefined || ip === '') return null
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`
}

/** The trace id a request carries: W3C `traceparent`, else B3 (`x-b3-traceid`, or the single `b3` header). */
export function traceIdOf(h: Headers): string | null {
  const tp = h.get('traceparent')
  if (tp !== undefined) {
    const id = tp.split('-')[1]
    if (id !== undefined && /^[0-9a-f]{32}$/.test(id) && !/^0+$/.test(id)) return id
  }
  const b3 = h.get('x-b3-traceid')
  if (b3 !== undefined && /^[0-9a-f]{16}([0-9a-f]{16})?$/i.test(b3)) return b3.toLowerCase()
  const single = h.get('b3')
  if (single !== undefined) {
    const id = single.split('-')[0]!
    if (/^[0-9a-f]{16}([0-9a-f]{16})?$/i.test(id)) return id.toLowerCase()
  }
  return null
}

const NO_METADATA = (): undefined => undefined

/**
 * The RBAC filters' decision from their dynamic metadata (every filter of the chain writes the same keys, prefixed
 * by its `rules_stat_prefix`): denied when one denied (its policy, null for `[none]`), else allowed with the policy
 * that allowed; null when no RBAC filter enforced anything. Shadow (dry-run) rules likewise.
 */
function rbacDecision(md: Readonly<Record<string, unknown>> | undefined): {
  result: string | null
  policy: string | null
  shadowResult: string | null
  shadowPolicy: string | null
} {
  let result: string | null = null
  let policy: string | null = null
  let shadowResult: string | null = null
  let shadowPolicy: string | null = null
  if (md !== undefined) {
    for (const [k, v] of Object.entries(md)) {
      if (k.endsWith('enforced_engine_result')) {
        if (result !== 'denied') result = String(v)
        if (v === 'denied') policy = (md[`${k.slice(0, -'engine_result'.length)}effective_policy_id`] as string) ?? null
      } else if (k.endsWith('shadow_engine_result')) {
        if (shadowResult !== 'denied') shadowResult = String(v)
        if (v === 'denied' || shadowPolicy === null)
          shadowPolicy = (md[`${k.slice(0, -'engine_result'.length)}effective_policy_id`] as string) ?? shadowPolicy
      }
    }
    if (result === 'allowed')
      for (const [k, v] of Object.entries(md)) if (k.endsWith('enforced_effective_policy_id')) policy = String(v)
  }
  return { result, policy, shadowResult, shadowPolicy }
}

export class HcmContext {
  readonly statPrefix: string
  readonly stats: HttpConnManagerStats
  readonly store: StatsStore
  /** replaced in place when RDS delivers a new version of `rdsName` */
  router: CompiledRouteConfig
  /** on-demand virtual hosts, when `rdsName` names `vhds` (route/on-demand.ts); null otherwise */
  onDemand: OnDemandHosts | null = null
  readonly rdsName: string | null
  readonly clusters: ClusterManager
  readonly pools: PoolManager
  readonly accessLogs: AccessLogSink[]
  /**
   * the proxy's busiest-paths table, for a connection manager that is not inbound (stat prefix `inbound_…`, as
   * Istio names a sidecar's inbound ones): each request is counted once, by the proxy that sent it; null: none
   */
  readonly paths: PathStats | null
  /** whether an access log is configured (then each stream ending builds its entry) */
  readonly recording: boolean
  /** the proxy's live taps (tap.ts): `tap.active` is all a stream reads while nobody taps */
  readonly tap: TapHub
  /** `inbound` for a sidecar's inbound connection managers (stat prefix `inbound...`), else `outbound` */
  readonly direction: 'inbound' | 'outbound'
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
  /** `tracing` with a provider (src/proxy/tracing/); null: the streams make no span */
  readonly tracer: HcmTracer | null

  constructor(
    cfg: HttpConnectionManager,
    router: CompiledRouteConfig,
    clusters: ClusterManager,
    pools: PoolManager,
    store: StatsStore,
    rdsName: string | null = null,
    telemetry?: TelemetryContext,
    tap: TapHub = new TapHub(),
  ) {
    this.rdsName = rdsName
    this.tap = tap
    this.direction = cfg.stat_prefix.startsWith('inbound') ? 'inbound' : 'outbound'
    this.statPrefix = cfg.stat_prefix
    this.store = store
    this.stats = store.forHcm(cfg.stat_prefix)
    this.filters = compileHttpFilters(cfg.http_filters ?? [], this.stats, { clusters, pools, store }, telemetry)
    this.explainFilter = this.filters.some((f) => f instanceof ExplainFilterFactory)
    this.xfcc = new XfccPolicy(cfg)
    this.tracer =
      cfg.tracing?.provider === undefined
        ? null
        : new HcmTracer(
            cfg.tracing,
            telemetry?.direction,
            { clusters, pools, store },
            cfg.request_id_extension?.typed_config.use_request_id_for_trace_sampling ?? true,
          )
    this.router = router
    this.clusters = clusters
    this.pools = pools
    this.accessLogs = createAccessLogs(cfg.access_log)
    this.paths = cfg.stat_prefix.startsWith('inbound_') ? null : store.paths
    this.recording = this.accessLogs.length > 0
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

  /**
   * The stream's access log entry, written to the access logs and offered to the taps; called when the stream ends,
   * only when an access log is configured or somebody taps.
   */
  logAccess(s: ActiveStream, ms: number): void {
    const head = s.head
    const headers = head?.headers
    const socket = s.downstreamSocket
    const flag = s.flag
    const status = s.status
    const kind = s.route?.kind
    const rbac = rbacDecision(s.metadata(RBAC_METADATA))
    const authn = s.metadata('istio_authn')
    const sni = (socket as TLSSocket | null)?.servername
    const entry: Record<string, unknown> = {
      start_time: new Date(Date.now() - ms).toISOString(),
      method: head?.method ?? null,
      path: s.originalPath || null,
      protocol: head?.protocol ?? null,
      response_code: status,
      response_flags: flag || '-',
      response_code_details:
        s.reason !== ''
          ? s.reason
          : status === 0
            ? null
            : kind === 'direct'
              ? 'direct_response'
              : kind === 'redirect'
                ? 'redirect'
                : 'via_upstream',
      connection_termination_details: null,
      upstream_transport_failure_reason: flag.includes('UF') ? s.reason || null : null,
      bytes_received: s.bytesReceived,
      bytes_sent: s.bytesSent,
      duration: Math.round(ms * 1000) / 1000,
      upstream_service_time: s.upstreamServiceMs < 0 ? null : Math.round(s.upstreamServiceMs),
      x_forwarded_for: headers?.get('x-forwarded-for') ?? null,
      user_agent: headers?.get('user-agent') ?? null,
      request_id: s.requestId || null,
      authority: head?.authority ?? null,
      upstream_host: s.host?.key ?? null,
      upstream_cluster: s.cluster?.name ?? null,
      upstream_local_address: s.upstreamLocalAddress,
      downstream_local_address: addressOf(socket?.localAddress, socket?.localPort),
      downstream_remote_address: s.sourceIp,
      downstream_direct_remote_address: s.peerIp,
      requested_server_name: typeof sni === 'string' ? sni : null,
      route_name: s.route?.name ?? null,
      upstream_request_attempt_count: s.attemptCount,
      downstream_peer_principal: connectionPeer(socket)?.uris[0] ?? null,
      upstream_peer_principal: s.upstreamPeerPrincipal,
      request_auth_principal: (authn?.['request.auth.principal'] as string | undefined) ?? null,
      rbac_result: rbac.result,
      rbac_policy: rbac.policy,
      rbac_shadow_result: rbac.shadowResult,
      rbac_shadow_policy: rbac.shadowPolicy,
      trace_id: headers === undefined ? null : traceIdOf(headers),
    }
    const span = s.span
    if (span !== null) {
      // a traced stream: its own span's ids (the trace id is the one traceparent now carries)
      entry.trace_id = span.traceId
      entry.span_id = span.spanId
    }
    // the decision record of a request that asked for it (x-loom-explain, filters/explain/)
    const decisions = decisionsOf(s)
    if (decisions !== undefined) entry.loom_decisions = decisions
    if (this.recording) {
      const input: FormatInput = {
        entry,
        header: headers === undefined ? NO_METADATA : (name) => headers.get(name),
        metadata: (ns) => s.metadata(ns),
      }
      for (const l of this.accessLogs) l.write(entry, input)
    }
    if (this.tap.active) this.tap.publish(this.direction, entry)
  }

  logProtocolError(sourceIp: string, err: HttpParseError): void {
    if (this.accessLogs.length === 0) return
    const entry = {
      start_time: new Date().toISOString(),
      response_code: err.status,
      response_flags: 'DPE',
      response_code_details: err.reason,
      downstream_remote_address: sourceIp,
    }
    for (const l of this.accessLogs) l.write(entry)
  }

  close(): void {
    for (const l of this.accessLogs) l.close()
  }
}
