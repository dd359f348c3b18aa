/**
 * VirtualService HTTP routes → Envoy routes, for one listening port (a service port for sidecars, a server port for
 * gateways). Istio's semantics:
 *
 * - `http[]` in order; a rule without `match` is one route matching everything, a rule with several matches is one
 *   route per match (OR). A match for another `port`, other `sourceLabels`/`sourceNamespace`, or other `gateways` than
 *   the proxy's is dropped. Once a route matches every request, later rules are unreachable and are not emitted.
 * - uri exact/prefix/regex → path/prefix/safe_regex (RE2, full match); `ignoreUriCase` → case_sensitive false.
 *   headers, withoutHeaders (inverted; a missing header counts as empty), queryParams, method (`:method`),
 *   authority (`:authority`), scheme (`:scheme`). A StringMatch that is empty or the regex `*` means "present".
 * - One destination → `cluster`, several → `weighted_clusters` (weight-0 destinations dropped). Cluster names are
 *   `outbound|<port>|<subset>|<host>`; the port is the destination's, else the service's only port, else the
 *   listening port.
 * - redirect, directResponse, rewrite (uri → prefix_rewrite, uriRegexRewrite → regex_rewrite, authority →
 *   host_rewrite_literal), headers set/add/remove on the rule and on each destination, timeout (default: none).
 * - `fault` → the fault filter's per-route config (`typed_per_filter_config["envoy.filters.http.fault"]`, Envoy's
 *   HTTPFault): fixedDelay, httpStatus, grpcStatus; `percentage` (a double) as a fraction of a million, the older
 *   integer `percent` as a percentage; unset is 0%, as in Istio. Not for proxyless gRPC.
 * - `corsPolicy` → the CORS filter's per-route config (`typed_per_filter_config["envoy.filters.http.cors"]`,
 *   Envoy's CorsPolicy), as Istio's TranslateCORSPolicy: allowOrigins (StringMatch → StringMatcher; the deprecated
 *   allowOrigin as exact matches when allowOrigins is unset), allowMethods / allowHeaders / exposeHeaders joined
 *   with commas, maxAge in whole seconds, allowCredentials, `filter_enabled` 100%, and
 *   `forward_not_matching_preflights` false for `unmatchedPreflights: IGNORE`, else true. Not for proxyless gRPC.
 * - `retries` → `retry_policy` as Istio's ConvertPolicy: absent, Istio's default (2 retries on connect-failure,
 *   refused-stream, unavailable, cancelled, retriable-status-codes, the previous_hosts predicate, 5 host picks);
 *   `attempts: 0` none; else the default with `attempts`, `retryOn` (numbers become retriable_status_codes),
 *   `perTryTimeout`, `backoff` and `retryIgnorePreviousHosts`. No previous_hosts predicate when the route hashes
 *   (consistent hash). Conditions the proxy does not evaluate are dropped (analyze warns); `retryRemoteLocalities`
 *   is ignored. Services without a VirtualService get the default too, as in Istio. Not for proxyless gRPC.
 * - `mirror` / `mirrorPercentage` / `mirrorPercent` and `mirrors` → `request_mirror_policies` as Istio's
 *   TranslateRequestMirrorPolicy (unset percentages are 100%, an explicit 0% mirrors nothing). Not for proxyless gRPC.
 * - Not translated yet (see `analyze`): delegate, JWT-claim header matches (the whole match is dropped
 *   rather than widened), authority rewrite on one of several weighted destinations.
 *
 * Proxyless gRPC gets no redirect or direct-response routes and reads timeouts from `max_stream_duration`.
 */
import { RETRY_ON as PROXY_RETRY_ON, TypeUrls } from '../../config/envoy.js'
import type {
  Destination,
  Headers,
  HTTPMatchRequest,
  HTTPRoute,
  Resource,
  VirtualServiceSpec,
} from '../../api/index.js'
import { parseDurationNs } from '../../api/index.js'
import { GRPC_CODES } from '../../api/networking.js'
import type { Service } from '../registry/registry.js'
import type { HTTPRedirect, HTTPRouteDestination, StringMatch } from './types.js'
import { clusterName, cmp, istioOrigin, type Json, protoDuration } from './util.js'

/** What route building needs to know about the proxy and the registry. */
export interface RouteContext {
  generator: 'envoy' | 'grpc'
  proxyLabels: Readonly<Record<string, string>>
  proxyNamespace: string
  /** `mesh` for sidecars; `namespace/name` of the gateways a gateway proxy serves */
  gatewayNames: ReadonlySet<string>
  /** the server terminates TLS (only changes the default scheme of redirects) */
  isTls: boolean
  /** a host as written in a resource of `namespace`, resolved to an FQDN (see registry/hostname) */
  resolve(host: string, namespace: string): string
  service(fqdn: string): Service | undefined
  /** the route hash policy the DestinationRule asks for on traffic to (host, subset, port), or null */
  hashPolicy(fqdn: string, subset: string, port: number): Json | null
}

/** `gateways:` entries as Istio resolves them: `mesh`, `ns/name`, `name.ns.svc.<domain>`, `name` (VS namespace). */
export function resolveGatewayName(name: string, vsNamespace: string): string {
  if (name === 'mesh') return name
  const slash = name.indexOf('/')
  if (slash >= 0) {
    const ns = name.slice(0, slash)
    return `${ns === '.' ? vsNamespace : ns}/${name.slice(slash + 1)}`
  }
  const dot = name.indexOf('.')
  if (dot >= 0) {
    const parts = name.split('.')
    return `${parts[1]}/${parts[0]}`
  }
  return `${vsNamespace}/${name}`
}

/** The VirtualService's gateways, resolved; `mesh` when it lists none. */
export function virtualServiceGateways(vs: Resource<VirtualServiceSpec>): string[] {
  const g = vs.spec?.gateways ?? []
  if (g.length === 0) return ['mesh']
  return g.map((n) => resolveGatewayName(n, vs.metadata.namespace))
}

/** A route that matches every request: prefix `/` (or a `*`/`.*` regex) and nothing else. */
export function isCatchAll(route: Json): boolean {
  const m = route.match as Json
  const headers = m.headers as unknown[] | undefined
  const query = m.query_parameters as unknown[] | undefined
  if ((headers?.length ?? 0) > 0 || (query?.length ?? 0) > 0) return false
  if (m.prefix === '/' || m.prefix === '') return true
  const re = (m.safe_regex as Json | undefined)?.regex
  return re === '*' || re === '.*'
}

/** Routes for one VirtualService on one port (possibly none). */
export function virtualServiceRoutes(vs: Resource<VirtualServiceSpec>, port: number, ctx: RouteContext): Json[] {
  const out: Json[] = []
  for (const http of vs.spec?.http ?? []) {
    let catchAll = false
    const matches: (HTTPMatchRequest | null)[] = (http.match ?? []).length === 0 ? [null] : http.match!
    for (const match of matches) {
      const r = translateRoute(vs, http, match, port, ctx)
      if (r === null) continue
      out.push(r)
      if (isCatchAll(r)) {
        catchAll = true
        break
      }
    }
    if (catchAll) break
  }
  return out
}

export const FAULT_FILTER = 'envoy.filters.http.fault'
const FAULT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault'

type Fault = NonNullable<HTTPRoute['fault']>

/** Istio's Percent (a double, 0..100) as Envoy's FractionalPercent over a million, as Istio writes it. */
function fractionOf(value: number | undefined): Json {
  return { numerator: Math.round((value ?? 0) * 10_000), denominator: 'MILLION' }
}

/** VirtualService `fault` → Envoy's HTTPFault. */
export function translateFault(f: Fault): Json {
  const out: Json = { '@type': FAULT_TYPE }
  const d = f.delay
  if (d !== undefined && d.fixedDelay !== undefined) {
    out.delay = {
      fixed_delay: protoDuration(d.fixedDelay) ?? '0s',
      percentage:
        d.percentage !== undefined
          ? fractionOf(d.percentage.value)
          : { numerator: d.percent ?? 0, denominator: 'HUNDRED' },
    }
  }
  const a = f.abort
  if (a !== undefined) {
    const abort: Json = {}
    if (a.httpStatus !== undefined) abort.http_status = a.httpStatus
    else if (a.grpcStatus !== undefined) {
      const code = GRPC_CODES.indexOf(a.grpcStatus)
      abort.grpc_status = code >= 0 ? code : Number(a.grpcStatus)
    }
    if (a.percentage !== undefined) abort.percentage = fractionOf(a.percentage.value)
    if (abort.http_status !== undefined || abort.grpc_status !== undefined) out.abort = abort
  }
  return out
}

export const CORS_FILTER = 'envoy.filters.http.cors'
const CORS_POLICY_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy'

type Cors = NonNullable<HTTPRoute['corsPolicy']>

/** An allowed origin as Envoy's StringMatcher (Istio's ConvertToEnvoyMatch); null for an empty match. */
function originMatcher(m: StringMatch): Json | null {
  if (typeof m.exact === 'string') return { exact: m.exact }
  if (typeof m.prefix === 'string' && m.prefix !== '') return { prefix: m.prefix }
  if (typeof m.regex === 'string' && m.regex !== '') return { safe_regex: { regex: m.regex } }
  return null
}

/** VirtualService `corsPolicy` → Envoy's CorsPolicy, as Istio's TranslateCORSPolicy writes it. */
export function translateCorsPolicy(c: Cors): Json {
  const out: Json = {
    '@type': CORS_POLICY_TYPE,
    forward_not_matching_preflights: c.unmatchedPreflights !== 'IGNORE',
  }
  const origins =
    c.allowOrigins !== undefined
      ? c.allowOrigins.map(originMatcher).filter((m) => m !== null)
      : (c.allowOrigin ?? []).map((o) => ({ exact: o }))
  if (origins.length > 0) out.allow_origin_string_match = origins
  out.filter_enabled = { default_value: { numerator: 100, denominator: 'HUNDRED' } }
  if (c.allowCredentials !== undefined) out.allow_credentials = c.allowCredentials
  const join = (list: string[] | undefined) => (list ?? []).join(',')
  if (join(c.allowHeaders) !== '') out.allow_headers = join(c.allowHeaders)
  if (join(c.allowMethods) !== '') out.allow_methods = join(c.allowMethods)
  if (join(c.exposeHeaders) !== '') out.expose_headers = join(c.exposeHeaders)
  const ns = c.maxAge === undefined ? null : parseDurationNs(c.maxAge)
  if (ns !== null && ns >= 0n) out.max_age = String(ns / 1_000_000_000n)
  return out
}

/** The route for a service without a VirtualService. */
export function defaultRoute(cluster: string, hash: Json | null, generator: 'envoy' | 'grpc'): Json {
  const action: Json = { cluster }
  if (generator === 'envoy') action.timeout = '0s'
  if (hash !== null) action.hash_policy = [hash]
  if (generator === 'envoy') action.retry_policy = retryPolicy(undefined, hash !== null)
  return { name: 'default', match: { prefix: '/' }, route: action }
}

/** Istio's default retry conditions (pilot/pkg/networking/core/route/retry). */
export const DEFAULT_RETRY_ON = 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes'
const PREVIOUS_HOSTS: Json = {
  name: 'envoy.retry_host_predicates.previous_hosts',
  typed_config: { '@type': TypeUrls.previousHostsPredicate },
}
const SUPPORTED_RETRY_ON: ReadonlySet<string> = new Set(PROXY_RETRY_ON)

/**
 * VirtualService `retries` → Envoy `retry_policy`, as Istio's ConvertPolicy; null when `attempts` is 0 (retries
 * off). `hashed`: the route has a consistent-hash policy, so retries stay on the hashed host (no previous_hosts).
 */
export function retryPolicy(r: HTTPRoute['retries'], hashed: boolean): Json | null {
  if (r !== undefined && (r.attempts ?? 0) <= 0) return null
  const out: Json = { retry_on: DEFAULT_RETRY_ON, num_retries: r?.attempts ?? 2 }
  let previousHosts = !hashed
  if (r !== undefined) {
    if (r.retryOn !== undefined && r.retryOn !== '') {
      const on: string[] = []
      const codes: number[] = []
      for (const part of r.retryOn.split(',').map((t) => t.trim())) {
        if (part === '') continue
        if (/^\d{3}$/.test(part)) codes.push(Number(part))
        // conditions the proxy does not evaluate are left out (analyze warns about them)
        else if (SUPPORTED_RETRY_ON.has(part)) on.push(part)
      }
      if (codes.length > 0 && !on.includes('retriable-status-codes')) on.push('retriable-status-codes')
      out.retry_on = on.join(',')
      if (codes.length > 0) out.retriable_status_codes = codes
    }
    const perTry = protoDuration(r.perTryTimeout)
    if (perTry !== null) out.per_try_timeout = perTry
    if (r.retryIgnorePreviousHosts !== undefined) previousHosts = r.retryIgnorePreviousHosts
    const backoff = protoDuration(r.backoff)
    if (backoff !== null) out.retry_back_off = { base_interval: backoff }
  }
  if (previousHosts) out.retry_host_predicate = [PREVIOUS_HOSTS]
  out.host_selection_retry_max_attempts = 5
  return out
}

/** Whether a match applies to this proxy (port, source labels/namespace, gateways). */
function matchApplies(match: HTTPMatchRequest | null, port: number, vsNamespace: string, ctx: RouteContext): boolean {
  if (match === null) return true
  if (typeof match.port === 'number' && match.port !== 0 && match.port !== port) return false
  const gateways = match.gateways ?? []
  if (gateways.length > 0) return gateways.some((g) => ctx.gatewayNames.has(resolveGatewayName(g, vsNamespace)))
  for (const [k, v] of Object.entries(match.sourceLabels ?? {})) if (ctx.proxyLabels[k] !== v) return false
  return (
    match.sourceNamespace === undefined || match.sourceNamespace === '' || match.sourceNamespace === ctx.proxyNamespace
  )
}

function translateRoute(
  vs: Resource<VirtualServiceSpec>,
  http: HTTPRoute,
  match: HTTPMatchRequest | null,
  port: number,
  ctx: RouteContext,
): Json | null {
  if (!matchApplies(match, port, vs.metadata.namespace, ctx)) return null
  const routeMatch = translateMatch(match)
  if (routeMatch === null) return null
  if (ctx.generator === 'grpc' && (http.redirect !== undefined || http.directResponse !== undefined)) return null

  const out: Json = {}
  const name = match?.name ? `${http.name ?? ''}.${match.name}` : http.name
  if (name !== undefined && name !== '') out.name = name
  out.match = routeMatch
  out.metadata = istioOrigin('virtual-service', vs.metadata.namespace, vs.metadata.name)
  const ops = headerOperations(http.headers)
  if (ctx.generator === 'envoy' && (http.fault !== undefined || http.corsPolicy !== undefined)) {
    const perFilter: Json = {}
    if (http.fault !== undefined) perFilter[FAULT_FILTER] = translateFault(http.fault)
    if (http.corsPolicy !== undefined) perFilter[CORS_FILTER] = translateCorsPolicy(http.corsPolicy)
    out.typed_per_filter_config = perFilter
  }

  if (http.redirect !== undefined) {
    const redirect = translateRedirect(http.redirect, port, ctx.isTls)
    if (redirect === null) return null
    out.redirect = redirect
  } else if (http.directResponse !== undefined) {
    const dr: Json = { status: http.directResponse.status ?? 200 }
    const body = http.directResponse.body
    if (body?.string !== undefined) dr.body = { inline_string: body.string }
    else if (body?.bytes !== undefined) dr.body = { inline_bytes: body.bytes }
    out.direct_response = dr
  } else {
    const destOps: Json = {}
    const action = routeAction(vs, http, ops.authority, port, ctx, destOps)
    if (action === null) return null
    out.route = action
    // The rule's header operations first, then (for a single destination) the destination's, as Istio does.
    appendHeaderOps(out, ops)
    for (const f of HEADER_FIELDS) {
      if (destOps[f] !== undefined)
        out[f] = [...((out[f] as unknown[] | undefined) ?? []), ...(destOps[f] as unknown[])]
    }
    return out
  }
  appendHeaderOps(out, ops)
  return out
}

function routeAction(
  vs: Resource<VirtualServiceSpec>,
  http: HTTPRoute,
  ruleAuthority: string,
  port: number,
  ctx: RouteContext,
  destOps: Json,
): Json | null {
  const rewrite: Json = {}
  let authority = ruleAuthority
  const rw = http.rewrite
  if (rw !== undefined) {
    if (rw.uriRegexRewrite?.match !== undefined) {
      rewrite.regex_rewrite = {
        pattern: { regex: rw.uriRegexRewrite.match },
        substitution: rw.uriRegexRewrite.rewrite ?? '',
      }
    } else if (typeof rw.uri === 'string' && rw.uri !== '') {
      rewrite.prefix_rewrite = rw.uri
    }
    if (typeof rw.authority === 'string' && rw.authority !== '') authority = rw.authority
  }

  const dests = (http.route ?? []).filter((d) => d.destination?.host !== undefined && d.destination.host !== '')
  if (dests.length === 0) return null
  const action: Json = {}
  const hashes: Json[] = []
  const addHash = (d: Destination, p: number) => {
    const fqdn = ctx.resolve(d.host!, vs.metadata.namespace)
    const h = ctx.hashPolicy(fqdn, d.subset ?? '', p)
    if (h !== null && !hashes.some((x) => JSON.stringify(x) === JSON.stringify(h))) hashes.push(h)
  }
  if (dests.length === 1) {
    const d = dests[0]!
    const { cluster, port: p } = destinationCluster(d.destination!, vs.metadata.namespace, port, ctx)
    action.cluster = cluster
    const dOps = headerOperations(d.headers)
    appendHeaderOps(destOps, dOps)
    if (authority === '' && dOps.authority !== '') authority = dOps.authority
    addHash(d.destination!, p)
  } else {
    let weighted = dests.filter((d) => (d.weight ?? 0) > 0)
    // Every weight 0 (or unset) would leave nothing to route to; split evenly instead.
    const even = weighted.length === 0
    if (even) weighted = dests
    action.weighted_clusters = {
      clusters: weighted.map((d: HTTPRouteDestination) => {
        const { cluster, port: p } = destinationCluster(d.destination!, vs.metadata.namespace, port, ctx)
        addHash(d.destination!, p)
        const wc: Json = { name: cluster, weight: even ? 1 : d.weight! }
        appendHeaderOps(wc, headerOperations(d.headers))
        return wc
      }),
    }
  }
  Object.assign(action, rewrite)
  if (authority !== '') action.host_rewrite_literal = authority
  const timeout = protoDuration(http.timeout)
  if (ctx.generator === 'grpc') {
    if (timeout !== null) action.max_stream_duration = { max_stream_duration: timeout }
  } else {
    action.timeout = timeout ?? '0s'
  }
  if (hashes.length > 0) action.hash_policy = hashes
  if (ctx.generator === 'envoy') {
    const retry = retryPolicy(http.retries, hashes.length > 0)
    if (retry !== null) action.retry_policy = retry
    const mirrors = mirrorPolicies(http, vs.metadata.namespace, port, ctx)
    if (mirrors.length > 0) action.request_mirror_policies = mirrors
  }
  return action
}

/**
 * `mirror` (with `mirrorPercentage`, or the deprecated integer `mirrorPercent`; unset is 100%) and `mirrors` (each
 * with its own `percentage`, unset 100%) → `request_mirror_policies`, as Istio's TranslateRequestMirrorPolicy: an
 * explicit 0% emits no policy; `trace_sampled` false.
 */
export function mirrorPolicies(http: HTTPRoute, vsNamespace: string, port: number, ctx: RouteContext): Json[] {
  const out: Json[] = []
  const policy = (d: Destination, fraction: Json) => ({
    cluster: destinationCluster(d, vsNamespace, port, ctx).cluster,
    runtime_fraction: { default_value: fraction },
    trace_sampled: false,
  })
  const valid = (d: Destination | undefined): d is Destination => d?.host !== undefined && d.host !== ''
  if (valid(http.mirror)) {
    const legacy = http.mirrorPercent ?? http.mirror_percent
    let fraction: Json | null = { numerator: 100, denominator: 'HUNDRED' }
    if (http.mirrorPercentage !== undefined) {
      const v = http.mirrorPercentage.value ?? 0
      fraction = v > 0 ? fractionOf(v) : null
    } else if (legacy !== undefined) fraction = legacy > 0 ? { numerator: legacy, denominator: 'HUNDRED' } : null
    if (fraction !== null) out.push(policy(http.mirror, fraction))
  }
  for (const m of http.mirrors ?? []) {
    if (!valid(m.destination)) continue
    let fraction: Json | null = { numerator: 100, denominator: 'HUNDRED' }
    if (m.percentage !== undefined) {
      const v = m.percentage.value ?? 0
      fraction = v > 0 ? fractionOf(v) : null
    }
    if (fraction !== null) out.push(policy(m.destination, fraction))
  }
  return out
}

/** The cluster for a destination, and the port it resolved to. */
export function destinationCluster(
  d: Destination,
  vsNamespace: string,
  listenPort: number,
  ctx: RouteContext,
): { cluster: string; port: number } {
  const fqdn = ctx.resolve(d.host!, vsNamespace)
  const svc = ctx.service(fqdn)
  let port = listenPort
  if (typeof d.port?.number === 'number' && d.port.number > 0) port = d.port.number
  else if (svc !== undefined && svc.ports.length === 1) port = svc.ports[0]!.number
  return { cluster: clusterName('outbound', port, d.subset ?? '', fqdn), port }
}

// === matches ===

/** A JWT-claim pseudo-header (`@request.auth.claims...`): Istio matches those on metadata, which Loom has not. */
function isClaimHeader(name: string): boolean {
  return name.startsWith('@request.auth.claims')
}

/** A StringMatch that only asks for presence (empty, or Istio's `regex: "*"`). */
function isPresenceMatch(m: StringMatch | undefined): boolean {
  if (m === undefined || m === null) return true
  if (typeof m.regex === 'string') return m.regex === '*'
  if (typeof m.exact === 'string') return false
  return typeof m.prefix !== 'string' || m.prefix === ''
}

function stringMatcher(m: StringMatch): Json {
  if (typeof m.exact === 'string') return { exact: m.exact }
  if (typeof m.prefix === 'string') return { prefix: m.prefix }
  return { safe_regex: { regex: m.regex ?? '' } }
}

/** An Istio StringMatch on a header → an Envoy HeaderMatcher (no match kind: presence). */
export function headerMatcher(name: string, m: StringMatch | undefined): Json {
  if (isPresenceMatch(m)) return { name, present_match: true }
  return { name, string_match: stringMatcher(m!) }
}

/** The Envoy RouteMatch for an Istio match (null match = everything); null if Loom cannot express it. */
export function translateMatch(match: HTTPMatchRequest | null): Json | null {
  const uri = match?.uri
  const out: Json =
    typeof uri?.exact === 'string'
      ? { path: uri.exact }
      : typeof uri?.prefix === 'string'
        ? { prefix: uri.prefix }
        : typeof uri?.regex === 'string'
          ? { safe_regex: { regex: uri.regex } }
          : { prefix: '/' }
  if (match === null) return out
  if (match.ignoreUriCase === true) out.case_sensitive = false

  const headers: Json[] = []
  for (const [rawName, m] of Object.entries(match.headers ?? {})) {
    if (isClaimHeader(rawName)) return null
    headers.push(headerMatcher(rawName.toLowerCase(), m))
  }
  for (const [rawName, m] of Object.entries(match.withoutHeaders ?? {})) {
    if (isClaimHeader(rawName)) return null
    const h = headerMatcher(rawName.toLowerCase(), m)
    h.invert_match = true
    if (!isPresenceMatch(m)) h.treat_missing_header_as_empty = true
    headers.push(h)
  }
  headers.sort((a, b) => cmp(a.name as string, b.name as string))
  if (match.method !== undefined) headers.push(headerMatcher(':method', match.method))
  if (match.authority !== undefined) headers.push(headerMatcher(':authority', match.authority))
  if (match.scheme !== undefined) headers.push(headerMatcher(':scheme', match.scheme))
  if (headers.length > 0) out.headers = headers

  const query: Json[] = []
  for (const [name, m] of Object.entries(match.queryParams ?? {}).sort(([a], [b]) => cmp(a, b))) {
    query.push(isPresenceMatch(m) ? { name, present_match: true } : { name, string_match: stringMatcher(m) })
  }
  if (query.length > 0) out.query_parameters = query
  return out
}

// === redirects ===

const REDIRECT_CODES: Record<number, string> = {
  301: 'MOVED_PERMANENTLY',
  302: 'FOUND',
  303: 'SEE_OTHER',
  307: 'TEMPORARY_REDIRECT',
  308: 'PERMANENT_REDIRECT',
}

function translateRedirect(r: HTTPRedirect, listenPort: number, isTls: boolean): Json | null {
  const code = REDIRECT_CODES[r.redirectCode === undefined || r.redirectCode === 0 ? 301 : r.redirectCode]
  if (code === undefined) return null
  const out: Json = {}
  if (typeof r.authority === 'string' && r.authority !== '') out.host_redirect = r.authority
  if (typeof r.uri === 'string' && r.uri !== '') out.path_redirect = r.uri
  if (typeof r.scheme === 'string' && r.scheme !== '') out.scheme_redirect = r.scheme
  let port = 0
  if (typeof r.port === 'number') port = r.port
  else if (r.derivePort === 'FROM_REQUEST_PORT') port = listenPort
  if (port !== 0) {
    const scheme = r.scheme || (isTls ? 'https' : 'http')
    // No explicit :80 for http or :443 for https.
    if (!((port === 80 && scheme === 'http') || (port === 443 && scheme === 'https'))) out.port_redirect = port
  }
  out.response_code = code
  return out
}

// === header operations ===

interface HeaderOps {
  request_headers_to_add: Json[]
  request_headers_to_remove: string[]
  response_headers_to_add: Json[]
  response_headers_to_remove: string[]
  /** a Host/:authority set or added on requests (Istio turns it into host_rewrite_literal) */
  authority: string
}

function isInternalHeader(name: string): boolean {
  return name.startsWith(':') || name.toLowerCase() === 'host'
}

function isAuthorityHeader(name: string): boolean {
  const n = name.toLowerCase()
  return n === ':authority' || n === 'host'
}

function toAdd(headers: Record<string, string> | undefined, append: boolean): { add: Json[]; authority: string } {
  let authority = ''
  const add: Json[] = []
  for (const [key, value] of Object.entries(headers ?? {}).sort(([a], [b]) => cmp(a, b))) {
    if (isAuthorityHeader(key)) authority = value
    if (isInternalHeader(key)) continue
    add.push({
      header: { key, value },
      append_action: append ? 'APPEND_IF_EXISTS_OR_ADD' : 'OVERWRITE_IF_EXISTS_OR_ADD',
    })
  }
  return { add, authority }
}

function headerOperations(h: Headers | undefined): HeaderOps {
  const reqSet = toAdd(h?.request?.set, false)
  const reqAdd = toAdd(h?.request?.add, true)
  return {
    request_headers_to_add: [...reqSet.add, ...reqAdd.add],
    request_headers_to_remove: (h?.request?.remove ?? []).filter((k) => !isInternalHeader(k)),
    response_headers_to_add: [...toAdd(h?.response?.set, false).add, ...toAdd(h?.response?.add, true).add],
    response_headers_to_remove: (h?.response?.remove ?? []).filter((k) => !isInternalHeader(k)),
    authority: reqSet.authority !== '' ? reqSet.authority : reqAdd.authority,
  }
}

const HEADER_FIELDS = [
  'request_headers_to_add',
  'request_headers_to_remove',
  'response_headers_to_add',
  'response_headers_to_remove',
] as const

function appendHeaderOps(target: Json, ops: HeaderOps): void {
  for (const f of HEADER_FIELDS) {
    const list = ops[f] as unknown[]
    if (list.length === 0) continue
    target[f] = [...((target[f] as unknown[] | undefined) ?? []), ...list]
  }
}
