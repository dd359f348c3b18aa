/**
 * The translator: Istio resources plus the service registry in, the Envoy v3 resources for one proxy out. A pure
 * function: the same input gives the same snapshot, byte for byte (resources are read in Istio's config order, every
 * output list is sorted, and versions are content hashes), so callers may diff snapshots or skip unchanged pushes.
 *
 * What each proxy gets:
 * - sidecar, `generator: 'envoy'`: the outbound HTTP-proxy listener and its `outbound` route configuration, inbound
 *   listeners for its own workload, and EDS clusters with load assignments for every service it can see;
 * - gateway: listeners for the Gateway servers that select it, their route configurations, and the clusters;
 * - `generator: 'grpc'`: API listeners, per-service route configurations, clusters and load assignments.
 * The module docs of listeners.ts, routes.ts, clusters.ts and policy.ts say what is translated and what is not yet.
 */
import type { Credential } from '../credentials.js'
import { credentialSecrets } from './gateway-credentials.js'
import { createHash } from 'node:crypto'
import type { Resource } from '../../api/index.js'
import { type ProxyNode, type ResourceMap, type Snapshot, TYPE_URL, type TypeUrl } from '../../xds/snapshot.js'
import type { Service } from '../registry/registry.js'
import { outboundClusters } from './clusters.js'
import {
  applyLocality,
  type LocalityPlan,
  type LocalityProxy,
  localityGroupKey,
  proxyLocality,
  withTopologyLabels,
} from './locality.js'
import {
  gatewayListeners,
  grpcListeners,
  inboundListeners,
  type ListenerSet,
  type NodeMetadata,
  outboundListener,
} from './listeners.js'
import { hasTcpPort, type MeshConfig, type ResolvedMeshConfig, resolveMeshConfig, Scope } from './scope.js'
import {
  type Change,
  diff,
  type Fingerprints,
  fingerprints,
  newPeerParts,
  type PeerParts,
  type ServicePartCache,
  type ServiceParts,
} from './incremental.js'
import { isExportedTo } from '../registry/hostname.js'
import { canonicalJson, cmp, type Json } from './util.js'
import { CANONICAL_LABELS, canonicalService } from './telemetry.js'
import { vhdsLayout } from './vhds.js'

export type { MeshConfig } from './scope.js'
export type { NodeMetadata } from './listeners.js'

export interface TranslateInput {
  /** Istio resources (any kinds; the translator reads VirtualService, DestinationRule, Gateway, Sidecar) */
  resources: readonly Resource[]
  /** the registry's services (`Registry.services()`) */
  services: readonly Service[]
  meshConfig?: MeshConfig
  /** gateway credentials by name (src/control/credentials.ts), for servers' `tls.credentialName` */
  credentials?: ReadonlyMap<string, Credential>
}

/**
 * A proxy as the translator sees it: the xDS node, plus the node metadata from its bootstrap, plus its scope.
 * `scopeHosts` (registry hostnames), when set, limits the outbound HTTP services of a sidecar (virtual hosts, their
 * clusters and load assignments) to those hosts and the destinations of their VirtualServices; TCP ports and the
 * inbound part are unchanged, and a Sidecar with egress listeners that applies to the proxy wins (no scoping).
 */
export type TranslateNode = ProxyNode & { metadata?: NodeMetadata; scopeHosts?: ReadonlySet<string> | undefined }

/** A node's scope as a sorted list (null: full visibility), for keys. */
function scopeKey(node: TranslateNode): string[] | null {
  return node.scopeHosts === undefined ? null : [...node.scopeHosts].sort(cmp)
}

/** The node as JSON, its scope included. */
function nodeKey(node: TranslateNode): string {
  const { scopeHosts: _, ...rest } = node
  return JSON.stringify([rest, scopeKey(node)])
}

/** The resources for one proxy, by type, before versioning (handy in tests). */
export interface TranslatedResources {
  listeners: Json[]
  routes: Json[]
  clusters: Json[]
  endpoints: Json[]
  /** SDS secrets (a gateway's credentials; empty for other proxies) */
  secrets: Json[]
}

/** Builds the resources for `node`, as plain arrays sorted by name. */
export function translateResources(input: TranslateInput, node: TranslateNode): TranslatedResources {
  const scope = new Scope(input.resources, input.services, node, resolveMeshConfig(input.meshConfig))
  const metadata = node.metadata ?? {}
  const parts: ListenerSet[] = []
  if (node.kind === 'gateway') parts.push(gatewayListeners(scope, metadata))
  else if (node.generator === 'grpc') parts.push(grpcListeners(scope))
  else parts.push(outboundListener(scope, metadata), inboundListeners(scope, metadata))
  const outbound = outboundClusters(scope)
  const byName = (a: Json, b: Json) => cmp(a.name as string, b.name as string)
  const listeners = parts.flatMap((p) => p.listeners).sort(byName)
  const clusters = [...outbound.clusters, ...parts.flatMap((p) => p.clusters)].sort(byName)
  return {
    listeners,
    secrets:
      node.kind === 'gateway' ? credentialSecrets([...listeners, ...clusters], input.credentials ?? new Map()) : [],
    routes: parts.flatMap((p) => p.routes).sort(byName),
    clusters,
    endpoints: localized(
      outbound.endpoints.sort((a, b) => cmp(a.cluster_name as string, b.cluster_name as string)),
      outbound.localityPlans,
      localityProxy(node),
    ),
  }
}

/** The proxy's locality and labels as locality load balancing reads them. */
export function localityProxy(node: ProxyNode): LocalityProxy {
  const locality = proxyLocality(node.labels, node.locality)
  return { locality, labels: withTopologyLabels(node.labels, locality) }
}

/** `endpoints` with the assignments that have a locality plan rewritten for `proxy` (the others as they are). */
function localized(endpoints: Json[], plans: readonly LocalityPlan[], proxy: LocalityProxy): Json[] {
  if (plans.length === 0) return endpoints
  const byCluster = new Map(plans.map((p) => [p.cluster, p]))
  return endpoints.map((cla) => {
    const plan = byCluster.get(cla.cluster_name as string)
    return plan === undefined ? cla : applyLocality(cla, plan, proxy)
  })
}

/** The snapshot for `node`: every type present (an empty type means "none"), each versioned by its content hash. */
export function translate(input: TranslateInput, node: TranslateNode): Snapshot {
  const r = translateResources(input, node)
  const resources = new Map<TypeUrl, { version: string; items: ResourceMap }>()
  const add = (type: TypeUrl, items: Json[], key: string) => {
    const map: ResourceMap = new Map()
    for (const item of items) map.set(item[key] as string, item)
    resources.set(type, { version: contentVersion(items), items: map })
  }
  add(TYPE_URL.listener, r.listeners, 'name')
  add(TYPE_URL.route, r.routes, 'name')
  add(TYPE_URL.cluster, r.clusters, 'name')
  add(TYPE_URL.endpoint, r.endpoints, 'cluster_name')
  if (node.kind === 'gateway') add(TYPE_URL.secret, r.secrets, 'name')
  return vhdsLayout({ resources }, node)
}

/** A short hash of a resource list's canonical JSON. */
export function contentVersion(items: readonly Json[]): string {
  return createHash('sha256').update(canonicalJson(items)).digest('hex').slice(0, 16)
}

/**
 * Translation for many proxies at once, and from one config generation to the next. A sidecar's outbound config
 * (its HTTP proxy listener, routes, clusters and endpoints) depends on its namespace, its kind, the labels that some
 * resource selects on, and its outbound metadata, not on which workload it is; so proxies alike in those (a group)
 * share one outbound translation, and only the small inbound part is built per proxy. The result is what
 * `translate` gives for each node, versions included.
 *
 * Built with the previous generation's translator, it translates only what changed (incremental.ts has the
 * dependency index): a group none of whose hosts the change touches keeps its whole outbound part; another rebuilds
 * only the services whose parts the change touched; a proxy whose group part and inbound inputs are unchanged keeps
 * its snapshot, and `update` says so (null), so the caller skips it.
 */
interface OutboundPart {
  listeners: Json[]
  routes: Json[]
  clusters: Json[]
  endpoints: Json[]
  /** the shared items of each type, sorted by name, as the map a snapshot takes; built on first use */
  maps: Map<TypeUrl, ResourceMap>
  /** clusters whose assignment depends on the proxy's locality */
  localityPlans: LocalityPlan[]
  /** the endpoints per locality group (localityGroupKey), built on first use */
  byLocality: Map<string, { endpoints: Json[] }>
}

/** A group's outbound part, with what it was built from. */
interface Group {
  part: OutboundPart
  /** per-service parts by hostname */
  parts: ServicePartCache
  /** every host the part read: the visible services' hostnames and their deps */
  hosts: Set<string>
  /** whether a Sidecar applies to the group (its egress decides what a new service's visibility is) */
  sidecar: boolean
  /** the hosts whose HTTP ports the group gets, when scoped (Scope.scopedHosts); null: every visible one */
  scoped: ReadonlySet<string> | null
}

/** What a proxy was last given. */
interface ProxyRecord {
  node: string
  part: OutboundPart
  /** the services it serves (their JSON): what its inbound part reads beside the inbound policies */
  own: string
  inbound: ListenerSet
  snapshot: Snapshot
}

/** the kinds the inbound part of a sidecar's config reads (its Sidecar resource, its security policies) */
const INBOUND_KINDS = new Set([
  'Sidecar',
  'RequestAuthentication',
  'AuthorizationPolicy',
  'PeerAuthentication',
  'Telemetry',
])

export class BatchTranslator {
  private readonly input: TranslateInput
  private readonly mesh: ResolvedMeshConfig
  private readonly selectedLabels: Set<string>
  private readonly groups = new Map<string, Group>()
  private readonly records = new Map<string, ProxyRecord>()
  /** what the inbound part reads: Sidecars and the security policies selecting workloads */
  private readonly inboundResources: readonly Resource[]
  /** whether some proxy may trace: its canonical service (labels, else its workload name) is then in its config */
  private readonly traces: boolean
  readonly fingerprints: Fingerprints
  /** the previous generation: what changed since, its groups and its proxies' records (null: none, or done) */
  private prev: { change: Change; groups: Map<string, Group>; records: Map<string, ProxyRecord> } | null = null
  #byAddress: Map<string, Service[]> | null = null
  /** per peer key: the services' parts its groups built (or kept) in this generation */
  readonly #peers = new Map<string, PeerParts>()
  #serviceJson: Map<Service, string> | null = null

  constructor(input: TranslateInput, previous?: BatchTranslator) {
    this.input = input
    this.mesh = resolveMeshConfig(input.meshConfig)
    // label keys some resource matches a proxy on: VirtualService sourceLabels, Sidecar/DestinationRule selectors
    const keys = new Set<string>()
    const addKeys = (o: unknown) => {
      if (o !== null && typeof o === 'object') for (const k of Object.keys(o)) keys.add(k)
    }
    for (const r of input.resources) {
      const spec = r.spec as Record<string, unknown> | undefined
      if (spec === undefined) continue
      if (r.kind === 'VirtualService') {
        for (const h of (spec.http ?? []) as { match?: { sourceLabels?: unknown }[] }[]) {
          for (const m of h.match ?? []) addKeys(m.sourceLabels)
        }
      } else if (r.kind === 'Sidecar' || r.kind === 'DestinationRule') {
        const ws = spec.workloadSelector as { labels?: unknown; matchLabels?: unknown } | undefined
        addKeys(ws?.labels)
        addKeys(ws?.matchLabels)
      } else if (r.kind === 'Telemetry') {
        addKeys((spec.selector as { matchLabels?: unknown } | undefined)?.matchLabels)
      }
    }
    // a traced sidecar's outbound config names its canonical service (span tags, the exporter's service name)
    const traces =
      input.resources.some((r) => r.kind === 'Telemetry') ||
      (input.meshConfig?.defaultProviders?.tracing?.length ?? 0) > 0
    if (traces) for (const k of CANONICAL_LABELS) keys.add(k)
    this.traces = traces
    this.selectedLabels = keys
    this.inboundResources = input.resources.filter((r) => INBOUND_KINDS.has(r.kind))
    this.fingerprints = fingerprints(input.resources, input.services, input.meshConfig)
    if (previous !== undefined) {
      // the previous generation's own predecessor is no longer needed: nothing chains past one generation
      previous.prev = null
      this.prev = {
        change: diff(previous.fingerprints, this.fingerprints, this.mesh.rootNamespace),
        groups: previous.groups,
        records: previous.records,
      }
    }
  }

  /** What changed since the previous generation (null without one): for logs and tests. */
  get change(): Change | null {
    return this.prev?.change ?? null
  }

  /** The node's snapshot. */
  translate(node: TranslateNode): Snapshot {
    return this.update(node) ?? this.records.get(node.id)!.snapshot
  }

  /**
   * The node's snapshot, or null when it is the one this translator or the previous generation last gave this node
   * (same id), so there is nothing to push. Proxies that are not Envoy-style sidecars always get a snapshot.
   */
  update(node: TranslateNode): Snapshot | null {
    if (node.kind !== 'sidecar' || node.generator !== 'envoy') return translate(this.input, node)
    const nodeJson = nodeKey(node)
    const mine = this.records.get(node.id)
    if (mine !== undefined && mine.node === nodeJson) return null
    const rec = mine ?? this.prev?.records.get(node.id)
    const metadata = node.metadata ?? {}
    const part = this.group(node)
    // the inbound part needs only the services this workload serves (endpoints at its address)
    const own = this.servicesAt(node.ip)
    const ownJson = own.map((s) => this.serviceJson(s)).join('\n')
    const inboundSame =
      rec !== undefined &&
      rec.node === nodeJson &&
      rec.own === ownJson &&
      this.prev !== null &&
      !this.prev.change.inbound.all &&
      !this.prev.change.inbound.namespaces.has(node.namespace)
    const inbound = inboundSame
      ? rec.inbound
      : inboundListeners(new Scope(this.inboundResources, own, node, this.mesh), metadata)
    if (rec !== undefined && rec.part === part && rec.inbound === inbound) {
      this.records.set(node.id, rec)
      return null
    }
    const snapshot = this.assemble(node, part, inbound)
    this.records.set(node.id, { node: nodeJson, part, own: ownJson, inbound, snapshot })
    return snapshot
  }

  /**
   * The group's key: what a sidecar's outbound config reads of the node. Its peer key is the same without the
   * scope: the groups of one peer key share their services' parts (PeerParts).
   */
  private groupKey(node: TranslateNode): { key: string; peer: string } {
    const metadata = node.metadata ?? {}
    const labels: Record<string, string> = {}
    for (const k of Object.keys(node.labels).sort()) if (this.selectedLabels.has(k)) labels[k] = node.labels[k]!
    // the service account matters only where MeshConfig explainFrom names principals (the outbound explain filter)
    const byAccount = (this.input.meshConfig?.explainFrom?.principals?.length ?? 0) > 0
    const peer = JSON.stringify([
      node.namespace,
      labels,
      metadata.OUTBOUND_PORT ?? null,
      metadata.INTERCEPTION_MODE ?? null,
      metadata.MESH_ID ?? null,
      metadata.CLUSTER_ID ?? null,
      // the workload's name stands for the canonical service of a traced proxy without the labels for it
      this.traces && canonicalService(node.labels).name === 'unknown'
        ? [metadata.WORKLOAD_NAME ?? null, node.id]
        : null,
      byAccount ? node.serviceAccount : null,
    ])
    const scope = scopeKey(node)
    return { key: scope === null ? peer : `${peer}\u0000${JSON.stringify(scope)}`, peer }
  }

  /** The parts built this generation by the groups of a peer key. */
  private peerParts(peer: string): PeerParts {
    let p = this.#peers.get(peer)
    if (p === undefined) this.#peers.set(peer, (p = newPeerParts()))
    return p
  }

  /** The node's group's outbound part: kept from the previous generation, rebuilt in part, or built. */
  private group(node: TranslateNode): OutboundPart {
    const { key, peer } = this.groupKey(node)
    const have = this.groups.get(key)
    if (have !== undefined) return have.part
    const change = this.prev?.change
    const before = change === undefined || change.global !== null ? undefined : this.prev!.groups.get(key)
    if (before !== undefined && !this.touches(before, change!, node.namespace)) {
      this.groups.set(key, before)
      return before.part
    }
    const metadata = node.metadata ?? {}
    const scope = new Scope(this.input.resources, this.input.services, node, this.mesh)
    // the services whose parts no touched host reaches keep them
    const parts: ServicePartCache = new Map()
    if (before !== undefined) {
      const touched = (h: string) => change!.hosts.has(h) || change!.routeHosts.has(h)
      // scoped: whether a host's HTTP ports are in depends on the VirtualServices too (their destinations are)
      const sameScope = (h: string, p: ServiceParts) => (p.clustersHttp ?? true) === scope.inScope(h)
      for (const [host, p] of before.parts) {
        const kept: ServiceParts = {}
        if (p.clusters !== undefined && !change!.hosts.has(host) && sameScope(host, p)) {
          kept.clusters = p.clusters
          if (p.clustersHttp !== undefined) kept.clustersHttp = p.clustersHttp
        }
        if (p.routes !== undefined && !touched(host) && !(p.deps ?? []).some(touched)) {
          kept.routes = p.routes
          if (p.deps !== undefined) kept.deps = p.deps
        }
        if (kept.clusters !== undefined || kept.routes !== undefined) parts.set(host, kept)
      }
    }
    const peers = this.peerParts(peer)
    const listener = outboundListener(scope, metadata, parts, peers)
    const clusters = outboundClusters(scope, parts, peers)
    const hosts = new Set<string>()
    const scoped = scope.scopedHosts
    // scoped: a host outside the scope matters only for its TCP ports
    for (const s of scope.clusterServices) {
      hosts.add(s.hostname)
      for (const h of parts.get(s.hostname)?.deps ?? []) hosts.add(h)
    }
    // and the scope's hosts, services or not: a VirtualService for one of them changes what the scope holds
    if (scoped !== null) for (const h of scoped) hosts.add(h)
    // entries of services no longer visible are not kept
    for (const h of parts.keys()) if (scope.service(h) === undefined) parts.delete(h)
    const part: OutboundPart = {
      listeners: listener.listeners,
      routes: listener.routes,
      clusters: [...clusters.clusters, ...listener.clusters],
      endpoints: clusters.endpoints.sort((a, b) => cmp(a.cluster_name as string, b.cluster_name as string)),
      maps: new Map(),
      localityPlans: clusters.localityPlans,
      byLocality: new Map(),
    }
    this.groups.set(key, { part, parts, hosts, sidecar: scope.sidecar !== undefined, scoped })
    return part
  }

  /** Whether the change touches a group: a host it read, or a touched service it may now see. */
  private touches(group: Group, change: Change, namespace: string): boolean {
    for (const h of [...change.hosts, ...change.routeHosts]) {
      if (group.hosts.has(h)) return true
      if (group.sidecar) return true
      for (const s of this.servicesNamed(h)) {
        if (group.scoped !== null && !group.scoped.has(h) && !hasTcpPort(s)) continue
        if (isExportedTo(s.namespace, s.exportTo, namespace)) return true
      }
    }
    return false
  }

  #byHostname: Map<string, Service[]> | null = null

  private servicesNamed(hostname: string): Service[] {
    if (this.#byHostname === null) {
      this.#byHostname = new Map()
      for (const s of this.input.services) {
        const list = this.#byHostname.get(s.hostname)
        if (list === undefined) this.#byHostname.set(s.hostname, [s])
        else list.push(s)
      }
    }
    return this.#byHostname.get(hostname) ?? []
  }

  /** The services with an endpoint at `address`, in input order. */
  private servicesAt(address: string): Service[] {
    if (this.#byAddress === null) {
      this.#byAddress = new Map()
      for (const s of this.input.services) {
        for (const a of new Set(s.endpoints.map((e) => e.address))) {
          const list = this.#byAddress.get(a)
          if (list === undefined) this.#byAddress.set(a, [s])
          else list.push(s)
        }
      }
    }
    return this.#byAddress.get(address) ?? []
  }

  private serviceJson(s: Service): string {
    this.#serviceJson ??= new Map()
    let j = this.#serviceJson.get(s)
    if (j === undefined) this.#serviceJson.set(s, (j = JSON.stringify(s)))
    return j
  }

  /** The snapshot from the group's part and the proxy's own. Versions are computed when read. */
  private assemble(node: TranslateNode, out: OutboundPart, inbound: ListenerSet): Snapshot {
    const resources = new Map<TypeUrl, { version: string; items: ResourceMap }>()
    const add = (type: TypeUrl, shared: Json[], own: Json[], field: string) => {
      let map = out.maps.get(type)
      if (map === undefined) {
        map = new Map()
        for (const item of [...shared].sort(byField(field))) map.set(item[field] as string, item)
        out.maps.set(type, map)
      }
      const items = own.length === 0 ? map : merged(map, own, field)
      resources.set(type, lazyVersion(items))
    }
    add(TYPE_URL.listener, out.listeners, inbound.listeners, 'name')
    add(TYPE_URL.route, out.routes, inbound.routes, 'name')
    add(TYPE_URL.cluster, out.clusters, inbound.clusters, 'name')
    // EDS: shared, unless some cluster has a locality plan: then shared by the proxies of one locality group
    if (out.localityPlans.length === 0) add(TYPE_URL.endpoint, out.endpoints, [], 'cluster_name')
    else {
      const proxy = localityProxy(node)
      const key = localityGroupKey(proxy, out.localityPlans)
      let group = out.byLocality.get(key)
      if (group === undefined) {
        group = { endpoints: localized(out.endpoints, out.localityPlans, proxy) }
        out.byLocality.set(key, group)
      }
      const eps: ResourceMap = new Map()
      for (const e of group.endpoints) eps.set(e.cluster_name as string, e)
      resources.set(TYPE_URL.endpoint, lazyVersion(eps))
    }
    return vhdsLayout({ resources }, node)
  }
}

function byField(field: string): (a: Json, b: Json) => number {
  return (a, b) => cmp(a[field] as string, b[field] as string)
}

/** The sorted map `shared` with `own` merged in (sorted by `field`, as `translate` lists them). */
function merged(shared: ResourceMap, own: Json[], field: string): ResourceMap {
  const mine = [...own].sort(byField(field))
  const out: ResourceMap = new Map()
  let i = 0
  for (const [name, item] of shared) {
    while (i < mine.length && cmp(mine[i]![field] as string, name) < 0) {
      out.set(mine[i]![field] as string, mine[i]!)
      i++
    }
    out.set(name, item)
  }
  for (; i < mine.length; i++) out.set(mine[i]![field] as string, mine[i]!)
  return out
}

/**
 * A type's entry whose version (`contentVersion` of its items, as `translate` gives it) is computed on first read:
 * the xDS cache versions snapshots by itself, so a rebuild that only pushes never pays for it.
 */
function lazyVersion(items: ResourceMap): { version: string; items: ResourceMap } {
  let version: string | null = null
  return {
    get version() {
      version ??= contentVersion([...items.values()])
      return version
    },
    items,
  }
}
