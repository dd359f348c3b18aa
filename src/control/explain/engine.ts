/**
 * `loom explain`: why a request gets the answer it gets. The engine walks one proxy's xDS resources (the snapshot the
 * control plane sent it) with the proxy's own compiled code: the filter chain match (listener/listener.ts), path
 * normalization, the router (route/router.ts `explain`, the same virtual host lookup and matchers as `match`), the
 * fault filter's compiled policy, the load balancer's host eligibility (cluster/cluster.ts `hostEligibility`) over the
 * live host states from the proxy's admin `/clusters`, and, on the destination's inbound listener, the RBAC engines
 * (rbac/matcher.ts `explain`, the same tests as `matchedPolicy`). What it reports is what those functions decide;
 * the text around the verdicts (a matcher's description, a resource's origin) is read from the config.
 *
 * Pure: the caller (the API server) gathers the snapshots and the live host states; unit tests feed translated
 * snapshots directly.
 */
import { Buffer } from 'node:buffer'
import * as v from 'valibot'
import {
  type Cluster,
  ClusterLoadAssignment,
  type HeaderMatcher,
  type HttpConnectionManager,
  type HttpFilter,
  Listener,
  type QueryParameterMatcher,
  type Route,
  RouteConfiguration,
  type StringMatcher,
  Cluster as ClusterSchema,
} from '../../config/envoy.js'
import { TypeUrls } from '../../config/type-urls.js'
import { hostEligibility } from '../../proxy/cluster/cluster.js'
import { compileHttpFilters } from '../../proxy/http/filters/index.js'
import { FaultPolicy } from '../../proxy/http/filters/fault/fault.js'
import { RbacFilterFactory } from '../../proxy/http/filters/rbac/rbac.js'
import type { RbacInput } from '../../proxy/http/filters/rbac/matcher.js'
import { Headers } from '../../proxy/http/headers.js'
import { PATH_OK, PATH_REDIRECT, PathNormalizer } from '../../proxy/http/path-normalize.js'
import type { RequestHead } from '../../proxy/http/types.js'
import { matchChain } from '../../proxy/listener/listener.js'
import { type CompiledRoute, compileRouteConfig, type RouteTrace } from '../../proxy/route/router.js'
import { StatsStore } from '../../proxy/stats/stats.js'

type Json = Record<string, unknown>

/** One proxy as the engine sees it: its identity and the resources it was sent. */
export interface ProxyView {
  nodeId: string
  kind: 'sidecar' | 'gateway'
  /** `<workload>.<namespace>` (the pod part of the node id) */
  name: string
  namespace: string
  /** the IP its inbound traffic arrives on */
  ip: string
  /** the workload's SPIFFE ID (what its certificate says), or null without mTLS identity */
  principal: string | null
  listeners: Json[]
  routes: Json[]
  clusters: Json[]
  endpoints: Json[]
}

/** The request to explain. */
export interface ExplainRequest {
  method: string
  /** absolute: `http://reviews:9080/reviews/0` */
  url: string
  headers: [string, string][]
}

/** Admin `/clusters?format=json` of the source proxy (cluster_statuses), or an error saying why it is missing. */
export type LiveClusters = { cluster_statuses: Json[] } | { error: string }

/** A node of the decision tree: ✓ (true), ✗ (false) or • (null: a fact, not a decision). */
export interface Step {
  ok: boolean | null
  text: string
  children?: Step[]
}

export interface Explanation {
  source: { nodeId: string; name: string; kind: string; principal: string | null }
  request: ExplainRequest
  listener: string | null
  routeConfiguration: string | null
  virtualHost: string | null
  route: { name: string; origin: string | null } | null
  cluster: string | null
  subset: string | null
  /** the proxy's answer when the explanation ends in one (a local reply), else null (the request goes upstream) */
  localReply: { status: number; flag: string; reason: string } | null
  /** the faults that may apply: `abort 503 (100%)`, `delay 7000ms (100%)` */
  faults: string[]
  timeoutMs: number | null
  retries: { numRetries: number; retryOn: string; perTryTimeoutMs: number } | null
  endpoints: { address: string; eligible: boolean; state: string; workload: string | null }[]
  authorization: { workload: string; allowed: boolean; policy: string | null; origin: string | null }[]
  steps: Step[]
}

export class ExplainError extends Error {}

const ISTIO_CONFIG = /^\/apis\/([^/]+)\/[^/]+\/namespaces\/([^/]+)\/([^/]+)\/([^/]+)$/
const KIND_OF: Record<string, string> = {
  'virtual-service': 'VirtualService',
  'destination-rule': 'DestinationRule',
  'authorization-policy': 'AuthorizationPolicy',
}

/** `filter_metadata.istio.config` (Istio's origin path) as `VirtualService default/reviews`, or null. */
export function originOf(metadata: unknown): string | null {
  const cfg = ((metadata as Json | undefined)?.filter_metadata as Json | undefined)?.istio as Json | undefined
  const path = cfg?.config
  if (typeof path !== 'string') return null
  const m = ISTIO_CONFIG.exec(path)
  if (m === null) return path
  return `${KIND_OF[m[3]!] ?? m[3]} ${m[2]}/${m[4]}`
}

/** An RBAC policy name of the translator (`ns[default]-policy[deny-all]-rule[0]`) as its AuthorizationPolicy. */
export function policyOrigin(name: string): string | null {
  const m = /ns\[([^\]]*)\]-policy\[([^\]]*)\]-rule\[(\d+)\]/.exec(name)
  return m === null ? null : `AuthorizationPolicy ${m[1]}/${m[2]} rule ${m[3]}`
}

// === describing matchers (the verdicts come from the compiled code; these say what was asked) ===

function stringMatch(m: StringMatcher): string {
  const ic = m.ignore_case === true ? ' (ignore case)' : ''
  if (m.exact !== undefined) return `exact "${m.exact}"${ic}`
  if (m.prefix !== undefined) return `prefix "${m.prefix}"${ic}`
  if (m.suffix !== undefined) return `suffix "${m.suffix}"${ic}`
  if (m.contains !== undefined) return `contains "${m.contains}"${ic}`
  return `regex "${m.safe_regex?.regex}"`
}

function headerText(h: HeaderMatcher): string {
  const inv = h.invert_match === true ? 'not ' : ''
  let what: string
  if (h.present_match !== undefined) what = h.present_match ? 'present' : 'absent'
  else if (h.exact_match !== undefined) what = `exact "${h.exact_match}"`
  else if (h.prefix_match !== undefined) what = `prefix "${h.prefix_match}"`
  else if (h.suffix_match !== undefined) what = `suffix "${h.suffix_match}"`
  else if (h.contains_match !== undefined) what = `contains "${h.contains_match}"`
  else if (h.safe_regex_match !== undefined) what = `regex "${h.safe_regex_match.regex}"`
  else if (h.range_match !== undefined) what = `in [${h.range_match.start}, ${h.range_match.end})`
  else if (h.string_match !== undefined) what = stringMatch(h.string_match)
  else what = 'present'
  return `header ${h.name} ${inv}${what}`
}

function queryText(q: QueryParameterMatcher): string {
  if (q.string_match !== undefined) return `query ${q.name} ${stringMatch(q.string_match)}`
  return `query ${q.name} ${q.present_match === false ? 'absent' : 'present'}`
}

function pathText(r: Route): string {
  const m = r.match
  const cs = m.case_sensitive === false ? ' (ignore case)' : ''
  if (m.prefix !== undefined) return `path prefix "${m.prefix}"${cs}`
  if (m.path !== undefined) return `path exact "${m.path}"${cs}`
  if (m.path_separated_prefix !== undefined) return `path separated prefix "${m.path_separated_prefix}"${cs}`
  return `path regex "${m.safe_regex?.regex}"`
}

function headerOf(head: RequestHead, name: string): string {
  const lower = name.toLowerCase()
  if (lower === ':authority' || lower === 'host') return head.authority
  if (lower === ':path') return head.path
  if (lower === ':method') return head.method
  const all = head.headers.getAll(lower)
  return all.length === 0 ? 'absent' : `"${all.join(',')}"`
}

function ms(n: number): string {
  return n === 0 ? 'none' : n % 1000 === 0 ? `${n / 1000}s` : `${n}ms`
}

function pct(share: number): string {
  return `${Math.round(share * 10000) / 100}%`
}

// === the walk ===

function parseOr<T>(schema: v.GenericSchema<unknown, T>, value: unknown, what: string): T {
  const r = v.safeParse(schema, value)
  if (!r.success) throw new ExplainError(`${what} does not validate: ${r.issues[0]?.message}`)
  return r.output
}

function requestHead(req: ExplainRequest): { head: RequestHead; scheme: 'http' | 'https'; port: number } {
  let url: URL
  try {
    url = new URL(req.url)
  } catch {
    throw new ExplainError(`not an absolute URL: ${req.url} (e.g. http://reviews:9080/reviews/0)`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ExplainError(`not an http(s) URL: ${req.url}`)
  const scheme = url.protocol === 'https:' ? 'https' : 'http'
  const port = url.port === '' ? (scheme === 'https' ? 443 : 80) : Number(url.port)
  const list: string[] = []
  let authority = url.host
  for (const [n, value] of req.headers) {
    const name = n.toLowerCase()
    if (name === 'host') authority = value
    else list.push(name, value)
  }
  const head = {
    method: req.method.toUpperCase(),
    path: `${url.pathname}${url.search}`,
    authority,
    scheme,
    headers: new Headers(list),
    protocol: 'HTTP/1.1',
    upgrade: null,
  } as unknown as RequestHead
  return { head, scheme, port }
}

function listenerPort(l: Json): number {
  return Number(((l.address as Json)?.socket_address as Json)?.port_value ?? 0)
}

function listenerAddress(l: Json): string {
  const sa = (l.address as Json)?.socket_address as Json
  return `${sa?.address}:${sa?.port_value}`
}

interface ChainCandidate {
  serverNames: string[]
  transportProtocol: '' | 'tls' | 'raw_buffer'
  applicationProtocols: string[]
  index: number
  hcm: HttpConnectionManager | null
}

function chainsOf(l: Listener): ChainCandidate[] {
  return l.filter_chains.map((c, index) => {
    const last = c.filters[c.filters.length - 1]!.typed_config
    return {
      serverNames: c.filter_chain_match?.server_names ?? [],
      transportProtocol: c.filter_chain_match?.transport_protocol ?? '',
      applicationProtocols: c.filter_chain_match?.application_protocols ?? [],
      index,
      hcm: last['@type'] === TypeUrls.hcm ? (last as HttpConnectionManager) : null,
    }
  })
}

function routeOrigin(rc: RouteConfiguration, trace: RouteTrace, index: number): string | null {
  const raw = rc.virtual_hosts?.[trace.vhostIndex]?.routes?.[index] as (Route & { metadata?: unknown }) | undefined
  return originOf(raw?.metadata)
}

/** What happened at a virtual host lookup: the domain that matched, as the router's order would find it. */
function domainReason(domains: readonly string[], authority: string): string {
  const host = authority.toLowerCase()
  if (domains.some((d) => d.toLowerCase() === host)) return `domain "${host}" matched exactly`
  const suffix = domains.filter((d) => d.startsWith('*') && d !== '*' && host.endsWith(d.slice(1).toLowerCase()))
  if (suffix.length > 0) return `wildcard domain "${suffix[0]}" matched`
  const prefix = domains.filter((d) => d.endsWith('*') && d !== '*' && host.startsWith(d.slice(0, -1).toLowerCase()))
  if (prefix.length > 0) return `wildcard domain "${prefix[0]}" matched`
  return 'the catch-all domain "*" matched'
}

/** The first domain of a virtual host that matches the authority at all (exact, wildcard or `*`), or null. */
function matchingDomain(domains: readonly string[], authority: string): string | null {
  const host = authority.toLowerCase()
  for (const d of domains) {
    const l = d.toLowerCase()
    if (l === host || l === '*') return d
    if (l.startsWith('*') && host.length > l.length - 1 && host.endsWith(l.slice(1))) return d
    if (l.endsWith('*') && host.length > l.length - 1 && host.startsWith(l.slice(0, -1))) return d
  }
  return null
}

interface Walk {
  steps: Step[]
  out: Explanation
}

/**
 * Explains `req` as sent by `source`'s application (a sidecar: to its outbound HTTP proxy listener) or arriving at
 * `source` (a gateway: on the listener of the URL's port). `peers` are the other proxies' views (for the
 * destination's inbound side); `live` the source proxy's admin `/clusters`.
 */
export function explain(source: ProxyView, req: ExplainRequest, peers: ProxyView[], live: LiveClusters): Explanation {
  const { head, scheme, port } = requestHead(req)
  const out: Explanation = {
    source: { nodeId: source.nodeId, name: source.name, kind: source.kind, principal: source.principal },
    request: req,
    listener: null,
    routeConfiguration: null,
    virtualHost: null,
    route: null,
    cluster: null,
    subset: null,
    localReply: null,
    faults: [],
    timeoutMs: null,
    retries: null,
    endpoints: [],
    authorization: [],
    steps: [],
  }
  const w: Walk = { steps: out.steps, out }
  const reply = (status: number, flag: string, reason: string, text: string) => {
    out.localReply = { status, flag, reason }
    w.steps.push({ ok: false, text: `${source.name} answers ${status}${flag === '' ? '' : ` ${flag}`}: ${text}` })
    return out
  }

  // --- listener and filter chain ---
  const listeners = source.listeners.map((l) => parseOr(Listener, l, `listener ${String(l.name)}`))
  let listener: Listener | undefined
  let why: string
  if (source.kind === 'sidecar') {
    listener = listeners.find((l) => l.name === 'outbound_http')
    why = "the workload's outbound HTTP proxy (its HTTP_PROXY)"
    if (listener === undefined) throw new ExplainError(`${source.name} has no outbound_http listener`)
  } else {
    listener = listeners.find((l) => listenerPort(l as unknown as Json) === port)
    why = `the gateway listener on port ${port}`
    if (listener === undefined) {
      const ports = listeners.map((l) => listenerPort(l as unknown as Json)).join(', ')
      throw new ExplainError(`${source.name} has no listener on port ${port} (its ports: ${ports || 'none'})`)
    }
  }
  out.listener = listener.name
  const chains = chainsOf(listener)
  const transport = scheme === 'https' ? 'tls' : 'raw_buffer'
  const chain = matchChain(chains, scheme === 'https' ? head.authority.replace(/:\d+$/, '') : '', transport, [])
  const lstep: Step = {
    ok: chain !== null,
    text: `listener ${listener.name} (${listenerAddress(listener as unknown as Json)}): ${why}`,
    children: [],
  }
  w.steps.push(lstep)
  if (chain === null)
    return reply(
      0,
      '',
      'no_filter_chain',
      `no filter chain of ${listener.name} matches a ${transport} connection; it is closed`,
    )
  if (chains.length > 1) {
    const m = chain.serverNames.length > 0 ? ` server names ${chain.serverNames.join(', ')}` : ''
    lstep.children!.push({
      ok: true,
      text: `filter chain ${chain.index} (${chain.transportProtocol || 'any transport'}${m})`,
    })
  }
  const hcm = chain.hcm
  if (hcm === null) return reply(0, '', 'tcp_proxy', 'the chain is a TCP proxy: no HTTP routing')
  const filterNames = (hcm.http_filters ?? []).map((f) => f.name)
  lstep.children!.push({ ok: null, text: `connection manager ${hcm.stat_prefix}: filters ${filterNames.join(', ')}` })

  // --- path normalization (as the connection manager applies it before routing) ---
  const normalizer = PathNormalizer.compile(hcm)
  if (normalizer !== null) {
    const before = head.path
    const verdict = normalizer.apply(head.path)
    if (verdict === PATH_OK) {
      head.path = normalizer.path
      if (head.path !== before) lstep.children!.push({ ok: null, text: `path normalized: ${before} → ${head.path}` })
    } else if (verdict === PATH_REDIRECT) {
      return reply(307, '', 'path_normalization_redirect', `redirect to the normalized path ${normalizer.path}`)
    } else return reply(400, '', 'path_normalization_failed', 'the path cannot be normalized')
  }

  // --- route configuration ---
  const rdsName = hcm.rds?.route_config_name ?? null
  const rawRc = rdsName === null ? hcm.route_config : source.routes.find((r) => r.name === rdsName)
  if (rawRc === undefined) return reply(404, 'NR', 'route_not_found', `route configuration ${rdsName} was not sent`)
  const rc = parseOr(RouteConfiguration, rawRc, `route configuration ${rdsName}`)
  out.routeConfiguration = rc.name ?? rdsName ?? '(inline)'
  const router = compileRouteConfig(rc)
  const trace = router.explain(head)
  const vhosts = rc.virtual_hosts ?? []
  if (trace.vhostIndex < 0) {
    w.steps.push({
      ok: false,
      text: `virtual host: none of the ${vhosts.length} virtual hosts of ${out.routeConfiguration} has a domain matching "${head.authority}"`,
    })
    return reply(404, 'NR', 'route_not_found', 'no route matched the request')
  }
  const vh = vhosts[trace.vhostIndex]!
  out.virtualHost = vh.name
  const vstep: Step = {
    ok: true,
    text: `virtual host ${vh.name} (route configuration ${out.routeConfiguration}): ${domainReason(vh.domains, head.authority)} for authority "${head.authority}"`,
    children: [],
  }
  w.steps.push(vstep)
  if (vhosts.length > 1) {
    const others = vhosts.filter((_, i) => i !== trace.vhostIndex)
    const weaker = others.filter((o) => matchingDomain(o.domains, head.authority) !== null)
    const none = others.length - weaker.length
    for (const o of weaker)
      vstep.children!.push({
        ok: false,
        text: `virtual host ${o.name}: its domain "${matchingDomain(o.domains, head.authority)}" matches too, less specifically`,
      })
    if (none > 0)
      vstep.children!.push({
        ok: null,
        text: `${none} other virtual host${none === 1 ? '' : 's'}: no domain matches "${head.authority}"`,
      })
  }
  for (const e of trace.evaluated) {
    const raw = vh.routes![e.index]!
    const origin = routeOrigin(rc, trace, e.index)
    const c = e.conditions
    const conds: Step[] = [{ ok: c.path, text: `${pathText(raw)} (request path ${head.path})` }]
    if (c.grpc !== null) conds.push({ ok: c.grpc, text: `gRPC (content-type ${headerOf(head, 'content-type')})` })
    const hs = raw.match.headers ?? []
    for (let i = 0; i < hs.length; i++)
      conds.push({ ok: c.headers[i]!, text: `${headerText(hs[i]!)} (request: ${headerOf(head, hs[i]!.name)})` })
    const qs = raw.match.query_parameters ?? []
    for (let i = 0; i < qs.length; i++) conds.push({ ok: c.query[i]!, text: queryText(qs[i]!) })
    const label = `route ${e.index}${raw.name ? ` "${raw.name}"` : ''}${origin === null ? '' : ` (${origin})`}`
    const failed = conds.filter((x) => x.ok === false).map((x) => x.text)
    vstep.children!.push({
      ok: c.matched,
      text: c.matched ? `${label}: matched` : `${label}: did not match: ${failed.join('; ')}`,
      children: conds,
    })
  }
  const later = (vh.routes?.length ?? 0) - trace.evaluated.length
  if (trace.route !== null && later > 0)
    vstep.children!.push({
      ok: null,
      text: `${later} later route${later === 1 ? '' : 's'} not evaluated (first match wins)`,
    })
  const route = trace.route
  if (route === null) return reply(404, 'NR', 'route_not_found', 'no route of the virtual host matched')
  const matchedIndex = trace.evaluated[trace.evaluated.length - 1]!.index
  const rawRoute = vh.routes![matchedIndex]!
  out.route = { name: route.name, origin: routeOrigin(rc, trace, matchedIndex) }

  // --- the route's filters (fault, rate limits) and action ---
  const fstep = filtersStep(hcm, route, head, out)
  if (fstep !== null) w.steps.push(fstep)
  const abort = out.faults.find((f) => f.startsWith('abort') && f.endsWith('(100%)'))
  if (abort !== undefined) {
    // a gRPC abort is a trailers-only 200 with grpc-status
    const status = abort.startsWith('abort gRPC') ? 200 : Number(/^abort (\d+)/.exec(abort)?.[1] ?? 0)
    return reply(
      status,
      'FI',
      'fault_filter_abort',
      'the fault filter aborts every matching request (the router never sees it)',
    )
  }
  if (route.kind === 'direct') return reply(route.directStatus, '', 'direct_response', `the route's direct response`)
  if (route.kind === 'redirect') {
    const r = route.redirect(head, scheme)
    return reply(r.status, '', 'redirect', `redirect to ${r.location}`)
  }
  const astep: Step = { ok: true, text: '', children: [] }
  const names = route.clusterNames()
  const wc = rawRoute.route?.weighted_clusters
  if (wc !== undefined) {
    const total = wc.clusters.reduce((n, c) => n + c.weight, 0)
    astep.text = `route action: weighted clusters ${wc.clusters.map((c) => `${c.name} ${pct(c.weight / total)}`).join(', ')}`
  } else astep.text = `route action: to cluster ${names[0]}`
  astep.children!.push({ ok: null, text: `timeout: ${ms(route.timeoutMs)}` })
  out.timeoutMs = route.timeoutMs
  if (route.idleTimeoutMs >= 0) astep.children!.push({ ok: null, text: `idle timeout: ${ms(route.idleTimeoutMs)}` })
  const rp = rawRoute.route?.retry_policy ?? vh.retry_policy
  if (route.retry !== null && rp !== undefined) {
    out.retries = {
      numRetries: route.retry.numRetries,
      retryOn: rp.retry_on ?? '',
      perTryTimeoutMs: route.retry.perTryTimeoutMs,
    }
    astep.children!.push({
      ok: null,
      text: `retries: ${route.retry.numRetries} on ${rp.retry_on}${route.retry.statusCodes.size > 0 ? ` (status ${[...route.retry.statusCodes].join(', ')})` : ''}, per-try timeout ${ms(route.retry.perTryTimeoutMs)}`,
    })
  } else astep.children!.push({ ok: null, text: 'retries: none' })
  if (route.mirrors !== null)
    for (const m of route.mirrors) astep.children!.push({ ok: null, text: `mirror ${pct(m.share)} to ${m.cluster}` })
  if (route.hostRewrite !== null)
    astep.children!.push({ ok: null, text: `authority rewritten to ${route.hostRewrite}` })
  const rewritten = route.rewritePath(head.path)
  if (rewritten !== head.path) astep.children!.push({ ok: null, text: `path rewritten to ${rewritten}` })
  w.steps.push(astep)

  // --- clusters, endpoints, the destination's authorization ---
  for (const name of names) clusterStep(w, source, name, names.length > 1, live, peers, head)
  if (out.localReply === null && names.length === 1 && !out.endpoints.some((e) => e.eligible))
    return reply(503, 'UH', 'no_healthy_upstream', `no healthy upstream in ${names[0]}`)
  const denied = out.authorization.find((a) => !a.allowed)
  if (out.localReply === null && denied !== undefined && out.authorization.every((a) => !a.allowed)) {
    out.localReply = {
      status: 403,
      flag: 'RBAC',
      reason: `rbac_access_denied_matched_policy[${denied.policy ?? 'none'}]`,
    }
    w.steps.push({ ok: false, text: `${denied.workload}'s sidecar answers 403 RBAC: access denied` })
  }
  return out
}

/** The connection manager's filters that act on this request and route (the stream's own `create` decision). */
function filtersStep(
  hcm: HttpConnectionManager,
  route: CompiledRoute,
  head: RequestHead,
  out: Explanation,
): Step | null {
  const list = hcm.http_filters ?? []
  const children: Step[] = []
  // only filters without outside effects are compiled here; ext_authz (a call out) is described from its config
  const local = list.filter((f) => f.typed_config['@type'] === TypeUrls.fault)
  const stats = new StatsStore().forHcm(hcm.stat_prefix)
  for (const f of compileHttpFilters(local as HttpFilter[], stats)) {
    const per = route.filterConfigs?.get(f.name)
    const policy = per instanceof FaultPolicy ? per : null
    if (policy === null) continue
    const applies = policy.matches(head)
    const parts: string[] = []
    if (policy.delayMs !== null) {
      const d = policy.delayMs === -1 ? 'from x-envoy-fault-delay-request' : `${policy.delayMs}ms`
      parts.push(`delay ${d} (${pct(policy.delayShare)})`)
    }
    if (policy.abortStatus !== null) {
      const a =
        policy.abortStatus === -1
          ? 'from x-envoy-fault-abort-request'
          : policy.abortStatus === 0
            ? `gRPC status ${policy.grpcStatus}`
            : String(policy.abortStatus)
      parts.push(`abort ${a} (${pct(policy.abortShare)})`)
    }
    if (applies) out.faults.push(...parts)
    const hdr =
      policy.headers.length > 0
        ? applies
          ? ' (its header matchers match)'
          : ' (its header matchers do not match)'
        : ''
    children.push({
      ok: applies ? !parts.some((p) => p.startsWith('abort')) : true,
      text: `fault (${f.name}): ${parts.join(', ')}${hdr}${applies ? '' : ': not applied'}`,
    })
  }
  const raw = route.filterConfigs
  if (raw !== null) {
    for (const [name] of raw) {
      if (list.find((f) => f.name === name)?.typed_config['@type'] === TypeUrls.fault) continue
      children.push({ ok: null, text: `per-route config for ${name}` })
    }
  }
  for (const f of list) {
    if (f.typed_config['@type'] === TypeUrls.localRateLimit)
      children.push({ ok: null, text: `local rate limit filter ${f.name}` })
  }
  if (children.length === 0) return null
  return { ok: children.every((c) => c.ok !== false), text: 'filters on this route', children }
}

function clusterStep(
  w: Walk,
  source: ProxyView,
  name: string,
  weighted: boolean,
  live: LiveClusters,
  peers: ProxyView[],
  head: RequestHead,
): void {
  const raw = source.clusters.find((c) => c.name === name)
  const subset = name.split('|')[2] ?? ''
  if (!weighted) {
    w.out.cluster = name
    w.out.subset = subset === '' ? null : subset
  }
  if (raw === undefined) {
    w.steps.push({ ok: false, text: `cluster ${name}: not sent to ${source.name}` })
    if (!weighted) {
      w.out.localReply = { status: 503, flag: 'NC', reason: 'cluster_not_found' }
      w.steps.push({
        ok: false,
        text: `${source.name} answers 503 NC: the route points at a cluster that does not exist`,
      })
    }
    return
  }
  const cluster = parseOr(ClusterSchema, raw, `cluster ${name}`) as Cluster
  const origin = originOf((raw as Json).metadata)
  const cstep: Step = {
    ok: true,
    text: `cluster ${name}${subset === '' ? '' : `: subset ${subset}`}${origin === null ? '' : ` of ${origin}`}`,
    children: [],
  }
  w.steps.push(cstep)
  const c = cstep.children!
  c.push({
    ok: null,
    text: `load balancer ${cluster.lb_policy ?? 'ROUND_ROBIN'}, connect timeout ${cluster.connect_timeout ?? '5s'}`,
  })
  const th = cluster.circuit_breakers?.thresholds?.[0]
  if (th !== undefined) {
    const fields = Object.entries(th)
      .filter(([k, x]) => k !== 'priority' && typeof x === 'number' && x < 4294967295)
      .map(([k, x]) => `${k} ${x}`)
    c.push({
      ok: null,
      text: `circuit breakers: ${fields.length === 0 ? 'unlimited (Istio defaults)' : fields.join(', ')}`,
    })
  }
  const od = cluster.outlier_detection
  if (od !== undefined)
    c.push({
      ok: null,
      text: `outlier detection: ${Object.entries(od)
        .map(([k, x]) => `${k} ${typeof x === 'object' ? JSON.stringify(x) : x}`)
        .join(', ')}`,
    })
  const mtls = cluster.transport_socket !== undefined || (cluster.transport_socket_matches?.length ?? 0) > 0
  c.push({ ok: null, text: `upstream TLS: ${mtls ? 'yes (Istio mutual TLS to sidecars)' : 'no (plain text)'}` })

  // endpoints: EDS (what was sent) and the live state (what the proxy's load balancer sees now)
  const assignment =
    source.endpoints.find((e) => e.cluster_name === name) ?? (cluster.load_assignment as unknown as Json)
  const cla = assignment === undefined ? undefined : parseOr(ClusterLoadAssignment, assignment, `endpoints of ${name}`)
  const sent = (cla?.endpoints ?? []).flatMap((l) => l.lb_endpoints)
  const liveHosts =
    'cluster_statuses' in live
      ? (live.cluster_statuses.find((s) => s.name === name)?.host_statuses as Json[] | undefined)
      : undefined
  const estep: Step = {
    ok: true,
    text:
      'error' in live
        ? `endpoints (sent by EDS; live state unavailable: ${live.error})`
        : `endpoints (live, from ${source.name}'s admin /clusters)`,
    children: [],
  }
  cstep.children!.push(estep)
  const hosts: { address: string; port: number; ejected: boolean; failedHc: boolean; status: string; rq: number }[] = []
  if (liveHosts !== undefined) {
    for (const h of liveHosts) {
      const sa = (h.address as Json).socket_address as Json
      const hs = h.health_status as Json
      hosts.push({
        address: String(sa.address),
        port: Number(sa.port_value),
        ejected: hs.failed_outlier_check === true,
        failedHc: hs.failed_active_health_check === true,
        status: String(hs.eds_health_status ?? 'UNKNOWN'),
        rq: Number((h.stats as Json | undefined)?.rq_active ?? 0),
      })
    }
  } else {
    for (const e of sent) {
      const sa = e.endpoint.address.socket_address
      hosts.push({
        address: sa.address,
        port: sa.port_value,
        ejected: false,
        failedHc: false,
        status: e.health_status ?? 'UNKNOWN',
        rq: 0,
      })
    }
  }
  if (hosts.length === 0) {
    estep.ok = false
    estep.children!.push({
      ok: false,
      text:
        subset === ''
          ? 'no endpoints: the service has no healthy workload on this port'
          : `no endpoints: no healthy workload has subset ${subset}'s labels`,
    })
  }
  for (const h of hosts) {
    const e = hostEligibility(h.ejected, h.failedHc, h.status)
    const state = h.ejected
      ? 'ejected by outlier detection'
      : h.failedHc
        ? 'failing active health checks'
        : e === null
          ? `EDS status ${h.status}`
          : e
    const dest = destinationOf(peers, h.address, h.port)
    const addr = `${h.address}:${h.port}`
    w.out.endpoints.push({ address: addr, eligible: e !== null, state, workload: dest?.name ?? null })
    estep.children!.push({
      ok: e !== null,
      text: `${addr} ${state}${liveHosts !== undefined ? `, ${h.rq} active requests` : ''}${dest === null ? '' : ` → ${dest.name}`}`,
    })
  }
  if (hosts.length > 0 && !hosts.some((h) => hostEligibility(h.ejected, h.failedHc, h.status) !== null))
    estep.ok = false

  // the destination's inbound side: the RBAC filters of the listener the endpoint is
  const seen = new Set<string>()
  for (const h of hosts) {
    if (hostEligibility(h.ejected, h.failedHc, h.status) === null) continue
    const dest = destinationOf(peers, h.address, h.port)
    if (dest === null || seen.has(dest.name)) continue
    seen.add(dest.name)
    inboundStep(w, source, dest, h.port, mtls, head, h.address)
  }
}

/** The sidecar of the endpoint `address:port`: its IP, an inbound listener on that port. */
function destinationOf(peers: ProxyView[], address: string, port: number): ProxyView | null {
  for (const p of peers) {
    if (p.kind !== 'sidecar' || p.ip !== address) continue
    if (inboundListener(p, port) !== undefined) return p
  }
  return null
}

function inboundListener(p: ProxyView, port: number): Json | undefined {
  return p.listeners.find((l) => String(l.name).startsWith('inbound|') && listenerPort(l) === port)
}

/** A TLS socket as the RBAC engine reads it: a verified peer with the source's SPIFFE ID, on the listener's port. */
function peerSocket(principal: string | null, remote: string, local: string, localPort: number): unknown {
  if (principal === null) return { remoteAddress: remote, localAddress: local, localPort }
  const cert = { subjectaltname: `URI:${principal}`, subject: {}, raw: Buffer.alloc(0) }
  return {
    authorized: true,
    getPeerCertificate: () => cert,
    remoteAddress: remote,
    localAddress: local,
    localPort,
  }
}

function inboundStep(
  w: Walk,
  source: ProxyView,
  dest: ProxyView,
  port: number,
  mtls: boolean,
  head: RequestHead,
  address: string,
): void {
  const raw = inboundListener(dest, port)!
  const l = parseOr(Listener, raw, `listener ${String(raw.name)} of ${dest.name}`)
  const chain = matchChain(chainsOf(l), '', mtls ? 'tls' : 'raw_buffer', [])
  const peer = mtls ? source.principal : null
  const dstep: Step = {
    ok: true,
    text: `destination ${dest.name}: listener ${l.name} (${listenerAddress(raw)}), ${mtls ? `mutual TLS, peer ${peer ?? 'none'}` : 'plain text, no peer identity'}`,
    children: [],
  }
  w.steps.push(dstep)
  if (chain === null) {
    dstep.ok = false
    dstep.children!.push({
      ok: false,
      text: `no filter chain accepts a ${mtls ? 'TLS' : 'plain-text'} connection (PeerAuthentication STRICT?): the connection is closed`,
    })
    w.out.authorization.push({ workload: dest.name, allowed: false, policy: null, origin: 'no filter chain' })
    return
  }
  const hcm = chain.hcm
  if (hcm === null) return
  const filters = hcm.http_filters ?? []
  const jwt = filters.filter((f) => f.typed_config['@type'] === TypeUrls.jwtAuthn)
  for (const f of jwt) {
    const cfg = f.typed_config as { providers?: Record<string, { issuer?: string }> }
    const issuers = Object.values(cfg.providers ?? {}).map((p) => p.issuer ?? '?')
    const auth = head.headers.get('authorization')
    dstep.children!.push({
      ok: null,
      text: `JWT (${f.name}): tokens from ${issuers.join(', ')} are verified; the request ${auth?.startsWith('Bearer ') ? 'carries a bearer token (its claims are taken as they are, unverified, for the policies below)' : 'carries no bearer token (a request principal is then absent)'}`,
    })
  }
  for (const f of filters) {
    if (f.typed_config['@type'] === TypeUrls.extAuthz)
      dstep.children!.push({ ok: null, text: `ext_authz (${f.name}): an external service decides; not evaluated here` })
  }
  const rbacFilters = filters.filter((f) => f.typed_config['@type'] === TypeUrls.rbac)
  if (rbacFilters.length === 0) {
    dstep.children!.push({ ok: true, text: 'authorization: no AuthorizationPolicy applies (no RBAC filter): allowed' })
    w.out.authorization.push({ workload: dest.name, allowed: true, policy: null, origin: null })
    return
  }
  const stats = new StatsStore().forHcm(hcm.stat_prefix)
  const metadata = new Map<string, Record<string, unknown>>()
  const claims = bearerClaims(head)
  if (claims !== null) {
    const iss = typeof claims.iss === 'string' ? claims.iss : ''
    const sub = typeof claims.sub === 'string' ? claims.sub : ''
    metadata.set('istio_authn', { 'request.auth.principal': `${iss}/${sub}`, 'request.auth.claims': claims })
  }
  const input: RbacInput = {
    head,
    sourceIp: address,
    downstreamSocket: peerSocket(peer, address, address, port) as RbacInput['downstreamSocket'],
    metadata: (ns) => metadata.get(ns),
  }
  let allowed = true
  let deciding: string | null = null
  for (const f of compileHttpFilters(rbacFilters as HttpFilter[], stats)) {
    if (!(f instanceof RbacFilterFactory) || f.engine === null) continue
    const engine = f.engine
    const action = engine.action === 0 ? 'ALLOW' : engine.action === 1 ? 'DENY' : 'AUDIT'
    const verdicts = engine.explain(input)
    const policy = engine.matchedPolicy(input)
    const ok = engine.allows(policy)
    const children: Step[] = verdicts.map((p) => ({
      ok: p.permission && p.principal,
      text: `${p.name}${policyOrigin(p.name) === null ? '' : ` (${policyOrigin(p.name)})`}: ${p.permission && p.principal ? 'matches' : `does not match (${!p.permission ? 'its to/when' : 'its from'} conditions)`}`,
    }))
    const verdict =
      action === 'AUDIT'
        ? `audit: ${policy ?? 'no policy'} matched (logged only)`
        : ok
          ? action === 'ALLOW'
            ? `allowed by ${policy}`
            : 'no DENY policy matches: passes'
          : action === 'ALLOW'
            ? 'denied: no ALLOW policy matches'
            : `denied by ${policy}`
    dstep.children!.push({
      ok: action === 'AUDIT' ? null : ok,
      text: `RBAC ${f.name} (${action}): ${verdict}`,
      children,
    })
    if (!ok && allowed) {
      allowed = false
      deciding = policy
    } else if (ok && allowed && policy !== null && action === 'ALLOW') deciding = policy
  }
  w.out.authorization.push({
    workload: dest.name,
    allowed,
    policy: deciding,
    origin: deciding === null ? null : policyOrigin(deciding),
  })
}

/** The payload of a bearer token, read without verification (the JWT filter verifies; explain only reads claims). */
function bearerClaims(head: RequestHead): Record<string, unknown> | null {
  const auth = head.headers.get('authorization')
  if (auth === undefined || !auth.startsWith('Bearer ')) return null
  const parts = auth.slice(7).split('.')
  if (parts.length !== 3) return null
  try {
    const payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as unknown
    return payload !== null && typeof payload === 'object' ? (payload as Record<string, unknown>) : null
  } catch {
    return null
  }
}
