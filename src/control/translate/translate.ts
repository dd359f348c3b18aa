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
import { createHash } from 'node:crypto'
import type { Resource } from '../../api/index.js'
import { type ProxyNode, type ResourceMap, type Snapshot, TYPE_URL, type TypeUrl } from '../../xds/snapshot.js'
import type { Service } from '../registry/registry.js'
import { outboundClusters } from './clusters.js'
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

export type { MeshConfig } from './scope.js'
export type { NodeMetadata } from './listeners.js'

export interface TranslateInput {
  /** Istio resources (any kinds; the translator reads VirtualService, DestinationRule, Gateway, Sidecar) */
  resources: readonly Resource[]
  /** the registry's services (`Registry.services()`) */
  services: readonly Service[]
  meshConfig?: MeshConfig
}

/** A proxy as the translator sees it: the xDS node, plus the node metadata from its bootstrap. */
export type TranslateNode = ProxyNode & { metadata?: NodeMetadata }

/** The resources for one proxy, by type, before versioning (handy in tests). */
export interface TranslatedResources {
  listeners: Json[]
  routes: Json[]
  clusters: Json[]
  endpoints: Json[]
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
  return {
    listeners: parts.flatMap((p) => p.listeners).sort(byName),
    routes: parts.flatMap((p) => p.routes).sort(byName),
    clusters: [...outbound.clusters, ...parts.flatMap((p) => p.clusters)].sort(byName),
    endpoints: outbound.endpoints.sort((a, b) => cmp(a.cluster_name as string, b.cluster_name as string)),
  }
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
  return { resources }
}

/** A short hash of a resource list's canonical JSON. */
export function contentVersion(items: readonly Json[]): string {
  return createHash('sha256').update(canonicalJson(items)).digest('hex').slice(0, 16)
}
