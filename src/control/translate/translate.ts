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
import { type MeshConfig, resolveMeshConfig, Scope } from './scope.js'
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

/** A proxy as the translator sees it: the xDS node, plus the node metadata from its bootstrap. */
export type TranslateNode = ProxyNode & { metadata?: NodeMetadata }

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
 * Translation for many proxies at once. A sidecar's outbound config (its HTTP proxy listener, routes, clusters and
 * endpoints) depends on its namespace, its kind, the labels that some resource selects on, and its outbound
 * metadata, not on which workload it is; so proxies alike in those share one outbound translation, and only the
 * small inbound part is built per proxy. The result is what `translate` gives for each node.
 */
interface OutboundPart {
  listeners: Json[]
  routes: Json[]
  clusters: Json[]
  endpoints: Json[]
  versions: { listeners: string; routes: string; clusters: string; endpoints: string }
  /** clusters whose assignment depends on the proxy's locality */
  localityPlans: LocalityPlan[]
  /** the endpoints per locality group (localityGroupKey), built on first use */
  byLocality: Map<string, { endpoints: Json[]; version: string }>
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
  private readonly selectedLabels: Set<string>
  private readonly outbound = new Map<string, OutboundPart>()
  /** what the inbound part reads: Sidecars and the security policies selecting workloads */
  private readonly inboundResources: readonly Resource[]
  /** whether some proxy may trace: its canonical service (labels, else its workload name) is then in its config */
  private readonly traces: boolean

  constructor(input: TranslateInput) {
    this.input = input
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
  }

  translate(node: TranslateNode): Snapshot {
    if (node.kind !== 'sidecar' || node.generator !== 'envoy') return translate(this.input, node)
    const metadata = node.metadata ?? {}
    const labels: Record<string, string> = {}
    for (const k of Object.keys(node.labels).sort()) if (this.selectedLabels.has(k)) labels[k] = node.labels[k]!
    // the service account matters only where MeshConfig explainFrom names principals (the outbound explain filter)
    const byAccount = (this.input.meshConfig?.explainFrom?.principals?.length ?? 0) > 0
    const key = JSON.stringify([
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
    let out = this.outbound.get(key)
    if (out === undefined) {
      const scope = new Scope(this.input.resources, this.input.services, node, resolveMeshConfig(this.input.meshConfig))
      const listener = outboundListener(scope, metadata)
      const clusters = outboundClusters(scope)
      const part = {
        listeners: listener.listeners,
        routes: listener.routes,
        clusters: [...clusters.clusters, ...listener.clusters],
        endpoints: clusters.endpoints.sort((a, b) => cmp(a.cluster_name as string, b.cluster_name as string)),
      }
      out = {
        ...part,
        localityPlans: clusters.localityPlans,
        byLocality: new Map(),
        versions: {
          listeners: contentVersion(part.listeners),
          routes: contentVersion(part.routes),
          clusters: contentVersion(part.clusters),
          endpoints: contentVersion(part.endpoints),
        },
      }
      this.outbound.set(key, out)
    }
    // the inbound part needs only the services this workload serves (endpoints at its address)
    const own = this.input.services.filter((s) => s.endpoints.some((e) => e.address === node.ip))
    const inbound = inboundListeners(
      new Scope(this.inboundResources, own, node, resolveMeshConfig(this.input.meshConfig)),
      metadata,
    )
    const byName = (a: Json, b: Json) => cmp(a.name as string, b.name as string)
    const resources = new Map<TypeUrl, { version: string; items: ResourceMap }>()
    // versions: the shared part's hash (computed once) combined with the hash of this proxy's own part
    const add = (type: TypeUrl, shared: Json[], sharedVersion: string, own: Json[], field: string) => {
      const map: ResourceMap = new Map()
      for (const item of [...shared, ...own].sort(byName)) map.set(item[field] as string, item)
      const version = own.length === 0 ? sharedVersion : contentVersion([{ shared: sharedVersion }, ...own])
      resources.set(type, { version, items: map })
    }
    const v = out.versions
    add(TYPE_URL.listener, out.listeners, v.listeners, inbound.listeners, 'name')
    add(TYPE_URL.route, out.routes, v.routes, inbound.routes, 'name')
    add(TYPE_URL.cluster, out.clusters, v.clusters, inbound.clusters, 'name')
    // EDS: shared, unless some cluster has a locality plan: then shared by the proxies of one locality group
    let endpoints = out.endpoints
    let endpointsVersion = v.endpoints
    if (out.localityPlans.length > 0) {
      const proxy = localityProxy(node)
      const key = localityGroupKey(proxy, out.localityPlans)
      let group = out.byLocality.get(key)
      if (group === undefined) {
        const list = localized(out.endpoints, out.localityPlans, proxy)
        group = { endpoints: list, version: contentVersion(list) }
        out.byLocality.set(key, group)
      }
      endpoints = group.endpoints
      endpointsVersion = group.version
    }
    const eps: ResourceMap = new Map()
    for (const e of endpoints) eps.set(e.cluster_name as string, e)
    resources.set(TYPE_URL.endpoint, { version: endpointsVersion, items: eps })
    return vhdsLayout({ resources }, node)
  }
}
