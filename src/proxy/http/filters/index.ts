/**
 * The HTTP filters Loom knows, by Envoy type URL, and the compile steps of a connection manager's chain and of
 * per-route overrides (`typed_per_filter_config`). Adding a filter: its schema in src/config/envoy.ts (the
 * `HttpFilter` variant and `typedPerFilterConfig`), its module beside this one, and one entry in each switch below.
 */
import type {
  CorsPolicy,
  ExtAuthzPerRoute,
  GlobalRateLimitPerRoute,
  HttpFilter,
  HTTPFault,
  LocalRateLimit,
} from '../../../config/envoy.js'
import { TypeUrls } from '../../../config/type-urls.js'
import { type ConfigIssue, ErrorCodes, LoomError } from '../../../core/errors.js'
import type { HttpConnManagerStats } from '../../stats/stats.js'
import type { UpstreamAccess } from '../async-client.js'
import { CorsFilterFactory, compileCorsPerRoute } from './cors/cors.js'
import { compileExtAuthzPerRoute, ExtAuthzFilterFactory } from './ext-authz/ext-authz.js'
import { ExplainFilterFactory } from './explain/explain.js'
import { compileFaultPerRoute, FaultFilterFactory } from './fault/fault.js'
import type { HttpFilterFactory } from './filter.js'
import { compileGlobalRateLimitPerRoute, GlobalRateLimitFilterFactory } from './global-ratelimit/global-ratelimit.js'
import { IstioStatsFilterFactory, type TelemetryContext } from './istio-stats/istio-stats.js'
import { JwtAuthnFilterFactory } from './jwt-authn/jwt-authn.js'
import { IstioMetrics } from '../../telemetry/metrics.js'
import { LocalWorkload } from '../../telemetry/workload.js'
import { compileLocalRateLimitPerRoute, LocalRateLimitFilterFactory } from './local-ratelimit/local-ratelimit.js'
import { RbacFilterFactory } from './rbac/rbac.js'

/** A chain compiled outside a proxy (checks, tests): its stats filter reports an unknown workload, to nobody. */
function noWorkload(): TelemetryContext {
  return {
    workload: new LocalWorkload({ id: '', metadata: {} }),
    direction: 'UNSPECIFIED',
    metrics: new IstioMetrics(),
  }
}

/** The chain's config cannot be compiled; issue paths are relative to the connection manager's typed_config. */
export class HttpFilterConfigError extends LoomError {
  override name = 'HttpFilterConfigError'
  readonly issues: ConfigIssue[]
  constructor(issues: ConfigIssue[]) {
    super(
      ErrorCodes.CONFIG_INVALID,
      `http_filters are invalid:\n${issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`,
    )
    this.issues = issues
  }
}

/**
 * The filters before the router, compiled. The schema has checked each typed_config; the cross checks (router
 * last, names unique) are in src/config/load.ts. Throws HttpFilterConfigError for what only compiling finds.
 * `upstream` is how filters that call other services (ext_authz) reach the proxy's clusters; `telemetry` is the
 * proxy's workload and the listener's direction, for Istio's stats filter.
 */
export function compileHttpFilters(
  filters: readonly HttpFilter[],
  stats: HttpConnManagerStats,
  upstream?: UpstreamAccess,
  telemetry?: TelemetryContext,
): HttpFilterFactory[] {
  const issues: ConfigIssue[] = []
  const out: HttpFilterFactory[] = []
  filters.forEach((f, i) => {
    const tc = f.typed_config
    const path = `http_filters[${i}].typed_config`
    switch (tc['@type']) {
      case TypeUrls.router:
        return
      case TypeUrls.fault:
        out.push(new FaultFilterFactory(f.name, tc, path, issues, stats))
        return
      case TypeUrls.localRateLimit:
        out.push(new LocalRateLimitFilterFactory(f.name, tc, path, issues, stats))
        return
      case TypeUrls.cors:
        out.push(new CorsFilterFactory(f.name, stats))
        return
      case TypeUrls.globalRateLimit:
        out.push(new GlobalRateLimitFilterFactory(f.name, tc, stats))
        return
      case TypeUrls.jwtAuthn:
        out.push(new JwtAuthnFilterFactory(f.name, tc, path, issues, stats))
        return
      case TypeUrls.rbac:
        out.push(new RbacFilterFactory(f.name, tc, path, issues, stats))
        return
      case TypeUrls.explain:
        out.push(new ExplainFilterFactory(f.name, tc, path, issues, telemetry?.workload.node.id ?? ''))
        return
      case TypeUrls.extAuthz:
        if (upstream === undefined) issues.push({ path, message: "ext_authz needs the proxy's clusters" })
        else out.push(new ExtAuthzFilterFactory(f.name, tc, path, issues, stats, upstream))
        return
      case TypeUrls.istioStats:
        out.push(new IstioStatsFilterFactory(f.name, tc, telemetry ?? noWorkload()))
        return
    }
  })
  if (issues.length > 0) throw new HttpFilterConfigError(issues)
  return out
}

/**
 * One per-route override, compiled by its filter (issues go to the route configuration's list). `base` is the
 * same filter's compiled config at the less specific level (a route's virtual host), for filters that merge with
 * it (CORS, as Envoy); the others replace it whole.
 */
export function compilePerFilterConfig(
  cfg: { '@type': string },
  path: string,
  issues: ConfigIssue[],
  base?: unknown,
): unknown {
  switch (cfg['@type']) {
    case TypeUrls.fault:
      return compileFaultPerRoute(cfg as HTTPFault, path, issues)
    case TypeUrls.localRateLimit:
      return compileLocalRateLimitPerRoute(cfg as LocalRateLimit, path, issues)
    case TypeUrls.corsPolicy:
      return compileCorsPerRoute(cfg as CorsPolicy, path, issues, base)
    case TypeUrls.globalRateLimitPerRoute:
      return compileGlobalRateLimitPerRoute(cfg as GlobalRateLimitPerRoute, path, issues)
    case TypeUrls.extAuthzPerRoute:
      return compileExtAuthzPerRoute(cfg as ExtAuthzPerRoute)
  }
  issues.push({ path, message: `no per-route config for ${cfg['@type']}` })
  return null
}

/** The chain's shape: names unique, the router last and only there (Envoy's terminal filter). */
export function checkHttpFilters(filters: readonly HttpFilter[], path: string, issues: ConfigIssue[]): void {
  const names = new Set<string>()
  filters.forEach((f, k) => {
    if (names.has(f.name))
      issues.push({ path: `${path}[${k}].name`, message: `another HTTP filter is already called "${f.name}"` })
    names.add(f.name)
    const router = f.typed_config['@type'] === TypeUrls.router
    if (router && k !== filters.length - 1) {
      issues.push({ path: `${path}[${k}]`, message: 'the router filter must be the last HTTP filter' })
    }
    if (!router && k === filters.length - 1) {
      issues.push({
        path: `${path}[${k}]`,
        message: 'the last HTTP filter must be the router (envoy.filters.http.router)',
      })
    }
  })
}
