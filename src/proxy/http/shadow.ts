/**
 * Request mirroring (Envoy's `request_mirror_policies`, "shadowing"): a copy of the request goes to another cluster,
 * fire and forget. The shadow's response is read and discarded, its failures and timeouts never reach the caller, and
 * it never holds the caller back: body bytes are passed on as they arrive, and a shadow that cannot keep up (more
 * than SHADOW_BUFFER_LIMIT_BYTES queued past its codec's high-water mark) is reset rather than pausing the client.
 *
 * Only streams whose route has mirror policies make ShadowRequests; others pay one null check.
 */
import { performance } from 'node:perf_hooks'
import type { Buffer } from 'node:buffer'
import type { RequestMirrorPolicy } from '../../config/envoy.js'
import type { Host, UpstreamCluster } from '../cluster/index.js'
import type { ClusterStats } from '../stats/stats.js'
import { Headers } from './headers.js'
import type { PoolManager } from './pools.js'
import type { RequestHead, UpstreamCallbacks, UpstreamRequest, UpstreamResetReason } from './types.js'

/**
 * Body bytes a shadow may have queued beyond its codec's high-water mark before it is dropped (Envoy: the connection
 * buffer limit, 1 MiB by default).
 */
export const SHADOW_BUFFER_LIMIT_BYTES = 1024 * 1024

const DENOMINATORS = { HUNDRED: 100, TEN_THOUSAND: 10_000, MILLION: 1_000_000 } as const

/** One compiled request mirror policy. */
export interface CompiledMirrorPolicy {
  readonly cluster: string
  /** the share of requests mirrored, in [0, 1] */
  readonly share: number
  /** whether `-shadow` is appended to the host (disable_shadow_host_suffix_append unset or false) */
  readonly suffix: boolean
}

/** `request_mirror_policies` → compiled policies; null when there are none. Unset runtime_fraction is 100%. */
export function compileMirrorPolicies(list: readonly RequestMirrorPolicy[] | undefined): CompiledMirrorPolicy[] | null {
  if (list === undefined || list.length === 0) return null
  return list.map((p) => {
    const f = p.runtime_fraction?.default_value
    const share = f === undefined ? 1 : Math.min(1, (f.numerator ?? 0) / DENOMINATORS[f.denominator ?? 'HUNDRED'])
    return { cluster: p.cluster, share, suffix: p.disable_shadow_host_suffix_append !== true }
  })
}

/** Envoy's shadow host: `-shadow` after the host name, before the port (`reviews:9080` → `reviews-shadow:9080`). */
export function shadowAuthority(authority: string): string {
  const bracket = authority.lastIndexOf(']')
  const colon = authority.lastIndexOf(':')
  if (colon > bracket && (bracket >= 0 || authority.indexOf(':') === colon))
    return `${authority.slice(0, colon)}-shadow${authority.slice(colon)}`
  return `${authority}-shadow`
}

function onShadowTimeout(s: ShadowRequest): void {
  s.timer = null
  s.stats.rq.rq_timeout++
  s.abandon()
}

/** One mirrored request: its own upstream request, stats and timeout; nothing it sees reaches the caller. */
export class ShadowRequest implements UpstreamCallbacks {
  readonly host: Host
  readonly stats: ClusterStats
  up: UpstreamRequest | null = null
  timer: NodeJS.Timeout | null = null
  /** whether the whole request (end of body or trailers) has been passed on */
  sent = false
  done = false
  /** body bytes passed on since the codec last reported it was over its high-water mark; -1 when it is not */
  private queued = -1
  private status = 0
  private readonly start = performance.now()

  private constructor(host: Host, stats: ClusterStats) {
    this.host = host
    this.stats = stats
  }

  /**
   * Starts a shadow of `head` (already rewritten for the main upstream) to `cluster`; null when the cluster has no
   * healthy host. `timeoutMs` 0: no timeout.
   */
  static start(
    pools: PoolManager,
    cluster: UpstreamCluster,
    stats: ClusterStats,
    policy: CompiledMirrorPolicy,
    head: RequestHead,
    endStream: boolean,
    hash: number | undefined,
    timeoutMs: number,
  ): ShadowRequest | null {
    const host = cluster.chooseHost(hash)
    if (host === null) {
      stats.upstream_cx_none_healthy++
      return null
    }
    const s = new ShadowRequest(host, stats)
    const copy: RequestHead = {
      method: head.method,
      authority: policy.suffix ? shadowAuthority(head.authority) : head.authority,
      path: head.path,
      scheme: head.scheme,
      headers: new Headers(head.headers.list.slice()),
      upgrade: null,
      protocol: head.protocol,
    }
    stats.rq.rq_total++
    stats.rq.rq_active++
    host.activeRequests++
    s.sent = endStream
    if (timeoutMs > 0) s.timer = setTimeout(onShadowTimeout, timeoutMs, s)
    const up = pools.newStream(cluster, host, s, copy, endStream)
    if (!s.done) s.up = up
    return s
  }

  sendData(chunk: Buffer, endStream: boolean): void {
    const up = this.up
    if (up === null) return
    if (endStream) this.sent = true
    if (this.queued >= 0) {
      this.queued += chunk.length
      if (this.queued > SHADOW_BUFFER_LIMIT_BYTES) {
        this.stats.retry_or_shadow_abandoned++
        this.abandon()
        return
      }
    }
    if (!up.sendData(chunk, endStream) && this.queued < 0) this.queued = 0
  }

  sendTrailers(trailers: Headers): void {
    this.sent = true
    this.up?.sendTrailers(trailers)
  }

  /** Resets the shadow (its timeout, a caller gone before its request was whole, a shadow that cannot keep up). */
  abandon(): void {
    if (this.done) return
    const up = this.up
    this.up = null
    this.end(0)
    up?.reset()
  }

  private end(status: number): void {
    if (this.done) return
    this.done = true
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
    this.up = null
    this.host.activeRequests--
    const rq = this.stats.rq
    rq.rq_active--
    if (status !== 0) rq.countStatus(status)
    rq.rq_time.record(performance.now() - this.start)
  }

  // the shadow's response: read and dropped
  onUpstreamHeaders(status: number, _headers: Headers, endStream: boolean): void {
    this.status = status
    if (endStream) this.finishResponse()
  }
  onUpstreamData(_chunk: Buffer, endStream: boolean): void {
    if (endStream) this.finishResponse()
  }
  onUpstreamTrailers(_trailers: Headers): void {
    this.finishResponse()
  }
  onUpstreamReset(_reason: UpstreamResetReason, _detail: string): void {
    this.end(0)
  }
  onUpstreamDrain(): void {
    this.queued = -1
  }

  /** The response ended: if the request is still being sent, the shadow is reset (nothing more to learn from it). */
  private finishResponse(): void {
    if (this.sent) return this.end(this.status)
    const status = this.status
    const up = this.up
    this.end(status)
    up?.reset()
  }
}
