/**
 * What xDS resources name: the clusters a Listener or RouteConfiguration sends traffic to, the EDS service name
 * of a Cluster, and the SDS secrets of Clusters' and Listeners' TLS contexts. The xDS server orders its pushes by these references (make before break). Resources are the
 * proto-JSON objects of a snapshot; results are memoized per object (snapshot resources are immutable).
 */
import { TYPE_URL } from './snapshot.js'

const memo = new WeakMap<object, readonly string[]>()
const NONE: readonly string[] = []

/**
 * Cluster names a Listener, RouteConfiguration or VirtualHost refers to: route actions (`cluster`, `weighted_clusters`), request
 * mirrors, the TCP proxy, and gRPC services (`envoy_grpc.cluster_name`), at any depth (inline route configs, typed
 * per-filter configs). Other types refer to no cluster.
 */
export function clusterRefs(typeUrl: string, resource: Record<string, unknown>): readonly string[] {
  if (typeUrl !== TYPE_URL.listener && typeUrl !== TYPE_URL.route && typeUrl !== TYPE_URL.virtualHost) return NONE
  const m = memo.get(resource)
  if (m !== undefined) return m
  const out = new Set<string>()
  walk(resource, out)
  const list = out.size === 0 ? NONE : [...out].sort()
  memo.set(resource, list)
  return list
}

function walk(v: unknown, out: Set<string>): void {
  if (typeof v !== 'object' || v === null) return
  if (Array.isArray(v)) {
    for (const x of v) walk(x, out)
    return
  }
  const o = v as Record<string, unknown>
  for (const k in o) {
    const x = o[k]
    if ((k === 'cluster' || k === 'cluster_name') && typeof x === 'string') {
      if (x !== '') out.add(x)
    } else if (k === 'weighted_clusters' && typeof x === 'object' && x !== null) {
      for (const c of ((x as { clusters?: unknown }).clusters as { name?: unknown }[] | undefined) ?? []) {
        if (typeof c?.name === 'string' && c.name !== '') out.add(c.name)
      }
    } else walk(x, out)
  }
}

/** The name a cluster's ClusterLoadAssignment goes by, when the cluster takes its endpoints from EDS. */
export function edsServiceName(cluster: Record<string, unknown>): string | undefined {
  if (cluster.type !== 'EDS') return undefined
  const service = (cluster.eds_cluster_config as { service_name?: unknown } | undefined)?.service_name
  return typeof service === 'string' && service !== '' ? service : (cluster.name as string)
}

const secretMemo = new WeakMap<object, readonly string[]>()

/**
 * SDS secret names a Cluster or Listener's TLS contexts name (`tls_certificate_sds_secret_configs`,
 * `validation_context_sds_secret_config`, in `combined_validation_context` too), at any depth.
 */
export function secretRefs(resource: Record<string, unknown>): readonly string[] {
  const m = secretMemo.get(resource)
  if (m !== undefined) return m
  const out = new Set<string>()
  const visit = (v: unknown): void => {
    if (typeof v !== 'object' || v === null) return
    if (Array.isArray(v)) {
      for (const x of v) visit(x)
      return
    }
    const o = v as Record<string, unknown>
    for (const k in o) {
      const x = o[k]
      if (k === 'tls_certificate_sds_secret_configs' && Array.isArray(x)) {
        for (const c of x as { name?: unknown }[]) if (typeof c?.name === 'string' && c.name !== '') out.add(c.name)
      } else if (k === 'validation_context_sds_secret_config' && typeof x === 'object' && x !== null) {
        const n = (x as { name?: unknown }).name
        if (typeof n === 'string' && n !== '') out.add(n)
      } else visit(x)
    }
  }
  visit(resource)
  const list = out.size === 0 ? NONE : [...out].sort()
  secretMemo.set(resource, list)
  return list
}
