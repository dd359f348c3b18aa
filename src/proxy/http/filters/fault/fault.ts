/**
 * Fault injection (Envoy's envoy.filters.http.fault): delay and/or abort a share of requests, configured on the
 * filter or overridden per route or virtual host (`typed_per_filter_config`), as Istio's VirtualService `fault`
 * becomes. Semantics follow Envoy's:
 *
 * - `headers`: the fault applies only to requests that match every matcher.
 * - `delay`: `fixed_delay`, or `header_delay` (milliseconds from `x-envoy-fault-delay-request`); applied to
 *   `percentage` of requests (unset: none, as in Envoy); response flag DI. The request is held, then goes on.
 * - `abort`: `http_status`, `grpc_status` (a trailers-only gRPC response), or `header_abort`
 *   (`x-envoy-fault-abort-request` / `x-envoy-fault-abort-grpc-request`); after the delay, if both apply; flag FI.
 * - `x-envoy-fault-delay-request-percentage` / `x-envoy-fault-abort-request-percentage` cap a header fault's share.
 * - `max_active_faults`: past this many faults in progress, no new fault is injected (counted as faults_overflow).
 *
 * Stats, under the connection manager: `fault.delays_injected`, `fault.aborts_injected`, `fault.active_faults`,
 * `fault.faults_overflow`.
 */
import type { HTTPFault } from '../../../../config/envoy.js'
import { parseDurationMs } from '../../../../core/duration.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import { type CompiledHeaderMatcher, compileHeaderMatcher } from '../../../route/matchers.js'
import { MatchContext } from '../../../route/view.js'
import type { HttpConnManagerStats } from '../../../stats/stats.js'
import { Headers } from '../../headers.js'
import type { RequestHead } from '../../types.js'
import {
  CONTINUE,
  type FilterCallbacks,
  type FilterStatus,
  type HttpFilterFactory,
  STOP,
  type StreamFilter,
} from '../filter.js'
import { fraction } from '../percent.js'

/** One compiled HTTPFault (the filter's own, or a route's override). */
export class FaultPolicy {
  readonly headers: CompiledHeaderMatcher[]
  /** fixed delay in ms; -1: from the request header; null: no delay */
  readonly delayMs: number | null
  readonly delayShare: number
  /** the HTTP status; 0 with grpcStatus set: a gRPC abort; -1: from the request headers; null: no abort */
  readonly abortStatus: number | null
  readonly grpcStatus: number | null
  readonly abortShare: number
  readonly maxActive: number

  constructor(cfg: HTTPFault, path: string, issues: ConfigIssue[]) {
    this.headers = (cfg.headers ?? []).map((h, i) => compileHeaderMatcher(h, `${path}.headers[${i}]`, issues))
    const d = cfg.delay
    this.delayMs = d === undefined ? null : d.header_delay !== undefined ? -1 : parseDurationMs(d.fixed_delay!)!
    this.delayShare = fraction(d?.percentage)
    const a = cfg.abort
    this.abortStatus = a === undefined ? null : a.header_abort !== undefined ? -1 : (a.http_status ?? 0)
    this.grpcStatus = a?.grpc_status ?? null
    this.abortShare = fraction(a?.percentage)
    this.maxActive = cfg.max_active_faults ?? Number.POSITIVE_INFINITY
  }

  matches(head: RequestHead): boolean {
    if (this.headers.length === 0) return true
    const ctx = new MatchContext()
    ctx.reset(head)
    for (const m of this.headers) if (!m.matches(ctx)) return false
    return true
  }
}

/** Compiles a per-route override (called by the route compiler for `typed_per_filter_config`). */
export function compileFaultPerRoute(cfg: HTTPFault, path: string, issues: ConfigIssue[]): FaultPolicy {
  return new FaultPolicy(cfg, path, issues)
}

export class FaultStats {
  delays_injected = 0
  aborts_injected = 0
  active_faults = 0
  faults_overflow = 0
}

export class FaultFilterFactory implements HttpFilterFactory {
  readonly name: string
  readonly policy: FaultPolicy
  readonly stats: FaultStats
  /** Math.random by default; tests make it deterministic */
  random: () => number = Math.random

  constructor(name: string, cfg: HTTPFault, path: string, issues: ConfigIssue[], hcmStats: HttpConnManagerStats) {
    this.name = name
    this.policy = new FaultPolicy(cfg, path, issues)
    this.stats = hcmStats.filterStats('fault', FaultStats)
  }

  create(cb: FilterCallbacks, perRoute: unknown): StreamFilter | null {
    const policy = perRoute instanceof FaultPolicy ? perRoute : this.policy
    if (policy.delayMs === null && policy.abortStatus === null) return null
    return new FaultFilter(this, policy, cb)
  }
}

function onDelayDone(f: FaultFilter): void {
  f.delayDone()
}

class FaultFilter implements StreamFilter {
  private readonly factory: FaultFilterFactory
  private readonly policy: FaultPolicy
  private readonly cb: FilterCallbacks
  private timer: NodeJS.Timeout | null = null
  private active = false
  /** the abort decided at decodeHeaders, applied after the delay: [http status, grpc status] */
  private abort: [number, number | null] | null = null

  constructor(factory: FaultFilterFactory, policy: FaultPolicy, cb: FilterCallbacks) {
    this.factory = factory
    this.policy = policy
    this.cb = cb
  }

  decodeHeaders(head: RequestHead, _endStream: boolean): FilterStatus {
    const p = this.policy
    if (!p.matches(head)) return CONTINUE
    const stats = this.factory.stats
    const random = this.factory.random
    const headers = head.headers

    let delay = 0
    if (p.delayMs !== null) {
      const ms = p.delayMs === -1 ? headerInt(headers, 'x-envoy-fault-delay-request') : p.delayMs
      const share =
        p.delayMs === -1 ? headerShare(headers, 'x-envoy-fault-delay-request-percentage', p.delayShare) : p.delayShare
      if (ms !== null && ms > 0 && random() < share) delay = ms
    }
    if (p.abortStatus !== null) {
      let status: number | null = p.abortStatus
      let grpc = p.grpcStatus
      let share = p.abortShare
      if (status === -1) {
        status = headerInt(headers, 'x-envoy-fault-abort-request')
        grpc = headerInt(headers, 'x-envoy-fault-abort-grpc-request')
        if (status !== null && (status < 200 || status > 599)) status = null
        if (status === null && grpc !== null) status = 0
        share = headerShare(headers, 'x-envoy-fault-abort-request-percentage', share)
      }
      if (status !== null && random() < share) this.abort = [status, grpc]
    }
    if (delay === 0 && this.abort === null) return CONTINUE
    if (stats.active_faults >= p.maxActive) {
      stats.faults_overflow++
      this.abort = null
      return CONTINUE
    }
    stats.active_faults++
    this.active = true
    if (delay > 0) {
      stats.delays_injected++
      this.cb.addFlag('DI')
      this.timer = setTimeout(onDelayDone, delay, this)
      return STOP
    }
    this.sendAbort()
    return STOP
  }

  delayDone(): void {
    this.timer = null
    if (this.abort !== null) return this.sendAbort()
    this.release()
    this.cb.continueDecoding()
  }

  private sendAbort(): void {
    const [status, grpc] = this.abort!
    this.factory.stats.aborts_injected++
    this.release()
    if (status === 0) {
      // a gRPC abort: trailers-only response, HTTP 200 with grpc-status
      const h = new Headers([
        'content-type',
        'application/grpc',
        'grpc-status',
        String(grpc),
        'grpc-message',
        'fault filter abort',
      ])
      return this.cb.sendLocalReply(200, 'FI', 'fault_filter_abort', null, h)
    }
    this.cb.sendLocalReply(status, 'FI', 'fault_filter_abort', 'fault filter abort')
  }

  private release(): void {
    if (this.active) {
      this.active = false
      this.factory.stats.active_faults--
    }
  }

  onDestroy(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
    this.release()
  }
}

function headerInt(h: Headers, name: string): number | null {
  const v = h.get(name)
  if (v === undefined || !/^\d{1,9}$/.test(v)) return null
  return Number(v)
}

/** A header's percentage (0..100) caps the configured share. */
function headerShare(h: Headers, name: string, configured: number): number {
  const n = headerInt(h, name)
  return n === null ? configured : Math.min(configured, n / 100)
}
