/**
 * Loom's global rate limit filter (loom.filters.http.global_ratelimit.v1alpha1): the proxy's part of a limit the
 * whole mesh shares. The filter itself (in `http_filters`) has no limits; a virtual host's or route's
 * `typed_per_filter_config` names the limits its requests count against (GlobalRateLimitPerRoute), each with the
 * mesh-wide rate and burst, the request match (header matchers; `:method` and `:path` carry method and path
 * prefix) and what to do when the control plane is out of reach.
 *
 * Each limit's token bucket (shares.ts) refills at this proxy's share of the rate, which the control plane sets
 * from every proxy's demand (reporter.ts sends the counts, receives the shares). A request a limit matches takes a
 * token; without one it is refused: 429, response flag RL, `x-envoy-ratelimited: true`, `x-ratelimit-limit`
 * (the limit per second, with its `w=1` policy), `x-ratelimit-remaining: 0`, `x-ratelimit-reset` (seconds to the next
 * token) and `x-loom-reason: global_rate_limited:<namespace>/<name>`, the reply the local rate limit filter makes.
 *
 * Stats, under the connection manager: `<stat_prefix>.http_global_rate_limit.ok`, `.rate_limited`,
 * `.allowed_unavailable` (let through because the control plane was out of reach and the limit says ALLOW_ALL).
 */
import type { GlobalRateLimit, GlobalRateLimitPerRoute } from '../../../../config/envoy.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import { type CompiledHeaderMatcher, compileHeaderMatcher } from '../../../route/matchers.js'
import { MatchContext } from '../../../route/view.js'
import type { HttpConnManagerStats } from '../../../stats/stats.js'
import type { RequestHead } from '../../types.js'
import {
  CONTINUE,
  type FilterCallbacks,
  type FilterStatus,
  type HttpFilterFactory,
  STOP,
  type StreamFilter,
} from '../filter.js'
import { rateLimitedHeaders, sendRateLimited } from '../local-ratelimit/local-ratelimit.js'
import { ALLOW_ALL, DENY_ALL, globalLimits, type LimitState } from './shares.js'

export class GlobalRateLimitStats {
  ok = 0
  rate_limited = 0
  allowed_unavailable = 0
}

/** One limit a route's requests may count against. */
class CompiledLimit {
  readonly state: LimitState
  readonly headers: readonly CompiledHeaderMatcher[]
  readonly invert: boolean
  readonly reason: string
  readonly limitHeader: string

  constructor(state: LimitState, headers: CompiledHeaderMatcher[], invert: boolean) {
    this.state = state
    this.headers = headers
    this.invert = invert
    this.reason = `global_rate_limited:${state.name}`
    const r = Math.round(state.totalRate * 1000) / 1000
    this.limitHeader = `${r}, ${r};w=1`
  }

  matches(ctx: MatchContext): boolean {
    const hs = this.headers
    let all = true
    for (let i = 0; i < hs.length; i++) {
      if (!hs[i]!.matches(ctx)) {
        all = false
        break
      }
    }
    return all !== this.invert
  }
}

/** A virtual host's or route's limits, compiled (the route compiler calls this for `typed_per_filter_config`). */
export class GlobalRateLimitPolicy {
  readonly limits: readonly CompiledLimit[]
  /** no limit has a match: every request counts against all of them */
  readonly matchAll: boolean

  constructor(cfg: GlobalRateLimitPerRoute, path: string, issues: ConfigIssue[]) {
    const out: CompiledLimit[] = []
    const names = new Set<string>()
    ;(cfg.limits ?? []).forEach((l, i) => {
      const p = `${path}.limits[${i}]`
      if (names.has(l.name)) issues.push({ path: `${p}.name`, message: `limit "${l.name}" is listed twice` })
      names.add(l.name)
      const headers = (l.headers ?? []).map((h, k) => compileHeaderMatcher(h, `${p}.headers[${k}]`, issues))
      const burst = l.burst ?? Math.max(1, Math.ceil(l.requests_per_second))
      const state = globalLimits.get(
        l.name,
        l.requests_per_second,
        burst,
        l.on_control_plane_unavailable ?? 'KEEP_LAST_SHARE',
      )
      out.push(new CompiledLimit(state, headers, l.invert_match === true))
    })
    this.limits = out
    this.matchAll = out.every((l) => l.headers.length === 0 && !l.invert)
  }
}

export function compileGlobalRateLimitPerRoute(
  cfg: GlobalRateLimitPerRoute,
  path: string,
  issues: ConfigIssue[],
): GlobalRateLimitPolicy {
  return new GlobalRateLimitPolicy(cfg, path, issues)
}

/** Matching is synchronous: one scratch context serves every request. */
const scratch = new MatchContext()

export class GlobalRateLimitFilterFactory implements HttpFilterFactory {
  readonly name: string
  readonly stats: GlobalRateLimitStats

  constructor(name: string, cfg: GlobalRateLimit, hcmStats: HttpConnManagerStats) {
    this.name = name
    const prefix = cfg.stat_prefix !== undefined && cfg.stat_prefix !== '' ? `${cfg.stat_prefix}.` : ''
    this.stats = hcmStats.filterStats(`${prefix}http_global_rate_limit`, GlobalRateLimitStats)
  }

  create(cb: FilterCallbacks, perRoute: unknown): StreamFilter | null {
    if (!(perRoute instanceof GlobalRateLimitPolicy) || perRoute.limits.length === 0) return null
    return new GlobalRateLimitFilter(this.stats, perRoute, cb)
  }
}

class GlobalRateLimitFilter implements StreamFilter {
  private readonly stats: GlobalRateLimitStats
  private readonly policy: GlobalRateLimitPolicy
  private readonly cb: FilterCallbacks

  constructor(stats: GlobalRateLimitStats, policy: GlobalRateLimitPolicy, cb: FilterCallbacks) {
    this.stats = stats
    this.policy = policy
    this.cb = cb
  }

  decodeHeaders(head: RequestHead, _endStream: boolean): FilterStatus {
    const limits = this.policy.limits
    const all = this.policy.matchAll
    if (!all) scratch.reset(head)
    const now = performance.now()
    for (let i = 0; i < limits.length; i++) {
      const l = limits[i]!
      if (!all && !l.matches(scratch)) continue
      const s = l.state
      if (s.mode === ALLOW_ALL) {
        s.admitted++
        this.stats.allowed_unavailable++
        continue
      }
      if (s.mode !== DENY_ALL && s.bucket.consume(now)) {
        s.admitted++
        continue
      }
      s.denied++
      this.stats.rate_limited++
      const h = rateLimitedHeaders()
      h.add('x-ratelimit-limit', l.limitHeader)
      h.add('x-ratelimit-remaining', '0')
      h.add('x-ratelimit-reset', String(s.bucket.resetSeconds(now)))
      sendRateLimited(this.cb, 429, l.reason, 'global_rate_limited', h)
      return STOP
    }
    this.stats.ok++
    return CONTINUE
  }
}
