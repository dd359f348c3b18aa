/**
 * ActiveStream: one request's life inside the HTTP connection manager.
 *
 * It runs after the downstream codec has parsed a request head and before the upstream codec sends it: route
 * matching, redirects and direct responses, cluster and host choice, header mutations, the route timeout, and every
 * local reply (with Envoy's response flag in stats and access logs, and a human reason in `x-loom-reason`).
 */
import { performance } from 'node:perf_hooks'
import { Buffer } from 'node:buffer'
import type { Socket } from 'node:net'
import type { Host, UpstreamCluster } from '../cluster/index.js'
import type { OnDemandHosts } from '../route/on-demand.js'
import type { CompiledRoute } from '../route/router.js'
import type { RouteStats } from '../stats/stats.js'
import { Headers } from './headers.js'
import { type FilterCallbacks, STOP, type StreamFilter, type StreamInfo } from './filters/filter.js'
import { applyEdgeRules } from './edge.js'
import { addressOf, type HcmContext } from './hcm.js'
import { connectionPeer } from '../identity/connection-peer.js'
import type { DownstreamSink, RequestHead, UpstreamCallbacks, UpstreamRequest, UpstreamResetReason } from './types.js'
import { HOP_BY_HOP } from './types.js'
import { type CompiledRetryPolicy, RETRY_BUFFER_LIMIT_BYTES } from './retry.js'
import { StreamTimeouts, type TimedStream } from './stream-timeouts.js'
import { ShadowRequest } from './shadow.js'
import { PATH_OK, PATH_REDIRECT, type PathNormalizer } from './path-normalize.js'
import type { ActiveSpan } from '../tracing/tracer.js'

/** The on-demand VHDS wait's place in a stream's filter list: it has no hooks of its own. */
const ON_DEMAND_STEP: StreamFilter = {}

/** Local replies: status, Envoy response flag, `x-loom-reason`, body text. */
export const LocalReplies = {
  noRoute: [404, 'NR', 'route_not_found', 'no route matched the request'],
  noCluster: [503, 'NC', 'cluster_not_found', 'the route points at a cluster that does not exist'],
  noHealthyUpstream: [503, 'UH', 'no_healthy_upstream', 'no healthy upstream'],
  connectFailure: [503, 'UF', 'upstream_connect_failure', 'upstream connect error: connection failure'],
  connectTimeout: [503, 'UF', 'upstream_connect_timeout', 'upstream connect error: connect timeout'],
  connectionTermination: [503, 'UC', 'upstream_reset', 'upstream reset before response headers'],
  protocolError: [502, 'UPE', 'upstream_protocol_error', 'upstream sent an invalid HTTP response'],
  overflow: [503, 'UO', 'upstream_overflow', 'upstream connection pool overflow'],
  timeout: [504, 'UT', 'upstream_timeout', 'upstream request timeout'],
  idleTimeout: [408, 'SI', 'stream_idle_timeout', 'stream idle timeout'],
  /** the idle timeout of a stream whose request was received whole: Envoy answers 504 then */
  idleTimeoutAfterRequest: [504, 'SI', 'stream_idle_timeout', 'stream idle timeout'],
  requestTimeout: [408, '', 'request_overall_timeout', 'request timeout'],
  upgradeRejected: [403, '', 'upgrade_not_allowed', 'this upgrade is not enabled on the listener'],
  /** normalize_path could not normalize the path, or an escaped slash under REJECT_REQUEST (Envoy sets no flag) */
  pathNormalizationFailed: [400, '', 'path_normalization_failed', 'bad request: the path cannot be normalized'],
  retryBufferExceeded: [
    507,
    '',
    'request_payload_exceeded_retry_buffer_limit',
    'exceeded request buffer limit while retrying upstream',
  ],
} as const satisfies Record<string, readonly [number, string, string, string]>
type LocalReply = (typeof LocalReplies)[keyof typeof LocalReplies]

const RESET_REPLY: Record<UpstreamResetReason, LocalReply> = {
  connect_failure: LocalReplies.connectFailure,
  connect_timeout: LocalReplies.connectTimeout,
  connection_termination: LocalReplies.connectionTermination,
  remote_reset: LocalReplies.connectionTermination,
  refused_stream: LocalReplies.connectionTermination,
  protocol_error: LocalReplies.protocolError,
  overflow: LocalReplies.overflow,
}

const routeStatsCache = new WeakMap<CompiledRoute, RouteStats>()
const EMPTY = Buffer.alloc(0)

/** Request body bytes that past this, held while a filter has stopped the chain, pause the client. */
const HOLD_LIMIT_BYTES = 1024 * 1024

/** A stream's filters that have a hook on the request body (decodeData, decodeTrailers): `ActiveStream.bodyHooks`. */
const DECODES_BODY = 1
/** ... and on the response body (encodeData, encodeTrailers). */
const ENCODES_BODY = 2

function onPerTryTimeout(a: UpstreamAttempt): void {
  a.timer = null
  a.stream.perTryTimeout(a)
}

function onBackOff(stream: ActiveStream): void {
  stream.retryNow()
}

/**
 * One upstream attempt of a stream whose route has a retry policy: the codec's callbacks go through it, so a late
 * callback from an attempt the stream has given up on (reset, timed out, retried) is dropped here. Streams without
 * a policy take the codec's callbacks themselves and never make one.
 */
export class UpstreamAttempt implements UpstreamCallbacks {
  readonly stream: ActiveStream
  readonly host: Host
  live = true
  up: UpstreamRequest | null = null
  /** the per-try timeout */
  timer: NodeJS.Timeout | null = null

  constructor(stream: ActiveStream, host: Host) {
    this.stream = stream
    this.host = host
  }

  onUpstreamHeaders(status: number, headers: Headers, endStream: boolean): void {
    if (this.live) this.stream.attemptHeaders(this, status, headers, endStream)
  }
  onUpstreamData(chunk: Buffer, endStream: boolean): void {
    if (this.live) this.stream.onUpstreamData(chunk, endStream)
  }
  onUpstreamTrailers(trailers: Headers): void {
    if (this.live) this.stream.onUpstreamTrailers(trailers)
  }
  onUpstreamReset(reason: UpstreamResetReason, detail: string): void {
    if (this.live) this.stream.attemptReset(this, reason, detail)
  }
  onUpstreamDrain(): void {
    if (this.live) this.stream.onUpstreamDrain()
  }

  /** The stream gives up on this attempt: no more callbacks reach it; the upstream request is reset if `reset`. */
  end(reset: boolean): void {
    this.live = false
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
    const up = this.up
    this.up = null
    if (reset) up?.reset()
  }
}

/** Per-request retry state, made only when the route has a retry policy. */
class RetryState {
  readonly policy: CompiledRetryPolicy
  readonly hash: number | undefined
  retriesLeft: number
  /** attempts started, the first included */
  attempts = 1
  attempt: UpstreamAttempt | null = null
  /** hosts tried, for the previous_hosts predicate */
  readonly tried: Host[] = []
  /** the request body so far, kept for the next attempt; null once past the buffer limit (no more retries) */
  body: Buffer[] | null = []
  bodyBytes = 0
  trailers: Headers | null = null
  /** the back-off before the next attempt */
  backOff: NodeJS.Timeout | null = null
  /**
   * Whether the request holds a slot of the cluster's retry budget: from the moment a retry is scheduled, through its
   * back-off and its attempt, until that attempt's outcome is known or the request ends (as Envoy's retry state).
   */
  slot = false

  constructor(policy: CompiledRetryPolicy, hash: number | undefined) {
    this.policy = policy
    this.hash = hash
    this.retriesLeft = policy.numRetries
  }
}

/** The request body that arrived while a filter had stopped the chain. */
class HeldRequest {
  chunks: Buffer[] = []
  bytes = 0
  end = false
  trailers: Headers | null = null
  paused = false
}

export class ActiveStream implements UpstreamCallbacks, FilterCallbacks, StreamInfo, TimedStream {
  readonly hcm: HcmContext
  readonly downstream: DownstreamSink
  /** the downstream connection's socket (a TLSSocket on a TLS listener), or null when there is none */
  readonly downstreamSocket: Socket | null
  /** the connection's peer */
  readonly peerIp: string
  /** dynamic metadata filters set for later filters and the access log, by namespace; null until one is set */
  private dynamicMetadata: Map<string, Record<string, unknown>> | null = null
  /** the trusted client address (edge.ts): the peer, or an address from x-forwarded-for */
  sourceIp: string
  readonly startTime: number
  head: RequestHead | null = null
  route: CompiledRoute | null = null
  routeStats: RouteStats | null = null
  cluster: UpstreamCluster | null = null
  host: Host | null = null
  upstream: UpstreamRequest | null = null
  status = 0
  flag = ''
  reason = ''
  responseStarted = false
  responseComplete = false
  requestComplete = false
  done = false
  bytesReceived = 0
  bytesSent = 0
  /** from startTime to the stream's end (ms), set when it ends (the filters' onDestroy read it, the clock once) */
  durationMs = 0
  /** when the route timeout fires (performance.now() ms); the stream is in hcm.deadlines while it is pending */
  deadline = 0
  deadlineSlot = -1
  private timed = false
  /** stream_idle_timeout (or the route's idle_timeout) and request_timeout; null when neither applies */
  timeouts: StreamTimeouts | null = null
  /** Set-Cookie values a cookie hash policy asked for (generated affinity cookies). */
  setCookies: string[] | null = null
  /** The original path, before rewrites, for access logs. */
  originalPath = ''
  requestId = ''
  /**
   * When the router sent the request upstream (performance.now() ms), and what the upstream connection was, for the
   * access log and the taps: recorded only on streams that have one or the other (0 / null otherwise).
   */
  upstreamStartAt = 0
  /** from sending the request upstream to the response head; -1 when unknown */
  upstreamServiceMs = -1
  upstreamLocalAddress: string | null = null
  upstreamPeerPrincipal: string | null = null
  /** the filters that act on this stream, in chain order; null when none does (a router-only stream) */
  filters: StreamFilter[] | null = null
  /**
   * Whether any of those has a body hook, each way (DECODES_BODY, ENCODES_BODY): body chunks and trailers go past
   * the filters without a look at them when none has (Istio's stats filter on a plain HTTP stream, fault, RBAC).
   */
  private bodyHooks = 0
  /** the stream's span when its connection manager traces (src/proxy/tracing/); null otherwise */
  span: ActiveSpan | null = null
  /** the filter that stopped decoding, or -1 */
  private stoppedAt = -1
  /** whether the request head ended the request (no body) */
  private endAtHeaders = false
  /** body that arrived while the chain was stopped */
  private held: HeldRequest | null = null
  /** the route's retry policy at work; null when it has none (one attempt, the stream is the codec's callbacks) */
  private retry: RetryState | null = null
  /** the route's mirrored requests in flight; null when the route mirrors nothing (or nothing was drawn) */
  private shadows: ShadowRequest[] | null = null

  constructor(hcm: HcmContext, downstream: DownstreamSink, socket: Socket | null) {
    this.hcm = hcm
    this.downstream = downstream
    this.downstreamSocket = socket
    const peerIp = socket?.remoteAddress ?? ''
    this.peerIp = peerIp
    this.sourceIp = peerIp
    this.startTime = performance.now()
  }

  setMetadata(namespace: string, key: string, value: unknown): void {
    this.dynamicMetadata ??= new Map()
    let ns = this.dynamicMetadata.get(namespace)
    if (ns === undefined) {
      ns = {}
      this.dynamicMetadata.set(namespace, ns)
    }
    ns[key] = value
  }

  metadata(namespace: string): Readonly<Record<string, unknown>> | undefined {
    return this.dynamicMetadata?.get(namespace)
  }

  /** The host of every upstream attempt so far, first to last (for the decision record, not the request path). */
  attemptHosts(): string[] {
    if (this.retry !== null) return this.retry.tried.map((h) => h.key)
    return this.host === null ? [] : [this.host.key]
  }

  // === request path (called by the downstream codec) ===

  onRequestHeaders(head: RequestHead, endStream: boolean): void {
    const hcm = this.hcm
    this.head = head
    this.originalPath = head.path
    this.requestComplete = endStream
    const stats = hcm.stats.rq
    stats.rq_total++
    stats.rq_active++

    if (head.upgrade !== null && !hcm.upgrades.has(head.upgrade)) return this.localReply(LocalReplies.upgradeRejected)

    applyEdgeRules(this, hcm, head)
    hcm.xfcc.apply(head.headers, this.downstreamSocket)
    if (hcm.tracer !== null) this.span = hcm.tracer.start(head, this.requestId)
    if (hcm.pathNormalizer !== null && !this.normalizePath(hcm.pathNormalizer, head)) return
    const route = hcm.router.match(head)
    if (route !== null) this.setRoute(route)
    else if (hcm.onDemand !== null && head.authority !== '') return this.awaitVirtualHost(hcm.onDemand, endStream)
    this.timeouts = StreamTimeouts.start(this, hcm, route, endStream, this.startTime)
    if (hcm.filters.length > 0) {
      this.endAtHeaders = endStream
      if (!this.startFilters(route)) return
    }
    this.routeRequest(head, route, endStream, this.startTime)
  }

  private setRoute(route: CompiledRoute): void {
    this.route = route
    let rs = routeStatsCache.get(route)
    if (rs === undefined) {
      rs = this.hcm.store.forRoute(route.vhostName, route.name)
      routeStatsCache.set(route, rs)
    }
    this.routeStats = rs
    rs.rq.rq_total++
    rs.rq.rq_active++
  }

  /**
   * On-demand VHDS (route/on-demand.ts): no virtual host matched, and the route configuration names `vhds`. The
   * stream stops as a filter does (its body held), asks the control plane for the host, and once answered (or
   * after the bound) routes again and goes on with the filters of the route it found, or answers 404 NR.
   */
  private awaitVirtualHost(onDemand: OnDemandHosts, endStream: boolean): void {
    const hcm = this.hcm
    this.timeouts = StreamTimeouts.start(this, hcm, null, endStream, this.startTime)
    this.endAtHeaders = endStream
    this.filters = [ON_DEMAND_STEP]
    this.stoppedAt = 0
    void onDemand.request(hcm.router.name, this.head!.authority).then(() => {
      if (this.done) return
      const route = hcm.router.match(this.head!)
      if (route !== null) {
        this.setRoute(route)
        // the route's filters after the wait's step, with their body hooks counted as on any stream
        this.makeFilters(route, ON_DEMAND_STEP)
      }
      this.continueDecoding()
    })
  }

  /**
   * The connection manager's path normalization (path-normalize.ts), before route matching and the filters: the
   * route, the filters and the upstream see the normalized path. False when the stream got a local reply: 400, or
   * 307 to the path with escaped slashes decoded (400 for gRPC, whose clients do not follow redirects).
   */
  private normalizePath(n: PathNormalizer, head: RequestHead): boolean {
    const verdict = n.apply(head.path)
    if (verdict === PATH_OK) {
      head.path = n.path
      return true
    }
    if (verdict === PATH_REDIRECT && !head.headers.get('content-type')?.startsWith('application/grpc')) {
      this.hcm.stats.downstream_rq_redirected_with_normalized_path++
      this.sendLocalReply(307, '', 'path_normalization_redirect', null, new Headers(['location', n.path]))
      return false
    }
    this.hcm.stats.downstream_rq_failed_path_normalization++
    this.localReply(LocalReplies.pathNormalizationFailed)
    return false
  }

  // === the filter chain ===

  /** Makes the filters that act on this stream and runs their decodeHeaders; false when one stopped or replied. */
  private startFilters(route: CompiledRoute | null): boolean {
    this.makeFilters(route, null)
    return this.filters === null || this.decodeHeadersFrom(0)
  }

  /** Sets `filters` to `first` (if any) and the filters that act on this stream for `route`, and `bodyHooks`. */
  private makeFilters(route: CompiledRoute | null, first: StreamFilter | null): void {
    const perRoute = route?.filterConfigs ?? null
    // a literal of one: an empty one would grow on its first push
    let list: StreamFilter[] | null = first === null ? null : [first]
    let hooks = 0
    for (const f of this.hcm.filters) {
      const sf = f.create(this, perRoute === null ? undefined : perRoute.get(f.name))
      if (sf === null) continue
      if (list === null) list = [sf]
      else list.push(sf)
      if (sf.decodeData !== undefined || sf.decodeTrailers !== undefined) hooks |= DECODES_BODY
      if (sf.encodeData !== undefined || sf.encodeTrailers !== undefined) hooks |= ENCODES_BODY
    }
    this.filters = list
    this.bodyHooks = hooks
  }

  private decodeHeadersFrom(first: number): boolean {
    const list = this.filters!
    for (let i = first; i < list.length; i++) {
      const f = list[i]!
      if (f.decodeHeaders === undefined) continue
      const status = f.decodeHeaders(this.head!, this.endAtHeaders)
      if (this.done) return false
      if (status === STOP) {
        this.stoppedAt = i
        return false
      }
    }
    return true
  }

  continueDecoding(): void {
    if (this.done || this.stoppedAt < 0) return
    const from = this.stoppedAt + 1
    this.stoppedAt = -1
    if (!this.decodeHeadersFrom(from)) return this.showHeld()
    const held = this.held
    this.held = null
    this.routeRequest(this.head!, this.route, this.endAtHeaders, performance.now())
    if (held === null) return
    if (held.paused) this.downstream.resumeRequest()
    if (this.done || (this.upstream === null && this.retry === null)) return
    const n = held.chunks.length
    for (let i = 0; i < n && !this.done; i++)
      this.sendUpstream(held.chunks[i]!, held.end && i === n - 1 && held.trailers === null)
    if (held.end && n === 0 && held.trailers === null && !this.done) this.sendUpstream(EMPTY, true)
    if (held.trailers !== null && !this.done) this.trailersUpstream(held.trailers)
  }

  /** A later filter stopped the chain: it is shown the body held so far, as it would have seen it arrive. */
  private showHeld(): void {
    const held = this.held
    if (held === null || this.done || this.stoppedAt < 0) return
    const f = this.filters![this.stoppedAt]!
    const n = held.chunks.length
    const endWithData = held.end && held.trailers === null
    if (f.decodeData !== undefined) {
      for (let i = 0; i < n; i++) {
        f.decodeData(held.chunks[i]!, endWithData && i === n - 1)
        if (this.held !== held || this.done) return
      }
      if (endWithData && n === 0) f.decodeData(EMPTY, true)
    }
    if (held.trailers !== null && this.held === held && !this.done) f.decodeTrailers?.(held.trailers)
  }

  sendLocalReply(status: number, flag: string, reason: string, text: string | Buffer | null, headers?: Headers): void {
    if (this.done) return
    const h = headers ?? new Headers(['content-type', 'text/plain'])
    h.add('x-loom-reason', reason)
    if (this.requestId !== '') h.add('x-request-id', this.requestId)
    this.addFlag(flag)
    if (this.reason === '') this.reason = reason
    this.respond(status, h, text === null ? null : typeof text === 'string' ? Buffer.from(text) : text)
  }

  addFlag(flag: string): void {
    if (flag === '') return
    this.flag = this.flag === '' ? flag : `${this.flag},${flag}`
  }

  // === the router ===

  /**
   * `routedAt`: when the router has the request, the route timeout's start: the stream's start, unless a filter held
   * the request (a filter that went on at once took no time worth a clock read).
   */
  private routeRequest(head: RequestHead, route: CompiledRoute | null, endStream: boolean, routedAt: number): void {
    const hcm = this.hcm
    if (route === null) return this.localReply(LocalReplies.noRoute)
    if (route.kind === 'direct') {
      const body = route.directBody
      const h = new Headers()
      route.applyResponseHeaders(h)
      if (body !== null) h.add('content-type', 'text/plain')
      return this.respond(route.directStatus, h, body)
    }
    if (route.kind === 'redirect') {
      const r = route.redirect(head, head.scheme)
      const h = new Headers(['location', r.location])
      route.applyResponseHeaders(h)
      return this.respond(r.status, h, null)
    }

    const clusterName = route.pickCluster()
    const cluster = hcm.clusters.get(clusterName)
    if (cluster === undefined) return this.localReply(LocalReplies.noCluster)
    this.cluster = cluster
    let hash: number | undefined
    if (route.hasHashPolicy) {
      hash = route.hash(head, this.sourceIp)
      const cookies = route.cookiesToSet(head, this.sourceIp)
      if (cookies.length > 0) this.setCookies = cookies.map((c) => c.setCookie)
    }
    const host = cluster.chooseHost(hash)
    if (host === null) {
      hcm.store.forCluster(cluster.name).upstream_cx_none_healthy++
      return this.localReply(LocalReplies.noHealthyUpstream)
    }
    this.host = host

    // the request as the upstream will see it
    head.path = route.rewritePath(head.path)
    if (route.hostRewrite !== null) head.authority = route.hostRewrite
    else if (route.autoHostRewrite) head.authority = host.hostname
    route.applyRequestHeaders(head.headers, clusterName)
    if (route.includeAttemptCount) head.headers.set('x-envoy-attempt-count', '1')

    const cstats = hcm.store.forCluster(cluster.name)
    cstats.rq.rq_total++
    cstats.rq.rq_active++
    host.activeRequests++
    if (route.timeoutMs > 0 && head.upgrade === null) {
      this.timed = true
      // the route timeout starts when the router has the request: after a filter's delay, if one held it
      hcm.deadlines.add(this, route.timeoutMs, routedAt)
    }
    if (route.mirrors !== null && head.upgrade === null) this.startShadows(route, head, endStream, hash)
    if (route.retry === null || head.upgrade !== null) {
      if (hcm.recording || hcm.tap.active) this.upstreamStartAt = performance.now()
      this.upstream = hcm.pools.newStream(cluster, host, this, head, endStream)
      return
    }
    this.retry = new RetryState(route.retry, hash)
    this.startAttempt(host, endStream)
  }

  // === mirrors (routes with request_mirror_policies) ===

  private startShadows(route: CompiledRoute, head: RequestHead, endStream: boolean, hash: number | undefined): void {
    const hcm = this.hcm
    for (const m of route.mirrors!) {
      if (m.share < 1 && Math.random() >= m.share) continue
      const cluster = hcm.clusters.get(m.cluster)
      if (cluster === undefined) continue
      const s = ShadowRequest.start(
        hcm.pools,
        cluster,
        hcm.store.forCluster(cluster.name),
        m,
        head,
        endStream,
        hash,
        route.timeoutMs,
      )
      if (s !== null && !s.done) (this.shadows ??= []).push(s)
    }
  }

  private shadowData(chunk: Buffer, endStream: boolean): void {
    for (const s of this.shadows!) s.sendData(chunk, endStream)
  }

  private shadowTrailers(trailers: Headers): void {
    for (const s of this.shadows!) s.sendTrailers(trailers)
  }

  // === attempts (routes with a retry policy) ===

  private startAttempt(host: Host, endStream: boolean): void {
    const rs = this.retry!
    rs.tried.push(host)
    const a = new UpstreamAttempt(this, host)
    rs.attempt = a
    if (this.requestComplete) this.startPerTry(a)
    if (this.hcm.recording || this.hcm.tap.active) this.upstreamStartAt = performance.now()
    const up = this.hcm.pools.newStream(this.cluster!, host, a, this.head!, endStream)
    if (!a.live) return // failed at once: attemptReset has dealt with it
    a.up = up
    this.upstream = up
  }

  private startPerTry(a: UpstreamAttempt): void {
    const ms = this.retry!.policy.perTryTimeoutMs
    if (ms > 0 && a.timer === null && a.live) a.timer = setTimeout(onPerTryTimeout, ms, a)
  }

  /** Sends request body upstream, keeping it for a retry while the policy still allows one. */
  private sendUpstream(chunk: Buffer, endStream: boolean): boolean {
    if (this.shadows !== null) this.shadowData(chunk, endStream)
    const rs = this.retry
    if (rs !== null) {
      if (rs.body !== null) {
        rs.bodyBytes += chunk.length
        if (rs.bodyBytes <= RETRY_BUFFER_LIMIT_BYTES) {
          if (chunk.length > 0) rs.body.push(chunk)
        } else {
          rs.body = null
          this.hcm.store.forCluster(this.cluster!.name).retry_or_shadow_abandoned++
          // waiting for a back-off with a body that can no longer be sent again in full (Envoy answers 507)
          if (rs.backOff !== null) {
            this.localReply(LocalReplies.retryBufferExceeded)
            return true
          }
        }
      }
      if (endStream && rs.attempt !== null) this.startPerTry(rs.attempt)
    }
    const up = this.upstream
    return up === null || up.sendData(chunk, endStream)
  }

  private trailersUpstream(trailers: Headers): void {
    if (this.shadows !== null) this.shadowTrailers(trailers)
    const rs = this.retry
    if (rs !== null) {
      rs.trailers = trailers
      if (rs.attempt !== null) this.startPerTry(rs.attempt)
    }
    this.upstream?.sendTrailers(trailers)
  }

  /**
   * A failed attempt may be retried: false when the body is no longer kept, no retry is left (URX,
   * upstream_rq_retry_limit_exceeded) or the cluster has too many retries in flight (UO, upstream_rq_retry_overflow).
   * Otherwise the next attempt starts after the back-off.
   */
  private scheduleRetry(): boolean {
    const rs = this.retry!
    if (rs.body === null || this.responseStarted || this.done) return false
    const cstats = this.hcm.store.forCluster(this.cluster!.name)
    if (rs.retriesLeft === 0) {
      cstats.upstream_rq_retry_limit_exceeded++
      this.addFlag('URX')
      return false
    }
    // the cluster's retry circuit breaker (max_retries, default 3, or its retry_budget): counts
    // upstream_rq_retry_overflow when refused; the failed attempt's answer is then the response
    if (!this.cluster!.retryBudget.tryAcquire()) {
      this.addFlag('UO')
      return false
    }
    rs.slot = true
    rs.retriesLeft--
    cstats.upstream_rq_retry++
    this.upstream = null
    rs.attempt = null
    rs.backOff = setTimeout(onBackOff, rs.policy.backOffMs(rs.attempts), this)
    return true
  }

  /** The retry's attempt is over (answered, failed or timed out) or the request ended: its budget slot is free. */
  private releaseRetry(rs: RetryState): void {
    rs.slot = false
    this.cluster!.retryBudget.release()
  }

  /** The back-off is over: the next attempt, on a host the previous_hosts predicate accepts if one is found. */
  retryNow(): void {
    const rs = this.retry!
    rs.backOff = null
    const hcm = this.hcm
    const cluster = this.cluster!
    const cstats = hcm.store.forCluster(cluster.name)
    if (this.done) return
    let host = cluster.chooseHost(rs.hash)
    if (rs.policy.previousHosts)
      for (let i = 0; i < rs.policy.hostSelectionAttempts && host !== null && rs.tried.includes(host); i++)
        host = cluster.chooseHost(rs.hash)
    if (host === null) {
      cstats.upstream_cx_none_healthy++
      return this.localReply(LocalReplies.noHealthyUpstream)
    }
    if (host !== this.host) {
      this.host!.activeRequests--
      host.activeRequests++
      this.host = host
    }
    rs.attempts++
    cstats.rq.rq_total++
    const head = this.head!
    if (this.route!.includeAttemptCount) head.headers.set('x-envoy-attempt-count', String(rs.attempts))
    if (this.route!.autoHostRewrite) head.authority = host.hostname
    const body = rs.body!
    const complete = this.requestComplete
    const headEnds = complete && body.length === 0 && rs.trailers === null
    this.startAttempt(host, headEnds)
    const up = this.upstream
    if (up === null || this.done || headEnds) return
    const n = body.length
    for (let i = 0; i < n; i++) up.sendData(body[i]!, complete && rs.trailers === null && i === n - 1)
    if (complete && n === 0 && rs.trailers === null) up.sendData(EMPTY, true)
    if (rs.trailers !== null) up.sendTrailers(rs.trailers)
  }

  /** Response headers of the current attempt: retried if the policy says so, else they commit the attempt. */
  attemptHeaders(a: UpstreamAttempt, status: number, headers: Headers, endStream: boolean): void {
    if (this.done) return
    const rs = this.retry!
    if (rs.slot) this.releaseRetry(rs)
    const cstats = this.hcm.store.forCluster(this.cluster!.name)
    if (rs.policy.retriableResponse(status, headers.get('grpc-status'))) {
      if (this.scheduleRetry()) {
        a.end(!endStream || !this.requestComplete)
        return
      }
    } else if (rs.attempts > 1) cstats.upstream_rq_retry_success++
    if (a.timer !== null) {
      clearTimeout(a.timer)
      a.timer = null
    }
    this.onUpstreamHeaders(status, headers, endStream)
  }

  attemptReset(a: UpstreamAttempt, reason: UpstreamResetReason, detail: string): void {
    if (this.done) return
    const rs = this.retry!
    if (rs.slot) this.releaseRetry(rs)
    a.end(false)
    this.upstream = null
    if (!this.responseStarted && rs.policy.retriableReset(reason) && this.scheduleRetry()) return
    this.onUpstreamReset(reason, detail)
  }

  perTryTimeout(a: UpstreamAttempt): void {
    if (this.done || !a.live || this.responseStarted) return
    const rs = this.retry!
    if (rs.slot) this.releaseRetry(rs)
    this.hcm.store.forCluster(this.cluster!.name).upstream_rq_per_try_timeout++
    a.end(true)
    this.upstream = null
    if (rs.policy.retriableReset(null) && this.scheduleRetry()) return
    this.localReply(LocalReplies.timeout)
  }

  onRequestData(chunk: Buffer, endStream: boolean): void {
    this.bytesReceived += chunk.length
    const t = this.timeouts
    if (t !== null) {
      t.touch()
      if (endStream) t.requestDone()
    }
    if (endStream) this.requestComplete = true
    if (this.filters !== null) {
      if (this.stoppedAt >= 0) return this.hold(chunk, endStream)
      if ((this.bodyHooks & DECODES_BODY) !== 0) for (const f of this.filters) f.decodeData?.(chunk, endStream)
    }
    if (this.done) return
    if (this.retry !== null) {
      if (!this.sendUpstream(chunk, endStream)) this.downstream.pauseRequest()
      return
    }
    if (this.shadows !== null) this.shadowData(chunk, endStream)
    const up = this.upstream
    if (up === null) return
    if (!up.sendData(chunk, endStream)) this.downstream.pauseRequest()
  }

  onRequestTrailers(trailers: Headers): void {
    this.requestComplete = true
    this.timeouts?.requestDone()
    if (this.filters !== null) {
      if (this.stoppedAt >= 0) {
        ;(this.held ??= new HeldRequest()).trailers = trailers
        this.held.end = true
        this.filters[this.stoppedAt]!.decodeTrailers?.(trailers)
        return
      }
      if ((this.bodyHooks & DECODES_BODY) !== 0) for (const f of this.filters) f.decodeTrailers?.(trailers)
    }
    if (this.done) return
    if (this.retry !== null) this.trailersUpstream(trailers)
    else {
      if (this.shadows !== null) this.shadowTrailers(trailers)
      this.upstream?.sendTrailers(trailers)
    }
  }

  /** Keeps body bytes while a filter has stopped the chain; past the limit the client is paused until it goes on. */
  private hold(chunk: Buffer, endStream: boolean): void {
    const held = (this.held ??= new HeldRequest())
    if (chunk.length > 0) held.chunks.push(chunk)
    held.bytes += chunk.length
    if (endStream) held.end = true
    if (!held.paused && held.bytes > HOLD_LIMIT_BYTES) {
      held.paused = true
      this.downstream.pauseRequest()
    }
    // last: the stopped filter may continue decoding from here, which takes the hold
    this.filters![this.stoppedAt]!.decodeData?.(chunk, endStream)
  }

  /** The client went away or reset the stream. */
  onDownstreamReset(): void {
    if (this.done) return
    this.hcm.stats.downstream_rq_rx_reset++
    if (this.flag === '' || this.flag === 'DI') this.addFlag('DC')
    if (this.upstream !== null) {
      const up = this.upstream
      this.upstream = null
      up.reset()
    }
    this.finish()
  }

  /**
   * The request body broke HTTP/1 framing after the head was routed: the upstream request is cancelled and, if the
   * response has not started, the client gets `status` (the codec then closes the connection).
   */
  onDownstreamProtocolError(status: number, reason: string, message: string): void {
    if (this.done) return
    const up = this.upstream
    this.upstream = null
    up?.reset()
    if (this.responseStarted) {
      this.addFlag('DPE')
      this.downstream.reset()
      this.finish()
      return
    }
    this.reason = message
    this.localReply([status, 'DPE', reason, 'bad request'])
  }

  onDownstreamDrain(): void {
    this.upstream?.resumeResponse()
  }

  // === response path (called by the upstream codec) ===

  onUpstreamHeaders(status: number, headers: Headers, endStream: boolean): void {
    if (this.done) return
    if (this.upstreamStartAt !== 0) this.noteUpstream()
    this.status = status
    this.responseStarted = true
    if (status === 101) {
      this.clearTimer()
      this.hcm.stats.downstream_cx_upgrades_total++
    } else stripHopByHop(headers)
    this.route?.applyResponseHeaders(headers, this.cluster?.name)
    if (this.setCookies !== null) for (const c of this.setCookies) headers.add('set-cookie', c)
    const t = this.timeouts
    if (t !== null) {
      // request_timeout ends when the response starts
      t.touch()
      t.requestDone()
    }
    if (endStream) this.responseComplete = true
    if (this.filters !== null) this.encodeHeaders(status, headers, endStream)
    this.downstream.sendHeaders(status, headers, endStream)
    if (status === 101) this.downstream.upgraded()
    if (endStream) this.finish()
  }

  onUpstreamData(chunk: Buffer, endStream: boolean): void {
    if (this.done) return
    this.bytesSent += chunk.length
    this.timeouts?.touch()
    if (endStream) this.responseComplete = true
    if ((this.bodyHooks & ENCODES_BODY) !== 0)
      for (let i = this.filters!.length - 1; i >= 0; i--) this.filters![i]!.encodeData?.(chunk, endStream)
    if (!this.downstream.sendData(chunk, endStream)) this.upstream?.pauseResponse()
    if (endStream) this.finish()
  }

  onUpstreamTrailers(trailers: Headers): void {
    if (this.done) return
    this.responseComplete = true
    if ((this.bodyHooks & ENCODES_BODY) !== 0)
      for (let i = this.filters!.length - 1; i >= 0; i--) this.filters![i]!.encodeTrailers?.(trailers)
    this.downstream.sendTrailers(trailers)
    this.finish()
  }

  onUpstreamReset(reason: UpstreamResetReason, detail: string): void {
    if (this.done) return
    this.upstream = null
    if (!this.responseStarted) {
      const reply = RESET_REPLY[reason]
      // `tls_peer: wrong SAN: …`, `tls_secret: missing: …`: the reply's reason is the first two parts
      if (reason === 'connect_failure' && detail.startsWith('tls_')) {
        const cut = detail.indexOf(': ', detail.indexOf(': ') + 2)
        return this.sendLocalReply(503, 'UF', cut < 0 ? detail : detail.slice(0, cut), `${reply[3]}: ${detail}`)
      }
      if (detail !== '') this.reason = detail
      return this.localReply(reply)
    }
    this.addFlag(reason === 'protocol_error' ? 'UPE' : 'UR')
    this.downstream.reset()
    this.finish()
  }

  onUpstreamDrain(): void {
    this.downstream.resumeRequest()
  }

  timeout(): void {
    this.timed = false
    if (this.done) return
    this.hcm.stats.rq.rq_timeout++
    if (this.cluster !== null) this.hcm.store.forCluster(this.cluster.name).rq.rq_timeout++
    const up = this.upstream
    this.upstream = null
    if (up?.timedOut !== undefined) up.timedOut()
    else up?.reset()
    if (!this.responseStarted) return this.localReply(LocalReplies.timeout)
    this.addFlag('UT')
    this.downstream.reset()
    this.finish()
  }

  /**
   * Nothing received or sent for stream_idle_timeout (or the route's idle_timeout): before a response, 408 (504
   * once the request was received whole, as Envoy); after, a reset.
   */
  idleTimeout(): void {
    if (this.done) return
    this.hcm.stats.downstream_rq_idle_timeout++
    const up = this.upstream
    this.upstream = null
    up?.reset()
    if (!this.responseStarted) {
      if (this.requestComplete) return this.localReply(LocalReplies.idleTimeoutAfterRequest)
      this.downstream.abandonRequest?.()
      return this.localReply(LocalReplies.idleTimeout)
    }
    this.addFlag('SI')
    this.downstream.reset()
    this.finish()
  }

  /** The request was not received whole within request_timeout (the response had not started): 408. */
  requestTimeout(): void {
    if (this.done || this.responseStarted) return
    this.hcm.stats.rq.rq_timeout++
    const up = this.upstream
    this.upstream = null
    up?.reset()
    this.downstream.abandonRequest?.()
    this.localReply(LocalReplies.requestTimeout)
  }

  /** The upstream side, for the access log and the taps: its service time, local address and verified peer. */
  private noteUpstream(): void {
    this.upstreamServiceMs = performance.now() - this.upstreamStartAt
    const socket = this.upstream?.socket?.() ?? null
    if (socket === null) return
    this.upstreamLocalAddress = addressOf(socket.localAddress, socket.localPort)
    this.upstreamPeerPrincipal = connectionPeer(socket)?.uris[0] ?? null
  }

  /** Upstream attempts made: the retries' count, 1 for a request sent once, 0 for one never sent. */
  get attemptCount(): number {
    return this.retry?.attempts ?? (this.host !== null ? 1 : 0)
  }

  // === local replies ===

  /** One of the proxy's own replies; a detail already in `reason` (an upstream error) is added to its body. */
  localReply(reply: LocalReply | readonly [number, string, string, string]): void {
    const [status, flag, reason, text] = reply
    this.sendLocalReply(status, flag, reason, this.reason === '' ? text : `${text}: ${this.reason}`)
  }

  private encodeHeaders(status: number, headers: Headers, endStream: boolean): void {
    const list = this.filters!
    for (let i = list.length - 1; i >= 0; i--) list[i]!.encodeHeaders?.(status, headers, endStream)
  }

  private respond(status: number, headers: Headers, body: Buffer | null): void {
    this.status = status
    this.responseStarted = true
    this.responseComplete = true
    headers.set('content-length', String(body === null ? 0 : body.length))
    if (this.filters !== null) this.encodeHeaders(status, headers, body === null || body.length === 0)
    if (body === null || body.length === 0) {
      this.downstream.sendHeaders(status, headers, true)
    } else {
      this.downstream.sendHeaders(status, headers, false)
      this.bytesSent += body.length
      this.downstream.sendData(body, true)
    }
    this.finish()
  }

  private clearTimer(): void {
    if (this.timed) {
      this.timed = false
      this.hcm.deadlines.delete(this)
    }
  }

  /** Runs once: stats, access log, and tells the codec the stream is over. */
  private finish(): void {
    if (this.done) return
    this.done = true
    this.clearTimer()
    this.timeouts?.cancel()
    const hcm = this.hcm
    const retry = this.retry
    if (retry !== null) {
      retry.attempt?.end(false)
      if (retry.backOff !== null) {
        clearTimeout(retry.backOff)
        retry.backOff = null
      }
      if (retry.slot) this.releaseRetry(retry)
    }
    const shadows = this.shadows
    if (shadows !== null) {
      this.shadows = null
      // a shadow whose request is whole goes on by itself; one still waiting for body that will not come is reset
      for (const s of shadows) if (!s.sent) s.abandon()
    }
    const status = this.status
    const ms = performance.now() - this.startTime
    this.durationMs = ms
    const rq = hcm.stats.rq
    rq.rq_active--
    if (status !== 0) rq.countStatus(status)
    rq.rq_time.record(ms)
    const rs = this.routeStats
    if (rs !== null) {
      rs.rq.rq_active--
      if (status !== 0) rs.rq.countStatus(status)
      rs.rq.rq_time.record(ms)
    }
    const cluster = this.cluster
    if (cluster !== null && this.host !== null) {
      this.host.activeRequests--
      const c = hcm.store.forCluster(cluster.name).rq
      c.rq_active--
      if (status !== 0 && (this.flag === '' || this.flag === 'DI')) c.countStatus(status)
      c.rq_time.record(ms)
    }
    if (this.flag !== '') {
      if (this.flag.includes(',')) for (const f of this.flag.split(',')) hcm.stats.flag(f)
      else hcm.stats.flag(this.flag)
    }
    const filters = this.filters
    if (filters !== null) for (const f of filters) f.onDestroy?.()
    if (this.span !== null) hcm.tracer!.finish(this, this.span, ms)
    if (hcm.recording || hcm.tap.active) hcm.logAccess(this, ms)
    const paths = hcm.paths
    if (paths !== null && this.head !== null) {
      // a request answered before a cluster was picked (a fault, a filter's refusal) counts for its route's cluster
      const route = this.route
      const name = cluster?.name ?? (route !== null && route.kind === 'cluster' ? (route.clusterNames()[0] ?? '') : '')
      paths.record(name, this.head.method, this.head.path, status, ms)
    }
    this.downstream.onStreamComplete()
  }
}

function stripHopByHop(headers: Headers): void {
  const l = headers.list
  let w = 0
  for (let i = 0; i < l.length; i += 2) {
    const name = l[i]!
    if (HOP_BY_HOP.has(name)) continue
    if (w !== i) {
      l[w] = name
      l[w + 1] = l[i + 1]!
    }
    w += 2
  }
  if (w !== l.length) l.length = w
}
