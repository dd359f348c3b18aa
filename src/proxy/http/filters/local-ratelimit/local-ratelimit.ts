/**
 * Local rate limiting (Envoy's envoy.filters.http.local_ratelimit): a token bucket per compiled config, the
 * filter's own (shared by every route of the connection manager without an override, and by all its connections)
 * or a virtual host's or route's `typed_per_filter_config` override (its own bucket, shared by the routes that use
 * it and by every connection manager using that route table). Semantics follow Envoy's:
 *
 * - `token_bucket`: starts full (`max_tokens`); every `fill_interval`, `tokens_per_fill` (default 1) are added, up
 *   to `max_tokens`. Each request takes one token. Without a bucket the filter does nothing.
 * - `filter_enabled` / `filter_enforced` (`default_value`; unset: 0%, as Envoy): the share of requests checked, and
 *   of those without a token the share refused. A refused request gets `status` (default 429) with body
 *   `local_rate_limited`, `x-envoy-ratelimited: true`, `response_headers_to_add`, response flag RL; one checked but
 *   not refused gets `request_headers_to_add_when_not_enforced`.
 * - `enable_x_ratelimit_headers: DRAFT_VERSION_03`: every checked request's response carries `x-ratelimit-limit`
 *   (max_tokens), `x-ratelimit-remaining` and `x-ratelimit-reset` (seconds to the next fill).
 *
 * The bucket is refilled lazily from the clock when it is consulted: no timer per bucket. A full bucket's fill
 * window starts when a token is taken from it (Envoy's timer fills on a fixed phase; a full bucket is the same
 * either way, and `x-ratelimit-reset` then counts from the first request of the window).
 *
 * Stats, under the connection manager: `<stat_prefix>.http_local_rate_limit.enabled`, `.enforced`,
 * `.rate_limited`, `.ok` (Envoy's names).
 */
import type { LocalRateLimit, RuntimeFractionalPercent } from '../../../../config/envoy.js'
import { parseDurationMs } from '../../../../core/duration.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import { compileMutations, type HeaderMutations } from '../../../route/mutations.js'
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

/** A RuntimeFractionalPercent's default_value as a probability; unset is 0%, as Envoy's default for these fields. */
function share(p: RuntimeFractionalPercent | undefined): number {
  return p === undefined ? 0 : fraction(p.default_value)
}

/** The headers of a rate-limited reply (the local and the global rate limit filters answer alike). */
export function rateLimitedHeaders(): Headers {
  return new Headers(['content-type', 'text/plain', 'x-envoy-ratelimited', 'true'])
}

/** Ends the stream as rate limited: `status`, response flag RL, `x-loom-reason: reason`, a one-line `body`. */
export function sendRateLimited(cb: FilterCallbacks, status: number, reason: string, body: string, h: Headers): void {
  cb.sendLocalReply(status, 'RL', reason, body, h)
}

/** Envoy's minimum fill interval for the local rate limiter. */
const MIN_FILL_MS = 50

/** Discrete fills computed from the clock when the bucket is consulted. */
export class TokenBucket {
  readonly max: number
  readonly perFill: number
  readonly intervalMs: number
  tokens: number
  /** when the last fill happened (performance.now() milliseconds) */
  private last: number

  constructor(max: number, perFill: number, intervalMs: number, now: number) {
    this.max = max
    this.perFill = perFill
    this.intervalMs = intervalMs
    this.tokens = max
    this.last = now
  }

  /** Takes a token if there is one. */
  consume(now: number): boolean {
    const elapsed = now - this.last
    if (elapsed >= this.intervalMs) {
      const fills = Math.floor(elapsed / this.intervalMs)
      this.tokens = Math.min(this.max, this.tokens + fills * this.perFill)
      this.last += fills * this.intervalMs
    }
    if (this.tokens === 0) return false
    // a full bucket gains nothing from waiting: its window starts when its first token is taken
    if (this.tokens === this.max) this.last = now
    this.tokens--
    return true
  }

  /** Whole seconds until the next fill (at least 1 while one is pending: a client should not retry at once). */
  resetSeconds(now: number): number {
    return Math.max(0, Math.ceil((this.last + this.intervalMs - now) / 1000))
  }
}

export class LocalRateLimitStats {
  enabled = 0
  enforced = 0
  rate_limited = 0
  ok = 0
}

/** One compiled LocalRateLimit (the filter's own, or a route's or virtual host's override) with its bucket. */
export class LocalRateLimitPolicy {
  readonly statPrefix: string
  /** null: nothing to do */
  readonly bucket: TokenBucket | null
  readonly enabledShare: number
  readonly enforcedShare: number
  readonly status: number
  readonly responseHeaders: HeaderMutations
  readonly requestHeadersNotEnforced: HeaderMutations
  readonly xHeaders: boolean
  /** the stats of the connection manager that last used this policy (a route table can serve several) */
  private statsOwner: HttpConnManagerStats | null = null
  private statsCache: LocalRateLimitStats | null = null

  constructor(cfg: LocalRateLimit, path: string, issues: ConfigIssue[]) {
    this.statPrefix = cfg.stat_prefix
    const tb = cfg.token_bucket
    let bucket: TokenBucket | null = null
    if (tb !== undefined) {
      const ms = parseDurationMs(tb.fill_interval)!
      if (ms < MIN_FILL_MS)
        issues.push({ path: `${path}.token_bucket.fill_interval`, message: `must be at least ${MIN_FILL_MS}ms` })
      else bucket = new TokenBucket(tb.max_tokens, tb.tokens_per_fill ?? 1, ms, performance.now())
    }
    this.enabledShare = share(cfg.filter_enabled)
    this.enforcedShare = share(cfg.filter_enforced)
    this.bucket = this.enabledShare > 0 ? bucket : null
    this.status = cfg.status?.code ?? 429
    this.responseHeaders = compileMutations(cfg, 'response', path, issues)
    this.requestHeadersNotEnforced = compileMutations(
      { request_headers_to_add: cfg.request_headers_to_add_when_not_enforced },
      'request',
      path,
      issues,
    )
    this.xHeaders = cfg.enable_x_ratelimit_headers === 'DRAFT_VERSION_03'
  }

  statsFor(hcm: HttpConnManagerStats): LocalRateLimitStats {
    if (this.statsOwner !== hcm) {
      this.statsOwner = hcm
      this.statsCache = hcm.filterStats(`${this.statPrefix}.http_local_rate_limit`, LocalRateLimitStats)
    }
    return this.statsCache!
  }
}

/** Compiles a per-route override (called by the route compiler for `typed_per_filter_config`). */
export function compileLocalRateLimitPerRoute(
  cfg: LocalRateLimit,
  path: string,
  issues: ConfigIssue[],
): LocalRateLimitPolicy {
  return new LocalRateLimitPolicy(cfg, path, issues)
}

export class LocalRateLimitFilterFactory implements HttpFilterFactory {
  readonly name: string
  readonly policy: LocalRateLimitPolicy
  readonly hcmStats: HttpConnManagerStats
  /** Math.random by default; tests make it deterministic */
  random: () => number = Math.random

  constructor(name: string, cfg: LocalRateLimit, path: string, issues: ConfigIssue[], hcmStats: HttpConnManagerStats) {
    this.name = name
    this.hcmStats = hcmStats
    this.policy = new LocalRateLimitPolicy(cfg, path, issues)
    this.policy.statsFor(hcmStats)
  }

  create(cb: FilterCallbacks, perRoute: unknown): StreamFilter | null {
    const policy = perRoute instanceof LocalRateLimitPolicy ? perRoute : this.policy
    const bucket = policy.bucket
    if (bucket === null) return null
    if (policy.enabledShare < 1 && this.random() >= policy.enabledShare) return null
    return new LocalRateLimitFilter(this, policy, bucket, cb)
  }
}

class LocalRateLimitFilter implements StreamFilter {
  private readonly factory: LocalRateLimitFilterFactory
  private readonly policy: LocalRateLimitPolicy
  private readonly bucket: TokenBucket
  private readonly cb: FilterCallbacks
  /** the tokens left when this request was checked (what x-ratelimit-remaining says) */
  private remaining = 0

  constructor(
    factory: LocalRateLimitFilterFactory,
    policy: LocalRateLimitPolicy,
    bucket: TokenBucket,
    cb: FilterCallbacks,
  ) {
    this.factory = factory
    this.policy = policy
    this.bucket = bucket
    this.cb = cb
  }

  decodeHeaders(head: RequestHead, _endStream: boolean): FilterStatus {
    const p = this.policy
    const stats = p.statsFor(this.factory.hcmStats)
    stats.enabled++
    const ok = this.bucket.consume(performance.now())
    this.remaining = this.bucket.tokens
    if (ok) {
      stats.ok++
      return CONTINUE
    }
    stats.rate_limited++
    if (p.enforcedShare < 1 && this.factory.random() >= p.enforcedShare) {
      p.requestHeadersNotEnforced.apply(head.headers)
      return CONTINUE
    }
    stats.enforced++
    const h = rateLimitedHeaders()
    p.responseHeaders.apply(h)
    sendRateLimited(this.cb, p.status, 'local_rate_limited', 'local_rate_limited', h)
    return STOP
  }

  encodeHeaders(_status: number, headers: Headers, _endStream: boolean): void {
    if (!this.policy.xHeaders) return
    const b = this.bucket
    headers.set('x-ratelimit-limit', String(b.max))
    headers.set('x-ratelimit-remaining', String(this.remaining))
    headers.set('x-ratelimit-reset', String(b.resetSeconds(performance.now())))
  }
}
