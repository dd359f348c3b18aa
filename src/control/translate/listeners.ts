/**
 * Listeners and route configurations (LDS and RDS) for the three kinds of client. Stat prefixes follow Istio's
 * (`inbound_0.0.0.0_9080`, `outbound_0.0.0.0_8080` on gateways), so Envoy dashboards read the same. Trust is set as
 * Istio sets it: gateways take the client address from the connection (`use_remote_address: true`, with
 * `xff_num_trusted_hops` from the gateway topology's `numTrustedProxies`), so clients' `x-forwarded-*`, `x-envoy-*`
 * and `x-request-id` are sanitized; sidecars, inbound and outbound, trust their mesh (`use_remote_address: false`).
 *
 * - **Sidecar, Envoy-style** (`generator: 'envoy'`). Loom runs each workload with its sidecar as the workload's
 *   HTTP proxy (HTTP_PROXY), so outbound traffic arrives on one listener, `outbound_http` on 127.0.0.1
 *   (port: node metadata `OUTBOUND_PORT`, default 15001), and is routed by Host through the RDS route configuration
 *   `outbound`: one virtual host per service port. Inbound, one listener per service port of the proxy's own
 *   workload forwards to the application on 127.0.0.1 (see `inboundListeners` for the metadata contract).
 * - **Gateway** (`node.kind === 'gateway'`): one listener per port of the Gateway servers that select the proxy,
 *   with route configuration `http.<port>` (plain HTTP) or `https.<port>.<portName>.<gateway>.<namespace>` (one
 *   filter chain per TLS-terminating server).
 * - **Proxyless gRPC** (`generator: 'grpc'`): an API listener per service port and name a client may dial
 *   (`reviews.default.svc.cluster.local:9080`, `reviews:9080`...), each pointing at the route configuration
 *   `outbound|<port>||<host>`.
 */
import type { GatewaySpec, Resource, VirtualServiceSpec } from '../../api/index.js'
import { TypeUrls } from '../../config/type-urls.js'
import { hostSubsetOf, intersectHosts, isWildcard, labelsMatch, shortNames } from '../registry/hostname.js'
import { isHttp2Protocol, isHttpProtocol, type Service, type ServiceEndpoint } from '../registry/registry.js'
import { attachGlobalRateLimits, GLOBAL_RATELIMIT } from '../ratelimit/translate.js'
import { accessLogField } from './access-log.js'
import { jwtAuthnFilters } from './authn.js'
import { authzHttpFilters, authzNetworkFilters } from './authz.js'
import { ADS, http2Options, loadAssignment } from './clusters.js'
import { credentialCaSdsName, credentialSdsName } from './gateway-credentials.js'
import {
  INBOUND_XFCC,
  inboundMutualTls,
  METADATA_EXCHANGE,
  peerAuthenticationMode,
  sdsSecret,
  withoutTlsMode,
} from './mtls.js'
import type { Server } from './types.js'
import { defaultRoute, isCatchAll, type RouteContext, virtualServiceGateways, virtualServiceRoutes } from './routes.js'
import { egressAllows, type PathNormalization, type Scope } from './scope.js'
import { clusterName, cmp, type Json } from './util.js'
import { type PeerParts, partsOf, type ServicePartCache, virtualServiceDestinations } from './incremental.js'
import { collectorCluster, collectorOf, requestIdExtension, type TelemetrySide, tracingConfig } from './telemetry.js'

export const OUTBOUND_LISTENER = 'outbound_http'
export const OUTBOUND_ROUTE = 'outbound'
export const DEFAULT_OUTBOUND_PORT = 15001
/** the port iptables sends captured inbound connections to (Istio's 15006) */
export const DEFAULT_INBOUND_CAPTURE_PORT = 15006
/** Istio's listeners and clusters of traffic capture */
export const VIRTUAL_OUTBOUND = 'virtualOutbound'
export const VIRTUAL_INBOUND = 'virtualInbound'
export const PASSTHROUGH_CLUSTER = 'PassthroughCluster'
export const BLACKHOLE_CLUSTER = 'BlackHoleCluster'

/**
 * Whether the node's traffic is captured by iptables (node metadata `INTERCEPTION_MODE: REDIRECT`, Istio's key, as
 * `loom up --transparent` sets it): then the sidecar gets Istio's virtual listeners instead of the HTTP proxy
 * listener, and its inbound listeners bind nothing.
 */
export function captured(metadata: NodeMetadata): boolean {
  return metadata.INTERCEPTION_MODE === 'REDIRECT'
}

const HCM_FILTER = 'envoy.filters.network.http_connection_manager'
const TLS_INSPECTOR = 'envoy.filters.listener.tls_inspector'
const ROUTER: Json = { name: 'envoy.filters.http.router', typed_config: { '@type': TypeUrls.router } }
/**
 * Istio's fault filter, before the router: it does nothing on its own (no delay, no abort) and acts only on routes
 * whose `typed_per_filter_config` carries a VirtualService `fault`.
 */
const FAULT: Json = { name: 'envoy.filters.http.fault', typed_config: { '@type': TypeUrls.fault } }
/**
 * Istio's CORS filter, after the fault filter and before the router (Istio's order: fault, cors, ..., router): it
 * acts only on routes whose `typed_per_filter_config` carries a VirtualService `corsPolicy`.
 */
const CORS: Json = { name: 'envoy.filters.http.cors', typed_config: { '@type': TypeUrls.cors } }
/**
 * Istio's stats filter (`istio.stats`), just before the router as in Istio: Istio's standard metrics and the HTTP
 * metadata exchange, its role from the listener's `traffic_direction`. Outbound (sidecar outbound, gateways) it
 * takes the destination service from the cluster only (`disable_host_header_fallback`, as Istio's); inbound it may
 * fall back to the authority.
 */
const STATS_INBOUND: Json = { name: 'istio.stats', typed_config: { '@type': TypeUrls.istioStats } }
const STATS_OUTBOUND: Json = {
  name: 'istio.stats',
  typed_config: { '@type': TypeUrls.istioStats, disable_host_header_fallback: true },
}
/** The network stats filter before a sidecar's tcp_proxy (inbound and egress): Istio's TCP metrics. */
const STATS_TCP: Json = { name: 'istio.stats', typed_config: { '@type': TypeUrls.istioStats } }

export interface ListenerSet {
  listeners: Json[]
  routes: Json[]
  /** clusters the listeners need besides the outbound ones (inbound STATIC clusters) */
  clusters: Json[]
}

/** Node metadata Loom reads (string values as Envoy's bootstrap would carry them, or numbers / objects). */
export type NodeMetadata = Record<string, unknown>

/**
 * Istio's mesh-wide `pathNormalization` as connection manager fields, on every connection manager it generates
 * (sidecar inbound and outbound, gateways): the escaped-slash action is always written, `normalize_path` too.
 */
const PATH_NORMALIZATION: Record<PathNormalization, Json> = {
  NONE: { normalize_path: false, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' },
  BASE: { normalize_path: true, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' },
  MERGE_SLASHES: { normalize_path: true, merge_slashes: true, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' },
  DECODE_AND_MERGE_SLASHES: {
    normalize_path: true,
    merge_slashes: true,
    path_with_escaped_slashes_action: 'UNESCAPE_AND_FORWARD',
  },
}

/**
 * Every connection manager: the mesh's path normalization, and `stream_idle_timeout` 0 (disabled), as Istio sets
 * it on sidecars and gateways alike (long-lived gRPC and websocket streams are not cut; a route's `idle_timeout`
 * still applies), and the proxy's access log (access-log.ts). `authFilters` run first, before the fault and CORS filters, in Istio's inbound order:
 * authentication (RequestAuthentication's JWT filter), then authorization (the RBAC filters); `extraFilters` go
 * after CORS, then Istio's stats filter (`stats`: its inbound or outbound form) and the router.
 */
function hcm(
  scope: Scope,
  statPrefix: string,
  routing: Json,
  stats: Json,
  extraFilters: Json[] = [],
  authFilters: Json[] = [],
  tracing: Json | null = null,
): Json {
  return {
    name: HCM_FILTER,
    typed_config: {
      '@type': TypeUrls.hcm,
      stat_prefix: statPrefix,
      ...routing,
      ...PATH_NORMALIZATION[scope.mesh.pathNormalization],
      stream_idle_timeout: '0s',
      ...accessLogField(scope, stats === STATS_INBOUND ? 'server' : 'client'),
      http_filters: [explainFilter(scope, statPrefix), ...authFilters, FAULT, CORS, ...extraFilters, stats, ROUTER],
      ...(tracing ?? {}),
    },
  }
}

/**
 * The Telemetry API's tracing for one side of the proxy (telemetry.ts): the connection manager's `tracing` and
 * `request_id_extension`, or null when that side does not trace.
 */
function tracingFields(scope: Scope, side: TelemetrySide, metadata: NodeMetadata): Json | null {
  const eff = scope.telemetry().tracing[side]
  // the workload's name: node metadata WORKLOAD_NAME, else the node id's `<workload>.<namespace>` part
  const ns = scope.node.namespace
  const fromId = scope.node.id.split('~')[2] ?? ''
  const named = typeof metadata.WORKLOAD_NAME === 'string' ? metadata.WORKLOAD_NAME : ''
  const workload = named !== '' ? named : fromId.endsWith(`.${ns}`) ? fromId.slice(0, -ns.length - 1) : ''
  const tracing = tracingConfig(eff, scope.mesh.extensionProviders, {
    namespace: ns,
    labels: scope.node.labels,
    workload,
    meshId: typeof metadata.MESH_ID === 'string' && metadata.MESH_ID !== '' ? metadata.MESH_ID : scope.mesh.trustDomain,
    clusterId:
      typeof metadata.CLUSTER_ID === 'string' && metadata.CLUSTER_ID !== '' ? metadata.CLUSTER_ID : 'Kubernetes',
  })
  return tracing === null ? null : { tracing, request_id_extension: requestIdExtension(eff!) }
}

/**
 * The collector's cluster, for a proxy that traces on either side and has no cluster for the collector's host (a
 * host that is not a service it sees); empty otherwise.
 */
function collectorClusters(scope: Scope, traced: boolean): Json[] {
  if (!traced) return []
  const names = new Set<string>()
  const t = scope.telemetry().tracing
  for (const eff of [t.client, t.server]) if (eff !== null && !eff.disableSpanReporting) names.add(eff.providers[0]!)
  const out: Json[] = []
  for (const name of names) {
    const c = collectorOf(scope.mesh.extensionProviders, name)
    if (c !== null && scope.service(c.hostname) === undefined && !out.some((x) => x.name === c.cluster))
      out.push(collectorCluster(c, scope.mesh.connectTimeout))
  }
  return out
}

/** Istio's span name of a route (`decorator.operation`): `<host>:<port><path>` of its one cluster, or `<vhost><path>`. */
function routeOperation(route: Json, vhostName: string): string {
  const m = (route.match ?? {}) as Json
  const path =
    typeof m.prefix === 'string'
      ? `${m.prefix}*`
      : typeof m.path === 'string'
        ? m.path
        : typeof (m.safe_regex as Json | undefined)?.regex === 'string'
          ? ((m.safe_regex as Json).regex as string)
          : '/*'
  const cluster = (route.route as Json | undefined)?.cluster
  if (typeof cluster === 'string') {
    const parts = cluster.split('|')
    if (parts.length === 4 && parts[0] === 'outbound') return `${parts[3]}:${parts[1]}${path}`
  }
  return `${vhostName}${path}`
}

/** Adds Istio's `decorator` (the span name) to every route of a route configuration. */
function decorateRoutes(config: Json): Json {
  // new objects: a route configuration's virtual hosts may be shared with proxies that do not trace
  const vhosts = ((config.virtual_hosts ?? []) as Json[]).map((vh) => ({
    ...vh,
    routes: ((vh.routes ?? []) as Json[]).map((r) => ({
      ...r,
      decorator: { operation: routeOperation(r, vh.name as string) },
    })),
  }))
  return config.virtual_hosts === undefined ? config : { ...config, virtual_hosts: vhosts }
}

/**
 * Loom's decision record filter, first in every connection manager: who may send `x-loom-explain` (MeshConfig
 * `explainFrom`); from anyone else the header is removed. A sidecar's outbound side serves its own application:
 * allowed when the workload's identity (principal or namespace) is listed. Its inbound side sees the calling
 * workload's certificate: the listed principals and namespaces. A gateway's clients: the listed address ranges,
 * and the principals and namespaces for clients with certificates.
 */
function explainFilter(scope: Scope, statPrefix: string): Json {
  const from = scope.mesh.explainFrom
  const node = scope.node
  const td = scope.mesh.trustDomain
  const side = node.kind === 'gateway' ? 'gateway' : statPrefix.startsWith('inbound_') ? 'inbound' : 'outbound'
  const principals: Json[] = []
  if (side === 'outbound') {
    const own = `${td}/ns/${node.namespace}/sa/${node.serviceAccount}`
    if ((from.principals ?? []).includes(own) || (from.namespaces ?? []).includes(node.namespace))
      principals.push({ any: true })
  } else {
    for (const p of from.principals ?? [])
      principals.push({ authenticated: { principal_name: { exact: `spiffe://${p}` } } })
    for (const ns of from.namespaces ?? [])
      principals.push({
        authenticated: { principal_name: { safe_regex: { regex: `spiffe://[^/]+/ns/${escapeRegex(ns)}/sa/[^/]+` } } },
      })
    if (side === 'gateway')
      for (const b of from.ipBlocks ?? []) {
        const [address, len] = b.split('/')
        const prefix = len === undefined ? (address!.includes(':') ? 128 : 32) : Number(len)
        principals.push({ remote_ip: { address_prefix: address, prefix_len: prefix } })
      }
  }
  // the proxy adds its own name; the outbound part is shared by the proxies of one namespace (translate.ts)
  const cfg: Json = { '@type': TypeUrls.explain, label: side }
  if (principals.length > 0) cfg.principals = principals
  return { name: 'loom.filters.http.explain', typed_config: cfg }
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/**
 * A gateway's connection managers face clients nobody vouches for: a request head must arrive whole within 10 s
 * (`request_headers_timeout`), else 408 and the connection is closed. Istio sets no headers timeout (Envoy's default
 * is none); Loom's is its own choice for an edge, long enough for a slow mobile client's head (a few KiB) and short
 * enough that a slowloris client holds a connection for 10 s, not for as long as it trickles.
 */
export const GATEWAY_REQUEST_HEADERS_TIMEOUT = '10s'

/** A sidecar's connection managers, inbound and outbound: the mesh's forwarding headers are trusted (Istio's). */
const SIDECAR_TRUST: Json = { use_remote_address: false }

/**
 * A gateway's connection managers: the client address is the connection's peer, or with `numTrustedProxies` N the
 * Nth address from the right of `x-forwarded-for` (Istio's gateway topology). The count comes from the node
 * metadata `PROXY_CONFIG.gatewayTopology.numTrustedProxies` (what Istio's agent sends, `proxy.istio.io/config`
 * included), else the mesh's `defaultConfig`; 0 is left out, as on the wire. With the edge's headers timeout (above).
 */
function gatewayTrust(scope: Scope, metadata: NodeMetadata): Json {
  let proxyConfig: unknown = metadata.PROXY_CONFIG
  if (typeof proxyConfig === 'string') {
    try {
      proxyConfig = JSON.parse(proxyConfig)
    } catch {
      proxyConfig = undefined
    }
  }
  const fromNode = (proxyConfig as { gatewayTopology?: { numTrustedProxies?: unknown } } | undefined)?.gatewayTopology
    ?.numTrustedProxies
  const n = typeof fromNode === 'number' || typeof fromNode === 'string' ? Number(fromNode) : Number.NaN
  const hops = Number.isInteger(n) && n >= 0 && n <= 0xffffffff ? n : scope.mesh.numTrustedProxies
  const edge = { use_remote_address: true, request_headers_timeout: GATEWAY_REQUEST_HEADERS_TIMEOUT }
  return hops > 0 ? { ...edge, xff_num_trusted_hops: hops } : edge
}

function rds(name: string): Json {
  return { rds: { config_source: ADS, route_config_name: name } }
}

function socketAddress(address: string, port: number): Json {
  return { socket_address: { address, port_value: port } }
}

function routeContext(scope: Scope, gatewayNames: ReadonlySet<string>, isTls: boolean): RouteContext {
  return {
    generator: scope.node.generator,
    proxyLabels: scope.node.labels,
    proxyNamespace: scope.node.namespace,
    gatewayNames,
    isTls,
    resolve: (h, ns) => scope.resolve(h, ns),
    service: (fqdn) => scope.service(fqdn),
    hashPolicy: (fqdn, subset, port) => scope.hashPolicy(fqdn, subset, port),
  }
}

// === sidecar outbound ===

/** A service port's virtual host (or the routes the gRPC route configuration gets). */
interface ServiceRoutes {
  service: Service
  port: number
  routes: Json[]
  /** the VirtualService the routes came from, if any */
  vs: Resource<VirtualServiceSpec> | undefined
}

/**
 * Routes for every HTTP port of every service the proxy sees. A service's VirtualService is the first (in config
 * order) bound to `mesh` that names its host exactly, else the one with the most specific wildcard host. A
 * VirtualService whose rules yield no route for the port (all matched away) leaves the default route.
 */
function serviceRoutes(scope: Scope, parts?: ServicePartCache, peers?: PeerParts): ServiceRoutes[] {
  const ctx = routeContext(scope, new Set(['mesh']), false)
  // exact host → the first VirtualService (config order) naming it; wildcard hosts are checked only on a miss (the
  // same for every proxy of a namespace without a Sidecar resource)
  const { exact, wildcards } = scope.perNamespace('mesh-vs-index', () => {
    const exact = new Map<string, Resource<VirtualServiceSpec>>()
    const wildcards: [Resource<VirtualServiceSpec>, string][] = []
    for (const v of scope.virtualServices()) {
      if (!virtualServiceGateways(v).includes('mesh') || !scope.sidecarAllowsVirtualService(v)) continue
      for (const h of scope.virtualServiceHosts(v)) {
        if (isWildcard(h)) wildcards.push([v, h])
        else if (!exact.has(h)) exact.set(h, v)
      }
    }
    return { exact, wildcards }
  })
  const memo = new Map<string, Json[]>()
  const out: ServiceRoutes[] = []
  for (const svc of scope.routeServices) {
    // kept from the last generation, else built by a peer group in this one
    const kept = parts?.get(svc.hostname)
    const have = kept?.routes !== undefined ? { routes: kept.routes, deps: kept.deps } : peers?.routes.get(svc.hostname)
    if (have !== undefined) {
      out.push(...have.routes)
      if (parts !== undefined && kept?.routes === undefined) {
        const entry = partsOf(parts, svc.hostname)
        entry.routes = have.routes
        if (have.deps !== undefined) entry.deps = have.deps
      }
      if (peers !== undefined && !peers.routes.has(svc.hostname)) peers.routes.set(svc.hostname, have)
      continue
    }
    const first = out.length
    let vs = exact.get(svc.hostname)
    if (vs === undefined) {
      let bestLen = -1
      for (const [v, h] of wildcards) {
        if (isWildcard(h) && hostSubsetOf(svc.hostname, h) && h.length > bestLen) {
          vs = v
          bestLen = h.length
        }
      }
    }
    for (const p of svc.ports) {
      if (!isHttpProtocol(p.protocol)) continue
      let routes: Json[] = []
      if (vs !== undefined) {
        const key = `${vs.metadata.namespace}/${vs.metadata.name}|${p.number}`
        if (!memo.has(key)) memo.set(key, virtualServiceRoutes(vs, p.number, ctx))
        routes = memo.get(key)!
      }
      const fromVs = routes.length > 0
      if (!fromVs) {
        const cluster = clusterName('outbound', p.number, '', svc.hostname)
        routes = [defaultRoute(cluster, scope.hashPolicy(svc.hostname, '', p.number), scope.node.generator)]
      }
      out.push({ service: svc, port: p.number, routes, vs: fromVs ? vs : undefined })
    }
    if (parts !== undefined || peers !== undefined) {
      const routes = out.slice(first)
      // the routes read the destinations' services and DestinationRules (ports, hash policies)
      const deps = vs === undefined ? undefined : virtualServiceDestinations(vs, (h, ns) => scope.resolve(h, ns))
      if (parts !== undefined) {
        const entry = partsOf(parts, svc.hostname)
        entry.routes = routes
        if (deps !== undefined) entry.deps = deps
      }
      peers?.routes.set(svc.hostname, { routes, deps })
    }
  }
  return out
}

/**
 * Domains for a service port. The outbound route configuration serves every port at once, so (as Istio does for
 * its HTTP proxy port) names carry the port, and the bare names only for port 80, the port a client leaves out.
 */
function serviceDomains(hostname: string, port: number, namespace: string, domainSuffix: string, bare: boolean) {
  const out: string[] = []
  for (const n of [hostname, ...shortNames(hostname, namespace, domainSuffix)]) {
    if (bare) out.push(n)
    out.push(`${n}:${port}`)
  }
  return out
}

function newVirtualHost(name: string, domains: string[], routes: Json[]): Json {
  return { name, domains, routes }
}

/**
 * A service port's domains as `serviceDomains` gives them for proxies of one namespace: one array per (namespace,
 * host, port) within a generation, so that a virtual host built from it is found by identity (`sharedVirtualHost`).
 * Never changed once made.
 */
function memoDomains(scope: Scope, hostname: string, port: number): string[] {
  const byHost = scope.perNamespace('service-domains', () => new Map<string, Map<number, string[]>>())
  let byPort = byHost.get(hostname)
  if (byPort === undefined) byHost.set(hostname, (byPort = new Map()))
  let d = byPort.get(port)
  if (d === undefined) {
    d = serviceDomains(hostname, port, scope.node.namespace, scope.mesh.domainSuffix, port === 80)
    byPort.set(port, d)
  }
  return d
}

const virtualHosts = new WeakMap<Json[], Map<string, Json>>()
const virtualHostsByDomains = new WeakMap<Json[], WeakMap<string[], Json>>()

/**
 * A virtual host, the same object for every proxy that has it with the same routes (a service's routes are shared
 * by the proxies that differ only in scope, and kept across changes that do not touch them), so the xDS cache hashes
 * and encodes it once. Never changed once made. `domains` as `memoDomains` made it is found by identity (the name is
 * then its host and port), any other list by its names.
 */
function sharedVirtualHost(name: string, domains: string[], routes: Json[], memoized = false): Json {
  if (memoized) {
    let byDomains = virtualHostsByDomains.get(routes)
    if (byDomains === undefined) virtualHostsByDomains.set(routes, (byDomains = new WeakMap()))
    let vh = byDomains.get(domains)
    if (vh === undefined) byDomains.set(domains, (vh = sharedVirtualHost(name, domains, routes)))
    return vh
  }
  let byKey = virtualHosts.get(routes)
  if (byKey === undefined) virtualHosts.set(routes, (byKey = new Map()))
  const key = `${name}\u0000${domains.join('\u0000')}`
  let vh = byKey.get(key)
  if (vh === undefined) byKey.set(key, (vh = { name, domains, routes }))
  return vh
}

/** The outbound HTTP listener and its route configuration. */
export function outboundListener(
  scope: Scope,
  metadata: NodeMetadata,
  parts?: ServicePartCache,
  peers?: PeerParts,
): ListenerSet {
  const port = portValue(metadata.OUTBOUND_PORT) ?? DEFAULT_OUTBOUND_PORT
  const used = new Set<string>()
  // the names not used yet (each taken now): `domains` itself when all of them are new
  const dedupe = (domains: string[]) => {
    let out: string[] | null = null
    for (let i = 0; i < domains.length; i++) {
      const d = domains[i]!
      const k = d.toLowerCase()
      if (used.has(k)) out ??= domains.slice(0, i)
      else {
        used.add(k)
        out?.push(d)
      }
    }
    return out ?? domains
  }
  const vhosts: Json[] = []
  const all = serviceRoutes(scope, parts, peers)
  // rate limits are written into the virtual hosts below: those are then this proxy's own objects
  const shareable = scope.of('GlobalRateLimit').length === 0
  for (const r of all) {
    const names = memoDomains(scope, r.service.hostname, r.port)
    const domains = dedupe(names)
    if (domains.length === 0) continue
    const name = `${r.service.hostname}:${r.port}`
    vhosts.push(
      shareable
        ? sharedVirtualHost(name, domains, r.routes, domains === names)
        : newVirtualHost(name, domains, r.routes),
    )
  }
  // Hosts of the VirtualServices in use that are not services (`bookinfo.example.com`) get the same routes.
  for (const r of all) {
    if (r.vs === undefined) continue
    for (const raw of r.vs.spec?.hosts ?? []) {
      const h = scope.resolve(raw, r.vs.metadata.namespace)
      if (isWildcard(h) || scope.isKnownHost(h)) continue
      const domains = dedupe(r.port === 80 ? [h, `${h}:${r.port}`] : [`${h}:${r.port}`])
      if (domains.length > 0) vhosts.push({ name: `${h}:${r.port}`, domains, routes: r.routes })
    }
  }
  vhosts.sort((a, b) => cmp(a.name as string, b.name as string))
  const limited = attachGlobalRateLimits(
    scope,
    vhosts.map((vhost) => ({ host: (vhost.name as string).replace(/:\d+$/, ''), vhost })),
  )
  const tracing = tracingFields(scope, 'client', metadata)
  const routes: Json = { name: OUTBOUND_ROUTE, virtual_hosts: vhosts, validate_clusters: false }
  const routeSet = [tracing === null ? routes : decorateRoutes(routes)]
  // the listeners and clusters depend on the scope only through the rate limits and (captured) the HTTP ports in
  // it: the proxies of one peer key (alike but for their scopes) share them, one object each for all of them
  const ports = captured(metadata) ? [...new Set(all.map((r) => r.port))].sort((a, b) => a - b) : []
  const shareKey = `${limited}\u0000${ports.join(',')}`
  const shared = peers?.listeners.get(shareKey)
  if (shared !== undefined) return { listeners: shared.listeners, routes: routeSet, clusters: shared.clusters }
  const built = outboundListeners(scope, metadata, port, limited, tracing, ports)
  peers?.listeners.set(shareKey, built)
  return { listeners: built.listeners, routes: routeSet, clusters: built.clusters }
}

/** The outbound listeners and the clusters they name (not the services'): what `outboundListener` shares. */
function outboundListeners(
  scope: Scope,
  metadata: NodeMetadata,
  port: number,
  limited: boolean,
  tracing: Json | null,
  ports: number[],
): { listeners: Json[]; clusters: Json[] } {
  const filters = limited ? [GLOBAL_RATELIMIT] : []
  const listener: Json = {
    name: OUTBOUND_LISTENER,
    address: socketAddress('127.0.0.1', port),
    traffic_direction: 'OUTBOUND',
    filter_chains: [
      {
        filters: [
          hcm(
            scope,
            OUTBOUND_LISTENER,
            { ...rds(OUTBOUND_ROUTE), ...SIDECAR_TRUST },
            STATS_OUTBOUND,
            filters,
            [],
            tracing,
          ),
        ],
      },
    ],
  }
  if (captured(metadata)) {
    const hcmFilter = (listener.filter_chains as Json[])[0]!.filters as Json[]
    return {
      listeners: [virtualOutbound(scope, port), ...ports.map((p) => capturedHttpListener(scope, p, hcmFilter))],
      clusters: [
        ...passthroughClusters(scope),
        ...collectorClusters(scope, tracing !== null || tracingFields(scope, 'server', metadata) !== null),
      ],
    }
  }
  return {
    listeners: [listener, ...egressTcpListeners(scope, port)],
    // the collector's cluster for either side's spans (the inbound part is built per workload, this once)
    clusters: collectorClusters(scope, tracing !== null || tracingFields(scope, 'server', metadata) !== null),
  }
}

/**
 * Istio's `virtualOutbound` for a captured sidecar: 0.0.0.0:`port`, where iptables sends every outbound TCP
 * connection. `use_original_dst` hands a connection to the listener of its original destination port (an HTTP
 * service port: `capturedHttpListener`); any other goes out unchanged to where it was going (`PassthroughCluster`,
 * Istio's `outboundTrafficPolicy: ALLOW_ANY`).
 */
function virtualOutbound(scope: Scope, port: number): Json {
  return {
    name: VIRTUAL_OUTBOUND,
    address: socketAddress('0.0.0.0', port),
    use_original_dst: true,
    traffic_direction: 'OUTBOUND',
    filter_chains: [{ name: 'PassthroughFilterChain', filters: [tcpProxy(scope, PASSTHROUGH_CLUSTER, 'client')] }],
  }
}

/**
 * Istio's `0.0.0.0_<port>` for a captured sidecar (`bind_to_port: false`: it takes what `virtualOutbound` hands
 * it): protocol sniffing as Istio's, TLS (the TLS inspector) passes through to the original destination, anything
 * else is HTTP (HTTP/1 or HTTP/2 by the connection preface) routed by Host through the `outbound` routes.
 */
function capturedHttpListener(scope: Scope, port: number, hcmFilters: Json[]): Json {
  return {
    name: `0.0.0.0_${port}`,
    address: socketAddress('0.0.0.0', port),
    bind_to_port: false,
    traffic_direction: 'OUTBOUND',
    listener_filters: [{ name: TLS_INSPECTOR, typed_config: { '@type': TypeUrls.tlsInspector } }],
    filter_chains: [
      {
        filter_chain_match: { transport_protocol: 'tls' },
        filters: [tcpProxy(scope, PASSTHROUGH_CLUSTER, 'client')],
      },
      { filters: hcmFilters },
    ],
  }
}

/** Istio's PassthroughCluster (to the original destination) and BlackHoleCluster (nowhere). */
function passthroughClusters(scope: Scope): Json[] {
  return [
    {
      name: BLACKHOLE_CLUSTER,
      type: 'STATIC',
      connect_timeout: scope.mesh.connectTimeout,
      load_assignment: { cluster_name: BLACKHOLE_CLUSTER, endpoints: [] },
    },
    {
      name: PASSTHROUGH_CLUSTER,
      type: 'ORIGINAL_DST',
      lb_policy: 'CLUSTER_PROVIDED',
      connect_timeout: scope.mesh.connectTimeout,
    },
  ]
}

/**
 * A Sidecar's egress listeners with a TCP port (any protocol but HTTP's; the egress port's protocol, else the
 * service port's): how a workload reaches a TCP service through its sidecar without traffic capture, as in Istio
 * with `captureMode: NONE`. Each is Istio's listener `<bind>_<port>` on `bind` (default 127.0.0.1, Istio's for a
 * listener without capture; Loom captures nothing, so every captureMode is treated so), with `istio.stats`
 * (reporter `source`) before a tcp_proxy to the cluster `outbound|<port>||<host>` of the first service (by host
 * name) the listener's hosts admit that has the port, as Istio keeps one TCP service per bound port. Not built: a
 * `unix://` bind, a port no such service has, and the port of the outbound HTTP listener (`httpPort`, 127.0.0.1).
 * HTTP egress ports stay on the outbound HTTP listener (their hosts decide what it routes to).
 */
function egressTcpListeners(scope: Scope, httpPort: number): Json[] {
  const out: Json[] = []
  for (const e of scope.sidecar?.spec.egress ?? []) {
    const number = e.port?.number ?? 0
    const bind = e.bind === undefined || e.bind === '' ? '127.0.0.1' : e.bind
    if (number === 0 || bind.startsWith('unix://') || (bind === '127.0.0.1' && number === httpPort)) continue
    const service = scope.services.find(
      (svc) =>
        svc.ports.some((p) => p.number === number) &&
        e.hosts.some((h) => egressAllows(h, svc.namespace, svc.hostname, scope.node.namespace)),
    )
    if (service === undefined) continue
    const protocol = (e.port?.protocol ?? '').toUpperCase() || service.ports.find((p) => p.number === number)!.protocol
    if (isHttpProtocol(protocol) || protocol === 'UDP') continue
    const cluster = clusterName('outbound', number, '', service.hostname)
    out.push({
      name: `${bind}_${number}`,
      address: socketAddress(bind, number),
      traffic_direction: 'OUTBOUND',
      filter_chains: [{ filters: [STATS_TCP, tcpProxy(scope, cluster, 'client')] }],
    })
  }
  return out
}

// === sidecar inbound ===

/**
 * The proxy's own endpoints: the registry's endpoints at the node's IP that belong to its workload: those whose
 * workload the node id names (`sidecar~<ip>~<workload>.<namespace>~...`), else those whose labels the node has (an
 * endpoint without labels matches only a node without labels).
 */
export function ownEndpoints(scope: Scope): { service: Service; endpoint: ServiceEndpoint }[] {
  const node = scope.node
  const idParts = node.id.split('~')
  const workload = idParts.length >= 3 ? idParts[2]! : ''
  const dot = workload.lastIndexOf('.')
  const names = dot > 0 ? [workload.slice(0, dot), workload.slice(dot + 1)] : null
  const named = (e: ServiceEndpoint) =>
    names !== null &&
    (e.source === `workload/${names[1]}/${names[0]}` || e.source === `WorkloadEntry/${names[1]}/${names[0]}`)
  // the sidecar mark is the registry's, not the workload's: a node need not carry it
  const labelled = (e: ServiceEndpoint) => {
    const labels = withoutTlsMode(e.labels)
    return labelsMatch(labels, node.labels) && (Object.keys(labels).length > 0 || Object.keys(node.labels).length === 0)
  }
  const atIp: { service: Service; endpoint: ServiceEndpoint }[] = []
  for (const service of scope.allServices) {
    for (const endpoint of service.endpoints) if (endpoint.address === node.ip) atIp.push({ service, endpoint })
  }
  // Several workloads share an address in local mode: the name, when it matches, decides.
  const byName = atIp.filter((x) => named(x.endpoint))
  return byName.length > 0 ? byName : atIp.filter((x) => labelled(x.endpoint))
}

/**
 * Inbound listeners, one per service port of the proxy's own workload: `inbound|<port>` forwards everything to the
 * STATIC cluster `inbound|<port>||` at 127.0.0.1: an HTTP port (HTTP, HTTP2, GRPC, GRPC-WEB, unnamed) through a
 * connection manager, any other port (TCP, TLS, MONGO, ...; not UDP) through a tcp_proxy (stat prefix the
 * cluster's name, as Istio's) after the AuthorizationPolicies' network RBAC filters. The port's PeerAuthentication mode (mtls.ts) decides its filter
 * chains, as Istio's: STRICT one mTLS chain (`transport_protocol: tls`, client certificates required, validated
 * against `ROOTCA`), PERMISSIVE that chain and a plain-text one (`raw_buffer`), DISABLE one plain-text chain. The
 * connection manager appends the peer's SPIFFE ID to `x-forwarded-client-cert` (`APPEND_FORWARD`, `uri`).
 *
 * Node metadata contract (all optional; port maps are `{ "9080": 15090 }` objects or `"9080:15090,9443:15443"`
 * strings, keyed by service port):
 * - `INBOUND_ADDRESS`: the address inbound listeners bind, default `0.0.0.0`.
 * - `INBOUND_PORTS`: service port → the port the sidecar listens on; default the endpoint's port in the registry
 *   (the port peers dial).
 * - `APP_PORTS`: service port → the port the application listens on at 127.0.0.1; default the endpoint's port.
 *   On one host without traffic capture, give at least one of the two maps so the sidecar and the application do
 *   not both bind the registered port (`loom up` registers the sidecar's inbound port and passes APP_PORTS).
 */
export function inboundListeners(scope: Scope, metadata: NodeMetadata): ListenerSet {
  const address = typeof metadata.INBOUND_ADDRESS === 'string' ? metadata.INBOUND_ADDRESS : '0.0.0.0'
  const inboundPorts = portMap(metadata.INBOUND_PORTS)
  const appPorts = portMap(metadata.APP_PORTS)
  const byPort = new Map<number, { endpoint: ServiceEndpoint; protocol: string; service: Service }>()
  for (const { service, endpoint } of ownEndpoints(scope)) {
    if (byPort.has(endpoint.servicePort)) continue
    const protocol = service.ports.find((p) => p.number === endpoint.servicePort)?.protocol ?? ''
    if (protocol === 'UDP') continue
    byPort.set(endpoint.servicePort, { endpoint, protocol, service })
  }
  const out: ListenerSet = { listeners: [], routes: [], clusters: [] }
  const authn = jwtAuthnFilters(scope)
  const bound = new Set<number>()
  const tracing = tracingFields(scope, 'server', metadata)
  const transparent = captured(metadata)
  if (transparent) {
    // Istio's virtualInbound: iptables sends every inbound connection here; each goes to the inbound listener of
    // its original destination port, and a port the workload does not serve goes nowhere (BlackHoleCluster: the
    // application is reached through its service ports only)
    const capture = portValue(metadata.INBOUND_CAPTURE_PORT) ?? DEFAULT_INBOUND_CAPTURE_PORT
    out.listeners.push({
      name: VIRTUAL_INBOUND,
      address: socketAddress('0.0.0.0', capture),
      use_original_dst: true,
      traffic_direction: 'INBOUND',
      filter_chains: [{ name: 'BlackHoleFilterChain', filters: [tcpProxy(scope, BLACKHOLE_CLUSTER, 'server')] }],
    })
  }
  for (const servicePort of [...byPort.keys()].sort((a, b) => a - b)) {
    const { endpoint, protocol, service } = byPort.get(servicePort)!
    // the port policies name: the workload's own (its targetPort when the registered port is the sidecar's)
    const workloadPort = endpoint.targetPort ?? endpoint.port
    const listenPort = inboundPorts.get(servicePort) ?? endpoint.port
    // Two service ports sent to one workload port (two ServiceEntries, say) share the first one's listener.
    if (bound.has(listenPort)) continue
    bound.add(listenPort)
    const name = `inbound|${servicePort}`
    const cluster = clusterName('inbound', servicePort, '', '')
    const ports = { workloadPort, servicePort, listenPort }
    const filters = isHttpProtocol(protocol)
      ? [
          hcm(
            scope,
            `inbound_${address}_${listenPort}`,
            {
              route_config: inboundRoutes(name, servicePort, cluster, tracing === null ? null : service.hostname),
              ...SIDECAR_TRUST,
              ...INBOUND_XFCC,
            },
            STATS_INBOUND,
            [],
            [...authn, ...authzHttpFilters(scope, ports)],
            tracing,
          ),
        ]
      : [METADATA_EXCHANGE, ...authzNetworkFilters(scope, ports), STATS_TCP, tcpProxy(scope, cluster, 'server')]
    const mode = peerAuthenticationMode(scope, { workloadPort, servicePort })
    const tlsChain = {
      filter_chain_match: { transport_protocol: 'tls' },
      filters,
      transport_socket: inboundMutualTls(!isHttpProtocol(protocol)),
    }
    const plainChain = { filter_chain_match: { transport_protocol: 'raw_buffer' }, filters }
    const listener: Json = { name, address: socketAddress(address, listenPort), traffic_direction: 'INBOUND' }
    if (transparent) listener.bind_to_port = false
    if (mode === 'DISABLE') {
      listener.filter_chains = [{ filters }]
    } else {
      listener.filter_chains = mode === 'STRICT' ? [tlsChain] : [tlsChain, plainChain]
      listener.listener_filters = [{ name: TLS_INSPECTOR, typed_config: { '@type': TypeUrls.tlsInspector } }]
    }
    out.listeners.push(listener)
    const c: Json = {
      name: cluster,
      type: 'STATIC',
      connect_timeout: scope.mesh.connectTimeout,
      lb_policy: 'ROUND_ROBIN',
      metadata: istioServiceMetadata(service),
    }
    if (isHttp2Protocol(protocol)) Object.assign(c, http2Options())
    const appPort = appPorts.get(servicePort) ?? endpoint.port
    c.load_assignment = loadAssignment(cluster, [{ address: '127.0.0.1', port: appPort, locality: '', weight: 1 }])
    out.clusters.push(c)
  }
  return out
}

/**
 * Istio's cluster metadata naming the cluster's service (`istio.services`): the stats filters read the destination
 * service of inbound traffic from it.
 */
function istioServiceMetadata(service: Service): Json {
  const parts = service.hostname.split('.')
  // a Kubernetes-style host (`reviews.default.svc.<domain>`) is named by its first label, any other by itself
  const name = parts[2] === 'svc' ? parts[0]! : service.hostname
  return {
    filter_metadata: { istio: { services: [{ host: service.hostname, name, namespace: service.namespace }] } },
  }
}

/** An inbound HTTP port's route configuration: everything to the port's inbound cluster. */
function inboundRoutes(name: string, servicePort: number, cluster: string, tracedHost: string | null): Json {
  const route: Json = { name: 'default', match: { prefix: '/' }, route: { cluster, timeout: '0s' } }
  // traced: Istio's span name of the inbound route, the service's host and port
  if (tracedHost !== null) route.decorator = { operation: `${tracedHost}:${servicePort}/*` }
  return {
    name,
    virtual_hosts: [{ name: `inbound|http|${servicePort}`, domains: ['*'], routes: [route] }],
    validate_clusters: false,
  }
}

/**
 * A TCP port's terminal filter: every connection to `cluster` (Istio's stat prefix, the cluster's name), with the
 * proxy's access log of that side.
 */
function tcpProxy(scope: Scope, cluster: string, side: 'server' | 'client'): Json {
  return {
    name: 'envoy.filters.network.tcp_proxy',
    typed_config: { '@type': TypeUrls.tcpProxy, stat_prefix: cluster, cluster, ...accessLogField(scope, side) },
  }
}

function portValue(v: unknown): number | null {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : Number.NaN
  return Number.isInteger(n) && n > 0 && n <= 65535 ? n : null
}

/** `{ "9080": 15090 }` or `"9080:15090,9443:15443"` → Map; malformed entries are skipped. */
export function portMap(v: unknown): Map<number, number> {
  const out = new Map<number, number>()
  const entries: [unknown, unknown][] =
    typeof v === 'string'
      ? v
          .split(',')
          .filter((s) => s.trim() !== '')
          .map((s) => s.split(':') as [string, string])
      : v !== null && typeof v === 'object'
        ? Object.entries(v)
        : []
  for (const [k, val] of entries) {
    const from = portValue(typeof k === 'string' ? k.trim() : k)
    const to = portValue(typeof val === 'string' ? val.trim() : val)
    if (from !== null && to !== null) out.set(from, to)
  }
  return out
}

// === gateways ===

function isHttpServer(s: Server): boolean {
  const p = (s.port?.protocol ?? '').toUpperCase()
  return p === 'HTTP' || p === 'HTTP2' || p === 'GRPC' || p === 'GRPC-WEB'
}

/**
 * An HTTPS server Loom can terminate: SIMPLE or MUTUAL TLS with certificate files, or with a `credentialName`
 * (served over SDS from the control plane's credentials, gateway-credentials.ts).
 */
export function terminatingTls(s: Server): boolean {
  const p = (s.port?.protocol ?? '').toUpperCase()
  const mode = s.tls?.mode ?? 'SIMPLE'
  return (
    p === 'HTTPS' &&
    (mode === 'SIMPLE' || mode === 'MUTUAL') &&
    (credentialOf(s) !== undefined ||
      (typeof s.tls?.serverCertificate === 'string' && typeof s.tls?.privateKey === 'string'))
  )
}

function credentialOf(s: Server): string | undefined {
  const c = s.tls?.credentialName
  return c === undefined || c === '' ? undefined : c
}

interface BoundServer {
  gateway: Resource<GatewaySpec>
  gatewayName: string
  server: Server
}

/** Gateways whose selector matches the proxy's labels, in config order. */
export function selectedGateways(scope: Scope): Resource<GatewaySpec>[] {
  return scope.of<GatewaySpec>('Gateway').filter((g) => labelsMatch(g.spec?.selector ?? {}, scope.node.labels))
}

/**
 * Listeners and route configurations for a gateway proxy. Node metadata (optional): `GATEWAY_ADDRESS` (default
 * `0.0.0.0`) and `GATEWAY_PORTS` (Gateway server port → the port to bind, as `INBOUND_PORTS`), for hosts where the
 * server port is taken or privileged (`loom up` maps 8080 to a free local port).
 */
export function gatewayListeners(scope: Scope, metadata: NodeMetadata = {}): ListenerSet {
  const trust = gatewayTrust(scope, metadata)
  const bindAddress = typeof metadata.GATEWAY_ADDRESS === 'string' ? metadata.GATEWAY_ADDRESS : '0.0.0.0'
  const bindPorts = portMap(metadata.GATEWAY_PORTS)
  const byPort = new Map<number, BoundServer[]>()
  for (const gateway of selectedGateways(scope)) {
    const gatewayName = `${gateway.metadata.namespace}/${gateway.metadata.name}`
    for (const server of gateway.spec?.servers ?? []) {
      const port = server.port?.number
      if (typeof port !== 'number' || !(isHttpServer(server) || terminatingTls(server))) continue
      byPort.set(port, [...(byPort.get(port) ?? []), { gateway, gatewayName, server }])
    }
  }
  const out: ListenerSet = { listeners: [], routes: [], clusters: [] }
  const authn = jwtAuthnFilters(scope)
  const tracing = tracingFields(scope, 'client', metadata)
  const routeConfig = (name: string, port: number, servers: BoundServer[], isTls: boolean) => {
    const rc = gatewayRouteConfig(scope, name, port, servers, isTls)
    return tracing === null ? rc : decorateRoutes(rc)
  }
  for (const port of [...byPort.keys()].sort((a, b) => a - b)) {
    const servers = byPort.get(port)!
    const listenPort = bindPorts.get(port) ?? port
    const auth = [...authn, ...authzHttpFilters(scope, { workloadPort: port, listenPort })]
    // A listener is all plain text or all TLS: the first server decides, conflicting ones are left out (as Istio
    // refuses to merge them).
    const tls = terminatingTls(servers[0]!.server)
    const chains: Json[] = []
    if (!tls) {
      const plain = servers.filter((s) => !terminatingTls(s.server))
      const routeName = `http.${port}`
      out.routes.push(routeConfig(routeName, port, plain, false))
      chains.push({
        filters: [
          hcm(scope, `outbound_0.0.0.0_${port}`, { ...rds(routeName), ...trust }, STATS_OUTBOUND, [], auth, tracing),
        ],
      })
    } else {
      for (const s of servers.filter((x) => terminatingTls(x.server))) {
        const routeName = `https.${port}.${s.server.port?.name ?? ''}.${s.gateway.metadata.name}.${s.gateway.metadata.namespace}`
        out.routes.push(routeConfig(routeName, port, [s], true))
        const chain: Json = {}
        const sni = serverHosts(s.server).filter((h) => h !== '*')
        if (sni.length > 0) chain.filter_chain_match = { server_names: sni }
        // Istio's stat prefix for a TLS server is its name, else the route name.
        const prefix = s.server.name ?? routeName
        chain.filters = [hcm(scope, prefix, { ...rds(routeName), ...trust }, STATS_OUTBOUND, [], auth, tracing)]
        chain.transport_socket = { name: 'envoy.transport_sockets.tls', typed_config: downstreamTls(s.server) }
        chains.push(chain)
      }
    }
    out.listeners.push({
      name: `0.0.0.0_${port}`,
      address: socketAddress(bindAddress, listenPort),
      traffic_direction: 'OUTBOUND',
      filter_chains: chains,
    })
  }
  out.clusters.push(...collectorClusters(scope, tracing !== null))
  return out
}

/** Server hosts without their `namespace/` prefix. */
function serverHosts(s: Server): string[] {
  return (s.hosts ?? []).map((h) => {
    const i = h.indexOf('/')
    return (i < 0 ? h : h.slice(i + 1)).toLowerCase()
  })
}

/** The server's hosts a VirtualService of `vsNamespace` may bind: `ns/host` limits a host to one namespace. */
function serverHostsFor(s: Server, vsNamespace: string, gatewayNamespace: string): string[] {
  const out: string[] = []
  for (const raw of s.hosts ?? []) {
    const i = raw.indexOf('/')
    const ns = i < 0 ? '*' : raw.slice(0, i)
    if (ns === '*' || (ns === '.' ? gatewayNamespace : ns) === vsNamespace)
      out.push((i < 0 ? raw : raw.slice(i + 1)).toLowerCase())
  }
  return out
}

const TLS_VERSIONS: Record<string, string> = { TLS_AUTO: 'TLS_AUTO', TLSV1_2: 'TLSv1_2', TLSV1_3: 'TLSv1_3' }

function downstreamTls(s: Server): Json {
  const t = s.tls!
  const credential = credentialOf(s)
  const common: Json =
    credential !== undefined
      ? { tls_certificate_sds_secret_configs: [sdsSecret(credentialSdsName(credential))] }
      : {
          tls_certificates: [
            { certificate_chain: { filename: t.serverCertificate }, private_key: { filename: t.privateKey } },
          ],
        }
  if (t.mode === 'MUTUAL' && credential !== undefined) {
    common.validation_context_sds_secret_config = sdsSecret(credentialCaSdsName(credential))
  } else if (t.mode === 'MUTUAL' && typeof t.caCertificates === 'string') {
    common.validation_context = { trusted_ca: { filename: t.caCertificates } }
  }
  const params: Json = {}
  const min = TLS_VERSIONS[t.minProtocolVersion ?? '']
  const max = TLS_VERSIONS[t.maxProtocolVersion ?? '']
  if (min !== undefined) params.tls_minimum_protocol_version = min
  if (max !== undefined) params.tls_maximum_protocol_version = max
  if (Object.keys(params).length > 0) common.tls_params = params
  const out: Json = { '@type': TypeUrls.downstreamTls, common_tls_context: common }
  if (t.mode === 'MUTUAL') out.require_client_certificate = true
  return out
}

/**
 * A gateway route configuration: for each server, the VirtualServices bound to its gateway (and exported to the
 * gateway's namespace); a virtual host per host in both the server's and the VirtualService's hosts (the more
 * specific name of each overlapping pair). Several VirtualServices for one host merge, catch-all routes last.
 */
function gatewayRouteConfig(scope: Scope, name: string, port: number, servers: BoundServer[], isTls: boolean): Json {
  const vhosts = new Map<string, { routes: Json[]; redirect: boolean }>()
  const vss = scope.virtualServices()
  for (const { gateway, gatewayName, server } of servers) {
    const ctx = routeContext(scope, new Set([gatewayName]), isTls)
    for (const vs of vss) {
      if (!virtualServiceGateways(vs).includes(gatewayName)) continue
      const vsHosts = (vs.spec?.hosts ?? []).map((h) => scope.resolve(h, vs.metadata.namespace))
      const hosts = intersectHosts(serverHostsFor(server, vs.metadata.namespace, gateway.metadata.namespace), vsHosts)
      if (hosts.length === 0) continue
      const routes = virtualServiceRoutes(vs, port, ctx)
      if (routes.length === 0) continue
      for (const h of hosts) {
        const vh = vhosts.get(h)
        if (vh === undefined) vhosts.set(h, { routes: [...routes], redirect: false })
        else vh.routes.push(...routes)
      }
    }
    if (server.tls?.httpsRedirect === true) {
      for (const h of serverHosts(server)) {
        const vh = vhosts.get(h)
        if (vh === undefined) vhosts.set(h, { routes: [], redirect: true })
        else vh.redirect = true
      }
    }
  }
  const virtualHosts: Json[] = []
  for (const [host, vh] of vhosts) {
    // Envoy's require_tls: ALL, which Loom's proxy does not have, is a redirect of every request to https.
    const routes = vh.redirect
      ? [{ match: { prefix: '/' }, redirect: { https_redirect: true, response_code: 'MOVED_PERMANENTLY' } }]
      : [...vh.routes.filter((r) => !isCatchAll(r)), ...vh.routes.filter(isCatchAll)]
    virtualHosts.push({ name: `${host}:${port}`, domains: host === '*' ? ['*'] : [host, `${host}:${port}`], routes })
  }
  virtualHosts.sort((a, b) => cmp(a.name as string, b.name as string))
  if (virtualHosts.length === 0) virtualHosts.push({ name: `blackhole:${port}`, domains: ['*'], routes: [] })
  return { name, virtual_hosts: virtualHosts, validate_clusters: false }
}

// === proxyless gRPC ===

/**
 * For each HTTP service port: API listeners under every name a client may use with the port, and the route
 * configuration `outbound|<port>||<host>` they share, with one virtual host for the service.
 */
export function grpcListeners(scope: Scope): ListenerSet {
  const out: ListenerSet = { listeners: [], routes: [], clusters: [] }
  for (const r of serviceRoutes(scope)) {
    const host = r.service.hostname
    const routeName = clusterName('outbound', r.port, '', host)
    const names = [host, ...shortNames(host, scope.node.namespace, scope.mesh.domainSuffix)]
    for (const n of names) {
      out.listeners.push({
        name: `${n}:${r.port}`,
        api_listener: {
          api_listener: {
            '@type': TypeUrls.hcm,
            stat_prefix: `${n}:${r.port}`,
            ...rds(routeName),
            http_filters: [ROUTER],
          },
        },
      })
    }
    const domains = names.flatMap((n) => [`${n}:${r.port}`, n])
    out.routes.push({
      name: routeName,
      virtual_hosts: [{ name: `${host}:${r.port}`, domains: [...domains, '*'], routes: r.routes }],
      validate_clusters: false,
    })
  }
  out.listeners.sort((a, b) => cmp(a.name as string, b.name as string))
  out.routes.sort((a, b) => cmp(a.name as string, b.name as string))
  return out
}
