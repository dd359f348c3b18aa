/**
 * The compiled router: an Envoy v3 RouteConfiguration turned, once per config version, into structures that
 * pick a route for a request without re-reading the config. Semantics follow Envoy's:
 *
 * - Virtual host by authority (lower-cased, port included): exact domains, then suffix wildcards (`*.foo.com`,
 *   longest first), then prefix wildcards (`foo.*`, longest first), then `*`. A wildcard never matches the
 *   empty string.
 * - Routes in order, first match wins. The path (without query) is matched by prefix, exact path,
 *   path-separated prefix or a full-match RE2 regex; then `grpc`, `headers` and `query_parameters`.
 * - Header mutations are applied weighted cluster first, then route, virtual host, route configuration; each
 *   level removes, then adds per its append_action (so a less specific level can overwrite a more specific one).
 */
import { readFileSync } from 'node:fs'
import type {
  DataSource,
  DirectResponseAction,
  RedirectAction,
  Route,
  RouteAction,
  RouteConfiguration,
  VirtualHost,
} from '../../config/envoy.js'
import { parseDurationMs } from '../../core/duration.js'
import { type ConfigIssue, ErrorCodes, LoomError } from '../../core/errors.js'
import { compilePerFilterConfig } from '../http/filters/index.js'
import type { Headers } from '../http/headers.js'
import { type CompiledRetryPolicy, compileRetryPolicy } from '../http/retry.js'
import { type CompiledMirrorPolicy, compileMirrorPolicies } from '../http/shadow.js'
import { type CookieToSet, compileHashPolicies, HashPolicies } from './hash.js'
import {
  type CompiledHeaderMatcher,
  type CompiledQueryMatcher,
  compileHeaderMatcher,
  compileQueryMatcher,
  compileRegexTest,
  type StringTest,
} from './matchers.js'
import { compileMutations, type HeaderMutations } from './mutations.js'
import { compileRewrite, type RegexRewriter } from './regex.js'
import { asciiLower, pathEnd, startsWithIgnoreCase } from './strings.js'
import { MatchContext, type RequestView } from './view.js'

export type { RequestView } from './view.js'

/** Envoy's default route timeout. */
export const DEFAULT_ROUTE_TIMEOUT_MS = 15_000
/** Envoy's default max_direct_response_body_size_bytes. */
export const MAX_DIRECT_RESPONSE_BODY_BYTES = 4096

/** A route configuration that passed the schema but cannot be compiled; issue paths are relative to it. */
export class RouteConfigError extends LoomError {
  override name = 'RouteConfigError'
  readonly routeConfigName: string
  readonly issues: ConfigIssue[]
  constructor(routeConfigName: string, issues: ConfigIssue[]) {
    const label = routeConfigName === '' ? 'route configuration' : `route configuration "${routeConfigName}"`
    super(
      ErrorCodes.CONFIG_INVALID,
      `${label} is invalid:\n${issues.map((i) => `  ${i.path || '(root)'}: ${i.message}`).join('\n')}`,
    )
    this.routeConfigName = routeConfigName
    this.issues = issues
  }
}

// === path matching and rewriting ===

const PREFIX = 0
const EXACT = 1
const SEPARATED_PREFIX = 2
const REGEX = 3

class PathMatch {
  readonly kind: number
  /** the configured prefix/path (ASCII-lower-cased when case-insensitive) */
  readonly value: string
  readonly caseSensitive: boolean
  readonly regex: StringTest | null

  constructor(kind: number, value: string, caseSensitive: boolean, regex: StringTest | null) {
    this.kind = kind
    this.caseSensitive = caseSensitive
    this.value = caseSensitive ? value : asciiLower(value)
    this.regex = regex
  }

  matches(ctx: MatchContext): boolean {
    const path = ctx.req.path
    const v = this.value
    switch (this.kind) {
      case PREFIX: {
        if (v.length === 0) return true
        // A prefix must not reach into the query.
        if (v.length > path.length || !this.startsWith(path)) return false
        return v.length <= ctx.pathEnd()
      }
      case EXACT:
        return path.length >= v.length && this.startsWith(path) && ctx.pathEnd() === v.length
      case SEPARATED_PREFIX: {
        if (path.length < v.length || !this.startsWith(path)) return false
        const end = ctx.pathEnd()
        return end === v.length || (end > v.length && path.charCodeAt(v.length) === 47) /* / */
      }
      default:
        return this.regex!(ctx.pathOnly())
    }
  }

  private startsWith(path: string): boolean {
    return this.caseSensitive ? path.startsWith(this.value) : startsWithIgnoreCase(path, this.value)
  }

  /** Length of the part of `path` the match covered (what prefix_rewrite replaces). */
  matchedLength(path: string): number {
    return this.kind === REGEX ? pathEnd(path) : this.value.length
  }
}

/** prefix_rewrite / regex_rewrite, for a route action or a redirect. */
class PathRewrite {
  static readonly none = new PathRewrite(null, null, null)
  private readonly match: PathMatch | null
  private readonly prefix: string | null
  private readonly regex: RegexRewriter | null

  constructor(match: PathMatch | null, prefix: string | null, regex: RegexRewriter | null) {
    this.match = match
    this.prefix = prefix
    this.regex = regex
  }

  apply(path: string): string {
    if (this.prefix !== null) return this.prefix + path.slice(this.match!.matchedLength(path))
    if (this.regex !== null) {
      const end = pathEnd(path)
      return end === path.length
        ? this.regex.replaceAll(path)
        : this.regex.replaceAll(path.slice(0, end)) + path.slice(end)
    }
    return path
  }
}

// === the compiled route ===

const redirectCodes = {
  MOVED_PERMANENTLY: 301,
  FOUND: 302,
  SEE_OTHER: 303,
  TEMPORARY_REDIRECT: 307,
  PERMANENT_REDIRECT: 308,
} as const

interface RedirectPlan {
  status: number
  scheme: string | null
  host: string | null
  /** '' or ':<port>' */
  port: string
  pathRedirect: string | null
  pathRedirectHasQuery: boolean
  rewrite: PathRewrite
  stripQuery: boolean
}

interface RouteInit {
  name: string
  vhostName: string
  kind: 'cluster' | 'redirect' | 'direct'
  clusters: string[]
  cumulative: number[]
  totalWeight: number
  rewrite: PathRewrite
  hostRewrite: string | null
  autoHostRewrite: boolean
  timeoutMs: number
  idleTimeoutMs: number
  retry: CompiledRetryPolicy | null
  mirrors: CompiledMirrorPolicy[] | null
  includeAttemptCount: boolean
  hash: HashPolicies
  redirect: RedirectPlan | null
  directStatus: number
  directBody: Buffer | null
  requestLevels: HeaderMutations[]
  responseLevels: HeaderMutations[]
  clusterRequest: Map<string, HeaderMutations>
  clusterResponse: Map<string, HeaderMutations>
  filterConfigs: ReadonlyMap<string, unknown> | null
  operation: string | null
}

export class CompiledRoute {
  /** the route's name, or `<vhost>/<index>` when unnamed */
  readonly name: string
  readonly vhostName: string
  readonly kind: 'cluster' | 'redirect' | 'direct'
  /** host_rewrite_literal */
  readonly hostRewrite: string | null
  /** auto_host_rewrite: the proxy sets Host to the chosen endpoint's hostname */
  readonly autoHostRewrite: boolean
  /** route timeout; 0 means none */
  readonly timeoutMs: number
  /** the route's idle_timeout: -1 when unset (the connection manager's stream_idle_timeout applies), 0 disables */
  readonly idleTimeoutMs: number
  /** retry_policy, the route's or else its virtual host's; null: one attempt */
  readonly retry: CompiledRetryPolicy | null
  /** request_mirror_policies; null: no mirroring */
  readonly mirrors: CompiledMirrorPolicy[] | null
  /** the virtual host's include_request_attempt_count: x-envoy-attempt-count on upstream requests */
  readonly includeAttemptCount: boolean
  readonly hasHashPolicy: boolean
  /** kind 'direct': the status to answer with */
  readonly directStatus: number
  /** kind 'direct': the body, read at compile time */
  readonly directBody: Buffer | null
  /**
   * Compiled `typed_per_filter_config` by filter name, the route's over its virtual host's; null when neither has
   * any (the common case: filters then use their own config).
   */
  readonly filterConfigs: ReadonlyMap<string, unknown> | null
  /** decorator.operation: the span name of this route's requests when tracing; null: the tracer's default */
  readonly operation: string | null

  private readonly clusters: string[]
  private readonly cumulative: number[]
  private readonly totalWeight: number
  private readonly rewrite: PathRewrite
  private readonly hashPolicies: HashPolicies
  private readonly redirectPlan: RedirectPlan | null
  private readonly requestLevels: HeaderMutations[]
  private readonly responseLevels: HeaderMutations[]
  private readonly clusterRequest: Map<string, HeaderMutations>
  private readonly clusterResponse: Map<string, HeaderMutations>

  /** @internal built by compileRouteConfig */
  constructor(init: RouteInit) {
    this.name = init.name
    this.vhostName = init.vhostName
    this.kind = init.kind
    this.clusters = init.clusters
    this.cumulative = init.cumulative
    this.totalWeight = init.totalWeight
    this.rewrite = init.rewrite
    this.hostRewrite = init.hostRewrite
    this.autoHostRewrite = init.autoHostRewrite
    this.timeoutMs = init.timeoutMs
    this.idleTimeoutMs = init.idleTimeoutMs
    this.retry = init.retry
    this.mirrors = init.mirrors
    this.includeAttemptCount = init.includeAttemptCount
    this.hashPolicies = init.hash
    this.hasHashPolicy = init.hash.size > 0
    this.redirectPlan = init.redirect
    this.directStatus = init.directStatus
    this.directBody = init.directBody
    this.requestLevels = init.requestLevels
    this.responseLevels = init.responseLevels
    this.clusterRequest = init.clusterRequest
    this.clusterResponse = init.clusterResponse
    this.filterConfigs = init.filterConfigs
    this.operation = init.operation
  }

  /** The fixed cluster, or a weighted pick (weights relative to their sum). */
  pickCluster(): string {
    const clusters = this.clusters
    if (clusters.length === 1) return clusters[0]!
    if (clusters.length === 0) throw new Error(`route ${this.name} does not send to a cluster (kind ${this.kind})`)
    const r = Math.floor(Math.random() * this.totalWeight)
    const cum = this.cumulative
    let i = 0
    while (i < cum.length - 1 && r >= cum[i]!) i++
    return clusters[i]!
  }

  /** Every cluster this route can send to. */
  clusterNames(): readonly string[] {
    return this.clusters
  }

  /** prefix_rewrite / regex_rewrite on the path part (the query is kept); `path` itself when there is none. */
  rewritePath(path: string): string {
    return this.rewrite.apply(path)
  }

  /** The hash for RING_HASH / MAGLEV, or undefined when no hash policy produced a value. */
  hash(req: RequestView, sourceIp: string): number | undefined {
    return this.hashPolicies.hash(req, sourceIp)
  }

  /**
   * Cookies a cookie hash policy with a ttl wants set on the response because the request lacked them
   * (Envoy's generated-cookie affinity); empty when none. The value is derived from `sourceIp`, so it agrees
   * with what hash() used.
   */
  cookiesToSet(req: RequestView, sourceIp: string): CookieToSet[] {
    const out: CookieToSet[] = []
    this.hashPolicies.hash(req, sourceIp, out)
    return out
  }

  /** kind 'redirect': the status and Location for this request. `scheme` is the scheme the request came in on. */
  redirect(req: RequestView, scheme: 'http' | 'https'): { status: number; location: string } {
    const rd = this.redirectPlan
    if (rd === null) throw new Error(`route ${this.name} is not a redirect (kind ${this.kind})`)
    const finalScheme = rd.scheme ?? scheme
    const host = rd.host ?? requestHost(req.authority, finalScheme, scheme, rd.port !== '')
    let path: string
    if (rd.pathRedirect !== null) {
      if (rd.pathRedirectHasQuery) path = rd.pathRedirect
      else {
        const q = req.path.indexOf('?')
        path = q >= 0 ? rd.pathRedirect + req.path.slice(q) : rd.pathRedirect
      }
    } else path = rd.rewrite.apply(req.path)
    if (path.charCodeAt(0) !== 47 /* / */) path = `/${path}`
    if (rd.stripQuery && !rd.pathRedirectHasQuery) {
      const q = path.indexOf('?')
      if (q >= 0) path = path.slice(0, q)
    }
    return { status: rd.status, location: `${finalScheme}://${host}${rd.port}${path}` }
  }

  /** request_headers_to_add/remove: the weighted cluster entry for `cluster`, route, virtual host, route config. */
  applyRequestHeaders(headers: Headers, cluster: string): void {
    if (this.clusterRequest.size > 0) this.clusterRequest.get(cluster)?.apply(headers)
    for (const level of this.requestLevels) level.apply(headers)
  }

  /** response_headers_to_add/remove, in the same order; `cluster` selects the weighted cluster entry's. */
  applyResponseHeaders(headers: Headers, cluster?: string): void {
    if (cluster !== undefined && this.clusterResponse.size > 0) this.clusterResponse.get(cluster)?.apply(headers)
    for (const level of this.responseLevels) level.apply(headers)
  }
}

/** Splits host[:port] (IPv6 in brackets) into the index where the port's ':' starts, or -1. */
function portStart(authority: string): number {
  if (authority.charCodeAt(0) === 91 /* [ */) {
    const i = authority.lastIndexOf(']:')
    return i < 0 ? -1 : i + 1
  }
  return authority.lastIndexOf(':')
}

/**
 * The request's host for a redirect, as Envoy computes it: its port is dropped when the redirect sets a port,
 * or when the scheme changes and the port was the old scheme's default (http:80, https:443).
 */
function requestHost(authority: string, newScheme: string, oldScheme: string, newPort: boolean): string {
  const at = portStart(authority)
  if (at < 0) return authority
  const port = authority.slice(at)
  let drop = newPort
  if (newScheme !== oldScheme) {
    drop ||= (oldScheme === 'https' && port === ':443') || (oldScheme === 'http' && port === ':80')
  }
  return drop ? authority.slice(0, at) : authority
}

// === virtual hosts and the compiled configuration ===

class RouteEntry {
  readonly path: PathMatch
  readonly grpc: boolean
  readonly headers: CompiledHeaderMatcher[]
  readonly query: CompiledQueryMatcher[]
  readonly route: CompiledRoute

  constructor(
    path: PathMatch,
    grpc: boolean,
    headers: CompiledHeaderMatcher[],
    query: CompiledQueryMatcher[],
    route: CompiledRoute,
  ) {
    this.path = path
    this.grpc = grpc
    this.headers = headers
    this.query = query
    this.route = route
  }

  matches(ctx: MatchContext): boolean {
    if (!this.path.matches(ctx)) return false
    if (this.grpc && !isGrpc(ctx.req.headers.get('content-type'))) return false
    for (const h of this.headers) if (!h.matches(ctx)) return false
    for (const q of this.query) if (!q.matches(ctx)) return false
    return true
  }

  /** Every condition's verdict, by the same tests as `matches` (for explanations; not on the request path). */
  conditions(ctx: MatchContext): RouteConditions {
    const path = this.path.matches(ctx)
    const grpc = this.grpc ? isGrpc(ctx.req.headers.get('content-type')) : null
    const headers = this.headers.map((h) => h.matches(ctx))
    const query = this.query.map((q) => q.matches(ctx))
    return { path, grpc, headers, query, matched: this.matches(ctx) }
  }
}

/** One route's conditions as the router evaluated them: the path, `grpc` (null when not asked), headers, query. */
export interface RouteConditions {
  path: boolean
  grpc: boolean | null
  /** in config order (`match.headers`) */
  headers: boolean[]
  /** in config order (`match.query_parameters`) */
  query: boolean[]
  /** what `match` decides: every condition holds */
  matched: boolean
}

/**
 * How the router chose a route for one request (CompiledRouteConfig.explain): the virtual host (its index in
 * `virtual_hosts`), then every route it evaluated, in order, up to and including the one that matched.
 */
export interface RouteTrace {
  /** index of the virtual host in the configuration's `virtual_hosts`, or -1 when no domain matched */
  vhostIndex: number
  vhostName: string | null
  evaluated: { index: number; name: string; conditions: RouteConditions }[]
  /** what `match` returns for the request */
  route: CompiledRoute | null
}

/** Envoy's test: content-type is application/grpc or application/grpc+<subtype> (not grpc-web). */
function isGrpc(ct: string | undefined): boolean {
  if (ct === undefined || !ct.startsWith('application/grpc')) return false
  return ct.length === 16 || ct.charCodeAt(16) === 43 /* + */
}

class VHost {
  readonly name: string
  readonly entries: RouteEntry[]
  /** the index in `virtual_hosts` */
  readonly index: number
  constructor(name: string, entries: RouteEntry[], index: number) {
    this.name = name
    this.entries = entries
    this.index = index
  }
}

/** Wildcard domains of one length; most lengths hold one domain, compared without allocating. */
interface WildcardGroup {
  len: number
  single: string | null
  singleHost: VHost | null
  map: Map<string, VHost>
}

const EMPTY_REQUEST: RequestView = { authority: '', path: '', method: '', headers: undefined as unknown as Headers }

export class CompiledRouteConfig {
  readonly name: string
  /** validate_clusters as configured (null when unset; Envoy's default depends on where the config came from) */
  readonly validateClusters: boolean | null

  private readonly exact: Map<string, VHost>
  private readonly suffixes: WildcardGroup[]
  private readonly prefixes: WildcardGroup[]
  private readonly fallback: VHost | null
  private readonly clusters: Set<string>
  private readonly ctx = new MatchContext()

  /** @internal built by compileRouteConfig */
  constructor(
    name: string,
    validateClusters: boolean | null,
    exact: Map<string, VHost>,
    suffixes: WildcardGroup[],
    prefixes: WildcardGroup[],
    fallback: VHost | null,
    clusters: Set<string>,
  ) {
    this.name = name
    this.validateClusters = validateClusters
    this.exact = exact
    this.suffixes = suffixes
    this.prefixes = prefixes
    this.fallback = fallback
    this.clusters = clusters
  }

  /** The route for a request; null means none (the proxy answers 404 with response flag NR). */
  match(req: RequestView): CompiledRoute | null {
    const vh = this.findVirtualHost(req.authority)
    if (vh === null) return null
    const ctx = this.ctx
    ctx.reset(req)
    let found: CompiledRoute | null = null
    for (const e of vh.entries) {
      if (e.matches(ctx)) {
        found = e.route
        break
      }
    }
    ctx.reset(EMPTY_REQUEST)
    return found
  }

  /**
   * The router's decision for `req` step by step, by the same compiled virtual host lookup and matchers as
   * `match` (the result's `route` is what `match` returns): for `loom explain`, never on the request path.
   */
  explain(req: RequestView): RouteTrace {
    const vh = this.findVirtualHost(req.authority)
    const trace: RouteTrace = { vhostIndex: vh?.index ?? -1, vhostName: vh?.name ?? null, evaluated: [], route: null }
    if (vh === null) return trace
    const ctx = new MatchContext()
    ctx.reset(req)
    vh.entries.forEach((e, index) => {
      if (trace.route !== null) return
      const conditions = e.conditions(ctx)
      trace.evaluated.push({ index, name: e.route.name, conditions })
      if (conditions.matched) trace.route = e.route
    })
    return trace
  }

  /** Name of the virtual host an authority selects, or null. */
  virtualHostFor(authority: string): string | null {
    return this.findVirtualHost(authority)?.name ?? null
  }

  /** Every cluster any route can send to. */
  clusterNames(): Set<string> {
    return new Set(this.clusters)
  }

  private findVirtualHost(authority: string): VHost | null {
    const exact = this.exact
    const suffixes = this.suffixes
    const prefixes = this.prefixes
    if (exact.size === 0 && suffixes.length === 0 && prefixes.length === 0) return this.fallback
    const host = asciiLower(authority)
    const e = exact.get(host)
    if (e !== undefined) return e
    for (const g of suffixes) {
      if (g.len >= host.length) continue
      if (g.single !== null) {
        if (host.endsWith(g.single)) return g.singleHost
      } else {
        const hit = g.map.get(host.slice(host.length - g.len))
        if (hit !== undefined) return hit
      }
    }
    for (const g of prefixes) {
      if (g.len >= host.length) continue
      if (g.single !== null) {
        if (host.startsWith(g.single)) return g.singleHost
      } else {
        const hit = g.map.get(host.slice(0, g.len))
        if (hit !== undefined) return hit
      }
    }
    return this.fallback
  }
}

// === compilation ===

const CONTROL = /[\x00-\x1f\x7f]/
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*$/
const SEPARATED_PREFIX_SHAPE = /^[^?#]+[^?#/]$/
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/

function checkNoControl(value: string, path: string, issues: ConfigIssue[]): void {
  if (CONTROL.test(value)) issues.push({ path, message: 'must not contain control characters (CR, LF, NUL...)' })
}

function groups(list: Map<string, VHost>[]): WildcardGroup[] {
  const out: WildcardGroup[] = []
  list.forEach((map, len) => {
    if (map === undefined) return
    const [first] = map
    if (map.size === 1 && first !== undefined) out.push({ len, single: first[0], singleHost: first[1], map })
    else out.push({ len, single: null, singleHost: null, map })
  })
  // longest wildcard first
  return out.sort((a, b) => b.len - a.len)
}

function readBody(body: DataSource, path: string, issues: ConfigIssue[]): Buffer | null {
  let buf: Buffer
  if (body.inline_string !== undefined) buf = Buffer.from(body.inline_string, 'utf8')
  else if (body.inline_bytes !== undefined) {
    const b64 = body.inline_bytes.replace(/\s+/g, '')
    if (!BASE64.test(b64) || b64.replace(/=+$/, '').length % 4 === 1) {
      issues.push({ path: `${path}.inline_bytes`, message: 'must be base64' })
      return null
    }
    buf = Buffer.from(b64, 'base64')
  } else if (body.filename !== undefined) {
    try {
      buf = readFileSync(body.filename)
    } catch (err) {
      issues.push({ path: `${path}.filename`, message: `cannot read: ${(err as Error).message}` })
      return null
    }
  } else return null
  if (buf.length > MAX_DIRECT_RESPONSE_BODY_BYTES) {
    issues.push({
      path,
      message: `response body is ${buf.length} bytes; the maximum is ${MAX_DIRECT_RESPONSE_BODY_BYTES} (Envoy's default)`,
    })
    return null
  }
  return buf
}

function compilePathMatch(route: Route, p: string, issues: ConfigIssue[]): PathMatch {
  const m = route.match
  const cs = m.case_sensitive !== false
  if (m.prefix !== undefined) return new PathMatch(PREFIX, m.prefix, cs, null)
  if (m.path !== undefined) return new PathMatch(EXACT, m.path, cs, null)
  if (m.path_separated_prefix !== undefined) {
    if (!SEPARATED_PREFIX_SHAPE.test(m.path_separated_prefix)) {
      issues.push({
        path: `${p}.match.path_separated_prefix`,
        message: "must not contain '?' or '#' nor end with '/' (and must not be empty)",
      })
    }
    return new PathMatch(SEPARATED_PREFIX, m.path_separated_prefix, cs, null)
  }
  if (m.safe_regex !== undefined) {
    return new PathMatch(REGEX, '', true, compileRegexTest(m.safe_regex, `${p}.match.safe_regex`, issues))
  }
  issues.push({ path: `${p}.match`, message: 'one of prefix, path, safe_regex, path_separated_prefix is required' })
  return new PathMatch(PREFIX, '', true, null)
}

function compileRewriteOf(
  holder: { prefix_rewrite?: string | undefined; regex_rewrite?: RouteAction['regex_rewrite'] },
  match: PathMatch,
  p: string,
  issues: ConfigIssue[],
): PathRewrite {
  if (holder.prefix_rewrite !== undefined) {
    checkNoControl(holder.prefix_rewrite, `${p}.prefix_rewrite`, issues)
    return new PathRewrite(match, holder.prefix_rewrite, null)
  }
  if (holder.regex_rewrite !== undefined) {
    const rr = holder.regex_rewrite
    checkNoControl(rr.substitution, `${p}.regex_rewrite.substitution`, issues)
    const r = compileRewrite(rr.pattern.regex, rr.substitution)
    if (!r.ok) {
      const at = r.field === 'pattern' ? `${p}.regex_rewrite.pattern.regex` : `${p}.regex_rewrite.substitution`
      issues.push({ path: at, message: r.error })
      return PathRewrite.none
    }
    return new PathRewrite(match, null, r.value)
  }
  return PathRewrite.none
}

function compileRedirect(rd: RedirectAction, match: PathMatch, p: string, issues: ConfigIssue[]): RedirectPlan {
  let scheme: string | null = null
  if (rd.scheme_redirect !== undefined && rd.https_redirect !== undefined) {
    issues.push({ path: p, message: 'only one of https_redirect, scheme_redirect may be set' })
  }
  if (rd.scheme_redirect !== undefined) {
    if (!SCHEME.test(rd.scheme_redirect)) issues.push({ path: `${p}.scheme_redirect`, message: 'not a URI scheme' })
    scheme = rd.scheme_redirect
  } else if (rd.https_redirect === true) scheme = 'https'

  const port = rd.port_redirect !== undefined && rd.port_redirect !== 0 ? `:${rd.port_redirect}` : ''
  let host: string | null = null
  if (rd.host_redirect !== undefined && rd.host_redirect !== '') {
    checkNoControl(rd.host_redirect, `${p}.host_redirect`, issues)
    if (/[/?#@\s]/.test(rd.host_redirect)) {
      issues.push({ path: `${p}.host_redirect`, message: 'must be a host[:port], without path or whitespace' })
    }
    host = rd.host_redirect
    // port_redirect replaces a port given in host_redirect
    if (port !== '') {
      const at = portStart(host)
      if (at >= 0) host = host.slice(0, at)
    }
  }

  if (rd.path_redirect !== undefined && rd.prefix_rewrite !== undefined) {
    issues.push({ path: p, message: 'only one of path_redirect, prefix_rewrite may be set' })
  }
  let pathRedirect: string | null = null
  if (rd.path_redirect !== undefined && rd.path_redirect !== '') {
    checkNoControl(rd.path_redirect, `${p}.path_redirect`, issues)
    pathRedirect = rd.path_redirect
  }
  const rewrite = pathRedirect === null ? compileRewriteOf(rd, match, p, issues) : PathRewrite.none
  return {
    status: redirectCodes[rd.response_code ?? 'MOVED_PERMANENTLY'],
    scheme,
    host,
    port,
    pathRedirect,
    pathRedirectHasQuery: pathRedirect?.includes('?') === true,
    rewrite,
    stripQuery: rd.strip_query === true,
  }
}

interface Shared {
  /** the virtual host's compiled typed_per_filter_config */
  vhostFilters: ReadonlyMap<string, unknown> | null
  /** the virtual host's compiled retry_policy */
  vhostRetry: CompiledRetryPolicy | null
  /** the virtual host's compiled request_mirror_policies */
  vhostMirrors: CompiledMirrorPolicy[] | null
  issues: ConfigIssue[]
  clusters: Set<string>
  vhostRequest: HeaderMutations
  vhostResponse: HeaderMutations
  globalRequest: HeaderMutations
  globalResponse: HeaderMutations
}

/** Compiles `typed_per_filter_config` entries over a less specific level's (the more specific wins per filter). */
function perFilter(
  base: ReadonlyMap<string, unknown> | null,
  cfg: Record<string, { '@type': string }> | undefined,
  path: string,
  issues: ConfigIssue[],
): ReadonlyMap<string, unknown> | null {
  if (cfg === undefined || Object.keys(cfg).length === 0) return base
  const out = new Map(base ?? [])
  for (const [name, c] of Object.entries(cfg))
    out.set(name, compilePerFilterConfig(c, `${path}["${name}"]`, issues, base?.get(name)))
  return out
}

function levels(...list: HeaderMutations[]): HeaderMutations[] {
  return list.filter((m) => !m.isEmpty)
}

function compileRoute(route: Route, vh: VirtualHost, index: number, p: string, s: Shared): RouteEntry {
  const issues = s.issues
  const match = compilePathMatch(route, p, issues)
  const headers = (route.match.headers ?? []).map((h, i) => compileHeaderMatcher(h, `${p}.match.headers[${i}]`, issues))
  const query = (route.match.query_parameters ?? []).map((q, i) =>
    compileQueryMatcher(q, `${p}.match.query_parameters[${i}]`, issues),
  )

  const init: RouteInit = {
    name: route.name !== undefined && route.name !== '' ? route.name : `${vh.name}/${index}`,
    vhostName: vh.name,
    kind: 'cluster',
    clusters: [],
    cumulative: [],
    totalWeight: 0,
    rewrite: PathRewrite.none,
    hostRewrite: null,
    autoHostRewrite: false,
    timeoutMs: DEFAULT_ROUTE_TIMEOUT_MS,
    idleTimeoutMs: -1,
    retry: s.vhostRetry,
    mirrors: s.vhostMirrors,
    includeAttemptCount: vh.include_request_attempt_count === true,
    hash: new HashPolicies([]),
    redirect: null,
    directStatus: 0,
    directBody: null,
    requestLevels: levels(compileMutations(route, 'request', p, issues), s.vhostRequest, s.globalRequest),
    responseLevels: levels(compileMutations(route, 'response', p, issues), s.vhostResponse, s.globalResponse),
    clusterRequest: new Map(),
    clusterResponse: new Map(),
    filterConfigs: perFilter(s.vhostFilters, route.typed_per_filter_config, `${p}.typed_per_filter_config`, issues),
    operation: route.decorator?.operation ?? null,
  }

  if (route.route !== undefined) compileRouteAction(route.route, match, `${p}.route`, init, s)
  else if (route.redirect !== undefined) {
    init.kind = 'redirect'
    init.redirect = compileRedirect(route.redirect, match, `${p}.redirect`, issues)
  } else if (route.direct_response !== undefined) {
    init.kind = 'direct'
    compileDirect(route.direct_response, `${p}.direct_response`, init, issues)
  } else {
    issues.push({ path: p, message: 'one of route, redirect, direct_response is required' })
  }
  return new RouteEntry(match, route.match.grpc !== undefined, headers, query, new CompiledRoute(init))
}

function compileDirect(dr: DirectResponseAction, p: string, init: RouteInit, issues: ConfigIssue[]): void {
  init.directStatus = dr.status
  if (dr.body !== undefined) init.directBody = readBody(dr.body, `${p}.body`, issues)
}

function compileRouteAction(ra: RouteAction, match: PathMatch, p: string, init: RouteInit, s: Shared): void {
  const issues = s.issues
  if (ra.cluster !== undefined) {
    init.clusters = [ra.cluster]
    init.cumulative = [1]
    init.totalWeight = 1
    s.clusters.add(ra.cluster)
  } else if (ra.weighted_clusters !== undefined) {
    const wc = ra.weighted_clusters
    let sum = 0
    const seen = new Set<string>()
    wc.clusters.forEach((c, i) => {
      const cp = `${p}.weighted_clusters.clusters[${i}]`
      if (seen.has(c.name)) {
        issues.push({ path: `${cp}.name`, message: `cluster "${c.name}" is listed twice; merge the entries` })
      }
      seen.add(c.name)
      sum += c.weight
      init.clusters.push(c.name)
      init.cumulative.push(sum)
      s.clusters.add(c.name)
      const req = compileMutations(c, 'request', cp, issues)
      const res = compileMutations(c, 'response', cp, issues)
      if (!req.isEmpty) init.clusterRequest.set(c.name, req)
      if (!res.isEmpty) init.clusterResponse.set(c.name, res)
    })
    init.totalWeight = sum
    if (sum === 0) issues.push({ path: `${p}.weighted_clusters`, message: 'the sum of weights must be greater than 0' })
    if (wc.total_weight !== undefined && wc.total_weight !== sum) {
      issues.push({
        path: `${p}.weighted_clusters.total_weight`,
        message: `the weights add up to ${sum}, not total_weight (${wc.total_weight})`,
      })
    }
  }

  init.rewrite = compileRewriteOf(ra, match, p, issues)
  if (ra.host_rewrite_literal !== undefined) {
    checkNoControl(ra.host_rewrite_literal, `${p}.host_rewrite_literal`, issues)
    init.hostRewrite = ra.host_rewrite_literal
  }
  if (ra.auto_host_rewrite === true) {
    if (ra.host_rewrite_literal !== undefined) {
      issues.push({ path: p, message: 'only one of host_rewrite_literal, auto_host_rewrite may be set' })
    }
    init.autoHostRewrite = true
  }
  if (ra.timeout !== undefined) init.timeoutMs = parseDurationMs(ra.timeout) ?? DEFAULT_ROUTE_TIMEOUT_MS
  if (ra.idle_timeout !== undefined) init.idleTimeoutMs = parseDurationMs(ra.idle_timeout) ?? 0
  if (ra.retry_policy !== undefined) init.retry = compileRetryPolicy(ra.retry_policy)
  // the most specific non-empty list wins whole, as in Envoy (no merging with the virtual host's)
  const mirrors = compileMirrorPolicies(ra.request_mirror_policies)
  if (mirrors !== null) init.mirrors = mirrors
  if (init.mirrors !== null) for (const m of init.mirrors) s.clusters.add(m.cluster)
  if (ra.hash_policy !== undefined) init.hash = compileHashPolicies(ra.hash_policy, `${p}.hash_policy`, issues)
}

function checkDomain(domain: string, path: string, issues: ConfigIssue[]): boolean {
  if (CONTROL.test(domain) || /\s/.test(domain)) {
    issues.push({ path, message: 'a domain must not contain whitespace or control characters' })
    return false
  }
  if (domain === '*') return true
  const stars = domain.split('*').length - 1
  if (stars > 1) {
    issues.push({ path, message: `"${domain}" has more than one '*'; a wildcard is one '*' at the start or the end` })
    return false
  }
  if (stars === 1 && !domain.startsWith('*') && !domain.endsWith('*')) {
    issues.push({ path, message: `"${domain}": '*' is only allowed as the first or the last character` })
    return false
  }
  return true
}

/**
 * Compiles a route configuration, once per config version. Throws RouteConfigError (issue paths relative to
 * the route configuration, e.g. `virtual_hosts[1].routes[0].match.safe_regex.regex`) for what the schema
 * cannot check: regexes RE2 rejects, duplicate or malformed domains, inconsistent weights, unreadable bodies...
 */
export function compileRouteConfig(cfg: RouteConfiguration): CompiledRouteConfig {
  const issues: ConfigIssue[] = []
  const clusters = new Set<string>()
  const globalRequest = compileMutations(cfg, 'request', '', issues)
  const globalResponse = compileMutations(cfg, 'response', '', issues)

  const exact = new Map<string, VHost>()
  const suffixLists: Map<string, VHost>[] = []
  const prefixLists: Map<string, VHost>[] = []
  let fallback: VHost | null = null
  /** lower-cased domain → owning virtual host name */
  const owners = new Map<string, string>()
  const names = new Set<string>()

  ;(cfg.virtual_hosts ?? []).forEach((vh, i) => {
    const vp = `virtual_hosts[${i}]`
    if (names.has(vh.name)) {
      issues.push({ path: `${vp}.name`, message: `another virtual host is already called "${vh.name}"` })
    }
    names.add(vh.name)
    const shared: Shared = {
      vhostFilters: perFilter(null, vh.typed_per_filter_config, `${vp}.typed_per_filter_config`, issues),
      vhostRetry: compileRetryPolicy(vh.retry_policy),
      vhostMirrors: compileMirrorPolicies(vh.request_mirror_policies),
      issues,
      clusters,
      vhostRequest: compileMutations(vh, 'request', vp, issues),
      vhostResponse: compileMutations(vh, 'response', vp, issues),
      globalRequest,
      globalResponse,
    }
    const entries = (vh.routes ?? []).map((r, j) => compileRoute(r, vh, j, `${vp}.routes[${j}]`, shared))
    const host = new VHost(vh.name, entries, i)

    vh.domains.forEach((raw, k) => {
      const dp = `${vp}.domains[${k}]`
      if (!checkDomain(raw, dp, issues)) return
      const domain = asciiLower(raw)
      const owner = owners.get(domain)
      if (owner !== undefined) {
        const msg =
          domain === '*'
            ? `only one virtual host may have the '*' domain (virtual host "${owner}" already does)`
            : `duplicate domain "${domain}" (already a domain of virtual host "${owner}"); domains must be unique`
        issues.push({ path: dp, message: msg })
        return
      }
      owners.set(domain, vh.name)
      if (domain === '*') fallback = host
      else if (domain.startsWith('*')) {
        const suffix = domain.slice(1)
        let m = suffixLists[suffix.length]
        if (m === undefined) suffixLists[suffix.length] = m = new Map()
        m.set(suffix, host)
      } else if (domain.endsWith('*')) {
        const prefix = domain.slice(0, -1)
        let m = prefixLists[prefix.length]
        if (m === undefined) prefixLists[prefix.length] = m = new Map()
        m.set(prefix, host)
      } else exact.set(domain, host)
    })
  })

  if (issues.length > 0) throw new RouteConfigError(cfg.name ?? '', issues)
  return new CompiledRouteConfig(
    cfg.name ?? '',
    cfg.validate_clusters ?? null,
    exact,
    groups(suffixLists),
    groups(prefixLists),
    fallback,
    clusters,
  )
}
