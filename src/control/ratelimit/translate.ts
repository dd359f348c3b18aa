/**
 * GlobalRateLimit → what the sidecars enforce: the global rate limit filter in the outbound connection manager
 * (after fault and CORS, before the router) and, on each outbound virtual host whose host a limit names, the
 * limits in `typed_per_filter_config` (GlobalRateLimitPerRoute, loom-protos.ts). A limit's hosts resolve as a
 * VirtualService's do (short names in the limit's namespace); a wildcard host covers the hosts under it. The
 * match becomes header matchers: `method` on `:method`, `pathPrefix` on `:path`, `headers` as Istio's header
 * matches. Proxies without any limit in reach get neither the filter nor the config.
 */
import { burstOf, type GlobalRateLimitSpec, ratePerSecond, type Resource } from '../../api/index.js'
import { TypeUrls } from '../../config/type-urls.js'
import { hostSubsetOf } from '../registry/hostname.js'
import { headerMatcher } from '../translate/routes.js'
import type { Scope } from '../translate/scope.js'
import type { Json } from '../translate/util.js'

export const GLOBAL_RATELIMIT_FILTER = 'loom.filters.http.global_ratelimit'

/** The filter entry in http_filters. */
export const GLOBAL_RATELIMIT: Json = {
  name: GLOBAL_RATELIMIT_FILTER,
  typed_config: { '@type': TypeUrls.globalRateLimit },
}

const MODES: Record<string, string> = { AllowAll: 'ALLOW_ALL', DenyAll: 'DENY_ALL' }

/** One GlobalRateLimit as the filter's Limit message. */
export function limitConfig(r: Resource<GlobalRateLimitSpec>): Json {
  const spec = r.spec!
  const out: Json = {
    name: `${r.metadata.namespace}/${r.metadata.name}`,
    requests_per_second: ratePerSecond(spec),
    burst: burstOf(spec),
  }
  const m = spec.match
  const headers: Json[] = []
  if (m?.method !== undefined) headers.push({ name: ':method', string_match: { exact: m.method } })
  if (m?.pathPrefix !== undefined) headers.push({ name: ':path', string_match: { prefix: m.pathPrefix } })
  for (const [name, sm] of Object.entries(m?.headers ?? {})) headers.push(headerMatcher(name, sm))
  if (headers.length > 0) out.headers = headers
  if (m?.invert === true) out.invert_match = true
  const mode = MODES[spec.onControlPlaneUnavailable ?? '']
  if (mode !== undefined) out.on_control_plane_unavailable = mode
  return out
}

/**
 * Adds the limits to the virtual hosts they name (`vhosts[].host` is the host a virtual host serves) and says
 * whether any got one (then the connection manager needs the filter).
 */
export function attachGlobalRateLimits(scope: Scope, vhosts: { host: string; vhost: Json }[]): boolean {
  const limits = scope.of<GlobalRateLimitSpec>('GlobalRateLimit')
  if (limits.length === 0) return false
  const resolved = limits.map((r) => ({
    r,
    hosts: (r.spec?.hosts ?? []).map((h) => scope.resolve(h, r.metadata.namespace)),
    config: null as Json | null,
  }))
  let any = false
  for (const { host, vhost } of vhosts) {
    const list: Json[] = []
    for (const l of resolved) {
      if (!l.hosts.some((h) => hostSubsetOf(host, h))) continue
      l.config ??= limitConfig(l.r)
      list.push(l.config)
    }
    if (list.length === 0) continue
    any = true
    vhost.typed_per_filter_config = {
      ...((vhost.typed_per_filter_config as Json | undefined) ?? {}),
      [GLOBAL_RATELIMIT_FILTER]: { '@type': TypeUrls.globalRateLimitPerRoute, limits: list },
    }
  }
  return any
}
