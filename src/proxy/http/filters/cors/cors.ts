/**
 * CORS (Envoy's envoy.filters.http.cors): the filter (`Cors`, no fields) applies the `CorsPolicy` that a route or
 * virtual host has in `typed_per_filter_config`; a route without one is not touched. Semantics follow Envoy's:
 *
 * - A request with a non-empty `Origin` is checked against `allow_origin_string_match` (any matcher; none: no
 *   origin is allowed). Allowed: `cors.origin_valid`; not: `cors.origin_invalid` and no CORS headers at all.
 * - A preflight (OPTIONS with `Access-Control-Request-Method`) from an allowed origin is answered by the proxy:
 *   200 with `access-control-allow-origin` (the origin), `-allow-credentials` (when true), `-allow-methods`,
 *   `-allow-headers`, `-max-age`, and `-allow-private-network` when allowed and asked for
 *   (`access-control-request-private-network: true`); `allow_methods` / `allow_headers` of `*` echo the request's
 *   `access-control-request-method` / `-headers`. From an origin not allowed it goes on to the upstream, unless
 *   `forward_not_matching_preflights` is false (then the same 200 from the proxy, without allow-origin). A
 *   matcher that matches the string `*` allows every origin.
 * - Any other request from an allowed origin gets `access-control-allow-origin`, `-allow-credentials` and
 *   `-expose-headers` on its response.
 * - `filter_enabled` (default 100%) and `shadow_enabled` (default 0%): a shadowed request only counts the stats.
 * - A route's policy is merged with its virtual host's field by field, the route's set fields winning (Envoy
 *   reads each field from the most specific policy that sets it); `filter_enabled`/`shadow_enabled` come from the
 *   most specific policy.
 */
import type { CorsPolicy, RuntimeFractionalPercent } from '../../../../config/envoy.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import { compileStringMatcher, type StringTest } from '../../../route/matchers.js'
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

function share(p: RuntimeFractionalPercent | undefined, unset: number): number {
  return p === undefined ? unset : fraction(p.default_value)
}

/** One route's (or virtual host's) CORS policy, compiled and merged over its less specific level's. */
export class CompiledCorsPolicy {
  /** null: not set at this level or above (then no origin is allowed) */
  readonly origins: StringTest[] | null
  /** '' when unset */
  readonly allowMethods: string
  readonly allowHeaders: string
  readonly exposeHeaders: string
  readonly maxAge: string
  readonly allowCredentials: boolean | undefined
  readonly allowPrivateNetwork: boolean | undefined
  readonly forwardNotMatching: boolean | undefined
  readonly enabledShare: number
  readonly shadowShare: number

  constructor(cfg: CorsPolicy, path: string, issues: ConfigIssue[], base: CompiledCorsPolicy | null) {
    const list = cfg.allow_origin_string_match ?? []
    this.origins =
      list.length > 0
        ? list.map((m, i) => compileStringMatcher(m, `${path}.allow_origin_string_match[${i}]`, issues))
        : (base?.origins ?? null)
    this.allowMethods = nonEmptyOr(cfg.allow_methods, base?.allowMethods)
    this.allowHeaders = nonEmptyOr(cfg.allow_headers, base?.allowHeaders)
    this.exposeHeaders = nonEmptyOr(cfg.expose_headers, base?.exposeHeaders)
    this.maxAge = nonEmptyOr(cfg.max_age, base?.maxAge)
    this.allowCredentials = cfg.allow_credentials ?? base?.allowCredentials
    this.allowPrivateNetwork = cfg.allow_private_network_access ?? base?.allowPrivateNetwork
    this.forwardNotMatching = cfg.forward_not_matching_preflights ?? base?.forwardNotMatching
    this.enabledShare = share(cfg.filter_enabled, 1)
    this.shadowShare = share(cfg.shadow_enabled, 0)
  }

  /** A matcher that matches `*` allows every origin (Envoy's rule). */
  originAllowed(origin: string): boolean {
    const list = this.origins
    if (list === null) return false
    for (const t of list) if (t('*') || t(origin)) return true
    return false
  }
}

function nonEmptyOr(v: string | undefined, base: string | undefined): string {
  return v !== undefined && v !== '' ? v : (base ?? '')
}

/** Compiles a per-route or per-virtual-host CorsPolicy over the less specific level's, if any. */
export function compileCorsPerRoute(
  cfg: CorsPolicy,
  path: string,
  issues: ConfigIssue[],
  base: unknown,
): CompiledCorsPolicy {
  return new CompiledCorsPolicy(cfg, path, issues, base instanceof CompiledCorsPolicy ? base : null)
}

export class CorsStats {
  origin_valid = 0
  origin_invalid = 0
}

export class CorsFilterFactory implements HttpFilterFactory {
  readonly name: string
  readonly stats: CorsStats
  /** Math.random by default; tests make it deterministic */
  random: () => number = Math.random

  constructor(name: string, hcmStats: HttpConnManagerStats) {
    this.name = name
    this.stats = hcmStats.filterStats('cors', CorsStats)
  }

  create(cb: FilterCallbacks, perRoute: unknown): StreamFilter | null {
    if (!(perRoute instanceof CompiledCorsPolicy)) return null
    const origin = cb.head?.headers.get('origin')
    if (origin === undefined || origin === '') return null
    return new CorsFilter(this, perRoute, cb, origin)
  }
}

/** 0: not a CORS request (or shadowed); 1: an allowed origin's actual request; 2: answered as a preflight */
const NONE = 0
const ACTUAL = 1
const PREFLIGHT = 2

class CorsFilter implements StreamFilter {
  private readonly factory: CorsFilterFactory
  private readonly policy: CompiledCorsPolicy
  private readonly cb: FilterCallbacks
  private readonly origin: string
  private state = NONE

  constructor(factory: CorsFilterFactory, policy: CompiledCorsPolicy, cb: FilterCallbacks, origin: string) {
    this.factory = factory
    this.policy = policy
    this.cb = cb
    this.origin = origin
  }

  decodeHeaders(head: RequestHead, _endStream: boolean): FilterStatus {
    const p = this.policy
    const random = this.factory.random
    const enabled = p.enabledShare >= 1 || (p.enabledShare > 0 && random() < p.enabledShare)
    const shadow = p.shadowShare > 0 && (p.shadowShare >= 1 || random() < p.shadowShare)
    if (!enabled && !shadow) return CONTINUE
    const preflight = head.method === 'OPTIONS' && (head.headers.get('access-control-request-method') ?? '') !== ''
    const allowed = p.originAllowed(this.origin)
    if (allowed) this.factory.stats.origin_valid++
    else this.factory.stats.origin_invalid++
    if (!enabled) return CONTINUE
    if (!preflight) {
      if (allowed) this.state = ACTUAL
      return CONTINUE
    }
    if (!allowed && p.forwardNotMatching !== false) return CONTINUE
    // answered here: from an origin not allowed (forward_not_matching_preflights false) without allow-origin
    this.state = PREFLIGHT
    const req = head.headers
    const h = allowed ? new Headers(['access-control-allow-origin', this.origin]) : new Headers()
    if (p.allowCredentials === true) h.add('access-control-allow-credentials', 'true')
    if (p.allowMethods !== '')
      h.add(
        'access-control-allow-methods',
        p.allowMethods === '*' ? (req.get('access-control-request-method') ?? '') : p.allowMethods,
      )
    if (p.allowHeaders !== '')
      h.add(
        'access-control-allow-headers',
        p.allowHeaders === '*' ? (req.get('access-control-request-headers') ?? '') : p.allowHeaders,
      )
    if (p.maxAge !== '') h.add('access-control-max-age', p.maxAge)
    if (p.allowPrivateNetwork === true && req.get('access-control-request-private-network') === 'true')
      h.add('access-control-allow-private-network', 'true')
    this.cb.sendLocalReply(200, '', 'cors_preflight', null, h)
    return STOP
  }

  encodeHeaders(_status: number, headers: Headers, _endStream: boolean): void {
    if (this.state !== ACTUAL) return
    const p = this.policy
    headers.set('access-control-allow-origin', this.origin)
    if (p.allowCredentials === true) headers.set('access-control-allow-credentials', 'true')
    if (p.exposeHeaders !== '') headers.set('access-control-expose-headers', p.exposeHeaders)
  }
}
