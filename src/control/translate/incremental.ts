/**
 * What changed between two translator inputs, and the per-service parts a sidecar's outbound translation keeps
 * across them (BatchTranslator in translate.ts). The result is always what a translation from scratch gives; what
 * is kept is only what the change cannot have touched.
 *
 * The dependency index. An outbound group (the proxies alike in what their outbound config reads: namespace,
 * selected labels, outbound metadata) keeps, per visible service hostname, that service's parts: its clusters and
 * load assignments (per port and subset) and the routes of its HTTP ports' virtual hosts. They are a function of
 * the service itself, the DestinationRule chosen for its host, the VirtualService chosen for its host, and, through
 * that VirtualService's routes, the services and DestinationRules of its destination hosts (ports, hash policies).
 * So an entry depends on hosts: its own, and `deps` (the VirtualService's hosts and destination hosts). Every input
 * maps to the hosts it touches:
 *
 * - a service (registry output; ServiceEntry, WorkloadEntry and registered workloads reach the translator only
 *   through it), by hostname: added, removed or any field changed (endpoints included) touches its hostname;
 * - a VirtualService: its hosts and destination hosts, resolved (short names resolve against the known hosts, so
 *   a resource whose resolved hosts change counts as changed), in the old version and the new; it touches routes
 *   only (`routeHosts`: clusters and load assignments do not read VirtualServices);
 * - a DestinationRule: its host, resolved, old and new;
 * - AuthorizationPolicy and RequestAuthentication: no outbound part; they touch the inbound part of the proxies
 *   of their namespace (all proxies for the root namespace);
 * - Gateway: no sidecar part (gateways are always translated whole);
 * - everything else invalidates everything (`global`): a Sidecar (visibility and egress), PeerAuthentication
 *   (upstream mTLS of every cluster), Telemetry (tracing decorates every route), GlobalRateLimit, any kind not
 *   listed here, a change of mesh config, and a VirtualService or DestinationRule with a wildcard host.
 *
 * A change touches a set of hosts; a service's clusters are dropped when its hostname is touched by a service or
 * DestinationRule change, its routes when its hostname or one of its deps is touched at all; the rest is kept, the
 * same JSON objects (so the xDS cache's memoized hashes and encoded bytes are reused). A group whose
 * hosts (visible services, deps) are not touched, and that sees no touched host newly, is kept whole.
 */
import type { Resource, VirtualServiceSpec } from '../../api/index.js'
import { isWildcard, resolveHost } from '../registry/hostname.js'
import type { Service } from '../registry/registry.js'
import type { LocalityPlan } from './locality.js'
import { resolveMeshConfig } from './scope.js'
import type { MeshConfig } from './scope.js'
import type { Json } from './util.js'

/** A service port's routes as the outbound route configuration uses them (listeners.ts). */
export interface ServicePortRoutes {
  service: Service
  port: number
  routes: Json[]
  vs: Resource<VirtualServiceSpec> | undefined
}

/** One service's outbound parts for one group. */
export interface ServiceParts {
  clusters?: { clusters: Json[]; endpoints: Json[]; localityPlans: LocalityPlan[] }
  /** whether `clusters` has the HTTP ports' clusters (false outside a proxy's scope: TCP ports only) */
  clustersHttp?: boolean
  routes?: ServicePortRoutes[]
  /** hosts other than the service's own whose change invalidates the parts (VirtualService hosts, destinations) */
  deps?: string[]
}

/** Per-service parts by hostname. */
export type ServicePartCache = Map<string, ServiceParts>

/**
 * The parts that the groups of one generation which differ only in their scope share: a service's clusters and
 * routes read the group's key (namespace, selected labels, metadata), never its scope, except whether the host's
 * HTTP ports are in it. So each is built once per generation and key, and every such group holds the same objects
 * (and the xDS cache hashes and encodes them once).
 */
export interface PeerParts {
  /** clusters by hostname: [0] with the host outside the scope (its TCP ports only), [1] with it in */
  clusters: [Map<string, NonNullable<ServiceParts['clusters']>>, Map<string, NonNullable<ServiceParts['clusters']>>]
  routes: Map<string, { routes: ServicePortRoutes[]; deps: string[] | undefined }>
  /** the outbound listeners and their own clusters, by what of the scope they read (listeners.ts) */
  listeners: Map<string, { listeners: Json[]; clusters: Json[] }>
}

export function newPeerParts(): PeerParts {
  return { clusters: [new Map(), new Map()], routes: new Map(), listeners: new Map() }
}

export function partsOf(cache: ServicePartCache, hostname: string): ServiceParts {
  let p = cache.get(hostname)
  if (p === undefined) cache.set(hostname, (p = {}))
  return p
}

/** A VirtualService's hosts and the hosts of its HTTP destinations and mirrors, resolved. */
export function virtualServiceDestinations(
  vs: Resource<VirtualServiceSpec>,
  resolve: (host: string, namespace: string) => string,
): string[] {
  const ns = vs.metadata.namespace
  const out = new Set<string>()
  for (const h of vs.spec?.hosts ?? []) out.add(resolve(h, ns))
  for (const http of vs.spec?.http ?? []) {
    for (const d of http.route ?? []) if (d.destination?.host !== undefined) out.add(resolve(d.destination.host, ns))
    if (http.mirror?.host !== undefined) out.add(resolve(http.mirror.host, ns))
    for (const m of http.mirrors ?? []) if (m.destination?.host !== undefined) out.add(resolve(m.destination.host, ns))
  }
  return [...out]
}

/** The kinds whose changes touch only hosts (and, for the inbound kinds, the inbound parts of a namespace). */
const HOST_KINDS = new Set(['VirtualService', 'DestinationRule'])
const INBOUND_ONLY_KINDS = new Set(['AuthorizationPolicy', 'RequestAuthentication'])
/** kinds the sidecar translation does not read (the registry's inputs arrive as services) */
const IGNORED_KINDS = new Set(['ServiceEntry', 'WorkloadEntry', 'WorkloadGroup', 'Gateway'])

/** What a generation's input looks like to the diff. */
export interface Fingerprints {
  /** `kind/namespace/name` → the resource as JSON, with its resolved hosts for the host kinds */
  resources: Map<string, { json: string; hosts: readonly string[]; kind: string; namespace: string }>
  /** `hostname|namespace` → the service as JSON */
  services: Map<string, string>
  mesh: string
}

export function fingerprints(
  resources: readonly Resource[],
  services: readonly Service[],
  meshConfig: MeshConfig | undefined,
): Fingerprints {
  const mesh = resolveMeshConfig(meshConfig)
  const known = new Set(services.map((s) => s.hostname))
  const resolve = (h: string, ns: string) => resolveHost(h, ns, (f) => known.has(f), mesh.domainSuffix)
  const res: Fingerprints['resources'] = new Map()
  for (const r of resources) {
    const ns = r.metadata.namespace
    let hosts: string[] = []
    if (r.kind === 'VirtualService') hosts = virtualServiceDestinations(r as Resource<VirtualServiceSpec>, resolve)
    else if (r.kind === 'DestinationRule') hosts = [resolve(((r.spec as Json | undefined)?.host as string) ?? '', ns)]
    else {
      // other kinds naming hosts (GlobalRateLimit): a change of what they resolve to is a change
      const named = (r.spec as Json | undefined)?.hosts
      if (Array.isArray(named)) hosts = named.filter((h) => typeof h === 'string').map((h) => resolve(h, ns))
    }
    res.set(`${r.kind}/${ns}/${r.metadata.name}`, { json: JSON.stringify(r), hosts, kind: r.kind, namespace: ns })
  }
  const svc = new Map<string, string>()
  for (const s of services) svc.set(`${s.hostname}|${s.namespace}`, JSON.stringify(s))
  return { resources: res, services: svc, mesh: JSON.stringify(mesh) }
}

/** What changed from one generation to the next. */
export interface Change {
  /** why everything is invalidated, or null */
  global: string | null
  /** the hosts whose parts are invalid (a service, a DestinationRule) */
  hosts: Set<string>
  /** the hosts whose routes only are invalid (a VirtualService: clusters do not read it) */
  routeHosts: Set<string>
  /** namespaces whose proxies' inbound parts may change; `all` for every proxy */
  inbound: { all: boolean; namespaces: Set<string> }
}

export function diff(prev: Fingerprints, next: Fingerprints, rootNamespace: string): Change {
  const change: Change = {
    global: null,
    hosts: new Set(),
    routeHosts: new Set(),
    inbound: { all: false, namespaces: new Set() },
  }
  if (prev.mesh !== next.mesh) change.global = 'mesh config'
  const changedResource = (key: string) => {
    const a = prev.resources.get(key)
    const b = next.resources.get(key)
    if (a !== undefined && b !== undefined && a.json === b.json && sameList(a.hosts, b.hosts)) return
    const r = (b ?? a)!
    if (IGNORED_KINDS.has(r.kind)) return
    if (INBOUND_ONLY_KINDS.has(r.kind)) {
      if (r.namespace === rootNamespace) change.inbound.all = true
      else change.inbound.namespaces.add(r.namespace)
      return
    }
    if (!HOST_KINDS.has(r.kind)) {
      change.global ??= r.kind
      return
    }
    const into = r.kind === 'VirtualService' ? change.routeHosts : change.hosts
    for (const h of [...(a?.hosts ?? []), ...(b?.hosts ?? [])]) {
      if (isWildcard(h)) change.global ??= `${r.kind} with a wildcard host`
      into.add(h)
    }
  }
  for (const key of next.resources.keys()) changedResource(key)
  for (const key of prev.resources.keys()) if (!next.resources.has(key)) changedResource(key)
  for (const [key, json] of next.services) if (prev.services.get(key) !== json) change.hosts.add(hostOf(key))
  for (const key of prev.services.keys()) if (!next.services.has(key)) change.hosts.add(hostOf(key))
  if (change.global !== null) change.inbound.all = true
  return change
}

function hostOf(serviceKey: string): string {
  return serviceKey.slice(0, serviceKey.lastIndexOf('|'))
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}
