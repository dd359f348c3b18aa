/**
 * What the translator produces for one proxy and what the xDS server serves: an internally consistent set of
 * Envoy v3 resources, grouped by type. Resources are plain objects in Envoy's proto-JSON form (snake_case field
 * names, durations as "1.5s", `Any` as `{ "@type": ..., ...fields }`), the same shapes a static bootstrap uses.
 */

export const TYPE_URL = {
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  secret: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
  /** VHDS: one virtual host of a route configuration that names `vhds` (delta xDS only) */
  virtualHost: 'type.googleapis.com/envoy.config.route.v3.VirtualHost',
} as const
export type TypeUrl = (typeof TYPE_URL)[keyof typeof TYPE_URL]

/** resource name → resource (proto-JSON object) */
export type ResourceMap = Map<string, Record<string, unknown>>

export interface Snapshot {
  /** per type URL: the resources and a version (a hash of their content, so an unchanged type keeps its version) */
  readonly resources: ReadonlyMap<TypeUrl, { version: string; items: ResourceMap }>
}

/** The identity of a connected proxy, from the xDS node (id, cluster, metadata) and the registry. */
export interface ProxyNode {
  /** Envoy node id: `sidecar~<ip>~<workload>.<namespace>~<namespace>.svc.cluster.local` or a Loom id */
  id: string
  kind: 'sidecar' | 'gateway'
  namespace: string
  /** the workload's labels (selects Sidecar, Gateway, PeerAuthentication... resources) */
  labels: Record<string, string>
  serviceAccount: string
  /** IP the workload's inbound traffic arrives on */
  ip: string
  /** client flavour: Loom/Envoy proxies get full listeners; proxyless gRPC gets api_listeners */
  generator: 'envoy' | 'grpc'
  /** the xDS node.locality, if the proxy sent one */
  locality?: { region?: string; zone?: string; sub_zone?: string }
}
