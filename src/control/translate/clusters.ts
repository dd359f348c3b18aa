/**
 * Outbound clusters and their endpoints (CDS and EDS), one cluster per service port and per DestinationRule subset:
 * `outbound|<port>||<host>` and `outbound|<port>|<subset>|<host>`.
 *
 * - Services with endpoints (resolution STATIC, or NONE; see below) become `EDS` clusters; their
 *   ClusterLoadAssignment carries the healthy endpoints on that port, filtered by the subset's labels, grouped by
 *   locality. Every locality and endpoint has a weight (proxyless gRPC drops localities without one). Endpoints
 *   whose address is not an IP are left out (EDS needs IPs); `analyze` reports them.
 * - `resolution: DNS` (and DNS_ROUND_ROBIN) services become STRICT_DNS clusters (LOGICAL_DNS for proxyless gRPC)
 *   over their endpoints, or over the host itself when they list none. A MESH_EXTERNAL NONE service without
 *   endpoints is treated the same way: in HTTP-proxy mode the "original destination" is the host the client named.
 *   Other NONE services are EDS, like STATIC ones. Wildcard hosts get no cluster.
 * - The DestinationRule policy for the (subset, port) sets the load balancer, the connect timeout, the circuit
 *   breakers and HTTP protocol options from connectionPool (every cluster gets Istio's thresholds, unlimited where
 *   nothing is set) and outlier detection, as Istio's applyConnectionPool and applyOutlierDetection do; HTTP/2 and
 *   gRPC ports get HTTP/2 upstream connections.
 * - Warmup becomes slow start on ROUND_ROBIN and LEAST_REQUEST clusters; the `loom.dev/load-balancer: peak-ewma`
 *   annotation of the rule makes them Loom's peak-EWMA load balancer (see policy.ts).
 * - localityLbSetting (or the mesh default): EDS clusters get `common_lb_config.locality_weighted_lb_config` where
 *   Istio sets it, and a LocalityPlan by which each proxy's copy of the assignment gets its priorities or locality
 *   weights (locality.ts).
 * - TLS: the DestinationRule's `tls` (ISTIO_MUTUAL, SIMPLE, MUTUAL, DISABLE), else automatic mutual TLS to
 *   endpoints with sidecars, per endpoint (transport_socket_matches and EDS metadata) when only some have one
 *   (mtls.ts). Clusters of TCP ports (any protocol but HTTP's and UDP) carry Istio's metadata exchange in
 *   `filters`, as pilot puts it on outbound clusters; it runs only where the handshake selects its ALPN.
 * - Not translated yet (see `analyze`): tcpKeepalive, maxConnectionDuration.
 */
import { isIP } from 'node:net'
import { LOOM_LOAD_BALANCER_ANNOTATION } from '../../api/index.js'
import { TypeUrls } from '../../config/type-urls.js'
import { labelsMatch } from '../registry/hostname.js'
import {
  isHttp2Protocol,
  isHttpProtocol,
  type Service,
  type ServiceEndpoint,
  type ServicePort,
} from '../registry/registry.js'
import {
  connectionPoolFields,
  connectTimeout,
  type EffectivePolicy,
  effectivePolicy,
  type LoomLoadBalancer,
  loadBalancerFields,
  outlierDetectionFields,
} from './policy.js'
import { type LocalityPlan, localityPlan, localitySetting, localityWeighted, withTopologyLabels } from './locality.js'
import { METADATA_EXCHANGE, SIDECAR_ENDPOINT_METADATA, upstreamTransport } from './mtls.js'
import type { AppliedDestinationRule, Scope } from './scope.js'
import { clusterName, cmp, istioOrigin, type Json, locality } from './util.js'
import { type PeerParts, partsOf, type ServicePartCache } from './incremental.js'

export const ADS: Json = { ads: {} }

export interface ClusterSet {
  clusters: Json[]
  /** ClusterLoadAssignments of the EDS clusters */
  endpoints: Json[]
  /** the EDS clusters whose assignment each proxy gets rewritten for its locality (locality.ts) */
  localityPlans: LocalityPlan[]
}

/**
 * Clusters and load assignments for every service the proxy can reach. With `parts` (incremental.ts), a service's
 * clusters come from its entry there when it has one, and are put there when built; with `peers`, from the entry
 * another group of the same key (another scope) built in this generation, and are put there too.
 */
export function outboundClusters(scope: Scope, parts?: ServicePartCache, peers?: PeerParts): ClusterSet {
  const clusters: Json[] = []
  const endpoints: Json[] = []
  const localityPlans: LocalityPlan[] = []
  for (const svc of scope.clusterServices) {
    const h = svc.hostname
    const http = scope.inScope(h)
    const shared = peers?.clusters[http ? 1 : 0]
    let own = parts?.get(h)?.clusters
    if (own === undefined) {
      own = shared?.get(h) ?? serviceClusters(scope, svc)
      if (parts !== undefined) {
        const entry = partsOf(parts, h)
        entry.clusters = own
        entry.clustersHttp = http
      }
    }
    if (shared !== undefined && !shared.has(h)) shared.set(h, own)
    if (own.clusters.length === 0) continue
    clusters.push(...own.clusters)
    endpoints.push(...own.endpoints)
    localityPlans.push(...own.localityPlans)
  }
  return { clusters, endpoints, localityPlans }
}

/** One service's clusters (per port and subset), in the order `outboundClusters` lists them. */
function serviceClusters(scope: Scope, svc: Service): ClusterSet {
  const clusters: Json[] = []
  const endpoints: Json[] = []
  const localityPlans: LocalityPlan[] = []
  const http = scope.inScope(svc.hostname)
  // outside the proxy's scope, only the ports its TCP listeners name: none, nothing to look up
  if (!http && svc.ports.every((p) => isHttpProtocol(p.protocol))) return { clusters, endpoints, localityPlans }
  const dr = scope.destinationRule(svc.hostname)
  const subsets = [''].concat(
    [...new Set((dr?.spec.subsets ?? []).map((s) => s.name ?? '').filter((n) => n !== ''))].sort(cmp),
  )
  for (const port of svc.ports) {
    // outside the proxy's scope, only the ports its TCP listeners name
    if (!http && isHttpProtocol(port.protocol)) continue
    for (const subset of subsets) {
      const labels = subset === '' ? undefined : (scope.subset(svc.hostname, subset)?.labels ?? {})
      const built = buildCluster(scope, svc, port, subset, labels)
      if (built === null) continue
      clusters.push(built.cluster)
      if (built.assignment !== null) endpoints.push(built.assignment)
      if (built.plan !== null) localityPlans.push(built.plan)
    }
  }
  return { clusters, endpoints, localityPlans }
}

function buildCluster(
  scope: Scope,
  svc: Service,
  port: ServicePort,
  subset: string,
  subsetLabels: Record<string, string> | undefined,
): { cluster: Json; assignment: Json | null; plan: LocalityPlan | null } | null {
  const name = clusterName('outbound', port.number, subset, svc.hostname)
  const generator = scope.node.generator
  const dr = scope.destinationRule(svc.hostname)
  const policy = effectivePolicy(dr?.spec, subset, port.number)
  const eps = svc.endpoints.filter(
    (e) =>
      e.servicePort === port.number && e.healthy && (subsetLabels === undefined || labelsMatch(subsetLabels, e.labels)),
  )
  const dns =
    svc.resolution === 'DNS' ||
    svc.resolution === 'DNS_ROUND_ROBIN' ||
    svc.resolution === 'DYNAMIC_DNS' ||
    (svc.resolution === 'NONE' && svc.location === 'MESH_EXTERNAL' && svc.endpoints.length === 0)
  if (dns && svc.hostname.startsWith('*')) return null

  const cluster: Json = { name }
  const origin = dr?.sources[0]
  if (origin !== undefined)
    cluster.metadata = istioOrigin('destination-rule', origin.metadata.namespace, origin.metadata.name)
  if (dns) {
    cluster.type = generator === 'grpc' ? 'LOGICAL_DNS' : 'STRICT_DNS'
  } else {
    cluster.type = 'EDS'
    cluster.eds_cluster_config = { eds_config: ADS, service_name: name }
  }
  cluster.connect_timeout = connectTimeout(policy) ?? scope.mesh.connectTimeout
  Object.assign(
    cluster,
    loadBalancerFields(policy?.loadBalancer, scope.mesh.defaultLoadBalancer, generator, loomLoadBalancer(dr)),
  )
  const http2 = generator === 'envoy' && (isHttp2Protocol(port.protocol) || h2Upgrade(policy, port.protocol, scope))
  if (http2) Object.assign(cluster, http2Options())
  const pool = connectionPoolFields(policy, http2)
  // proxyless gRPC takes the circuit breakers, not Envoy's HTTP protocol options
  if (generator === 'grpc') delete pool.typed_extension_protocol_options
  Object.assign(cluster, pool)
  const outlier = outlierDetectionFields(policy)
  if (outlier !== null) cluster.outlier_detection = outlier
  // gateways and sidecars speak Istio's mTLS to meshed endpoints; proxyless gRPC has no SDS certificates here
  let markSidecars: ReadonlySet<string> | null = null
  if (generator === 'envoy') {
    const target = { host: svc.hostname, namespace: svc.namespace, port: port.number, subset }
    const t = upstreamTransport(scope, policy?.tls, target, eps, dns, svc.subjectAltNames)
    if (t.transport_socket !== undefined) cluster.transport_socket = t.transport_socket
    if (t.transport_socket_matches !== undefined) cluster.transport_socket_matches = t.transport_socket_matches
    markSidecars = t.markSidecars
    // a TCP port's connections run Istio's metadata exchange where the handshake selects it (pilot's TCPClusterMx)
    if (!isHttpProtocol(port.protocol) && port.protocol !== 'UDP') cluster.filters = [METADATA_EXCHANGE]
  }
  if (dns) {
    const targets: Pick<ServiceEndpoint, 'address' | 'port' | 'locality' | 'weight'>[] =
      eps.length > 0
        ? eps
        : svc.endpoints.length > 0
          ? []
          : [{ address: svc.hostname, port: port.number, locality: '', weight: 1 }]
    // LOGICAL_DNS takes exactly one endpoint.
    cluster.load_assignment = loadAssignment(name, generator === 'grpc' ? targets.slice(0, 1) : targets)
    return { cluster, assignment: null, plan: null }
  }
  const edsEps = eps.filter((e) => isIP(e.address) !== 0)
  // locality load balancing: the assignment is rewritten per proxy (locality.ts), the cluster only flagged
  const setting = localitySetting(scope.mesh.localityLbSetting, policy?.loadBalancer?.localityLbSetting)
  if (localityWeighted(setting, outlier !== null)) cluster.common_lb_config = { locality_weighted_lb_config: {} }
  const plan = localityPlan(name, setting, outlier !== null, () => {
    const labels = new Map<string, Record<string, string>>()
    for (const e of edsEps) {
      const key = `${e.address}:${e.port}`
      if (!labels.has(key)) labels.set(key, withTopologyLabels(e.labels, locality(e.locality)))
    }
    return labels
  })
  return { cluster, assignment: loadAssignment(name, edsEps, markSidecars), plan }
}

/** The `loom.dev/load-balancer` annotation of the first contributing rule that sets one (validated on apply). */
function loomLoadBalancer(dr: AppliedDestinationRule | undefined): LoomLoadBalancer | undefined {
  for (const r of dr?.sources ?? []) {
    const value = r.metadata.annotations?.[LOOM_LOAD_BALANCER_ANNOTATION]
    if (value === 'peak-ewma') return value
    if (value !== undefined) return undefined
  }
  return undefined
}

/**
 * A ClusterLoadAssignment: endpoints grouped by locality, sorted, de-duplicated, every weight set. The endpoints in
 * `markSidecars` (`address|port`) carry Istio's `envoy.transport_socket_match` metadata.
 */
export function loadAssignment(
  clusterName: string,
  eps: readonly Pick<ServiceEndpoint, 'address' | 'port' | 'locality' | 'weight'>[],
  markSidecars: ReadonlySet<string> | null = null,
): Json {
  const byLocality = new Map<string, Map<string, { address: string; port: number; weight: number; sidecar: boolean }>>()
  for (const e of eps) {
    const loc = normalizeLocality(e.locality)
    let group = byLocality.get(loc)
    if (group === undefined) byLocality.set(loc, (group = new Map()))
    const key = `${e.address}|${e.port}`
    const sidecar = markSidecars?.has(key) === true
    if (!group.has(key)) group.set(key, { address: e.address, port: e.port, weight: Math.max(1, e.weight), sidecar })
  }
  const endpoints = [...byLocality.keys()].sort(cmp).map((loc) => {
    const members = [...byLocality.get(loc)!.values()].sort((a, b) => cmp(a.address, b.address) || a.port - b.port)
    return {
      locality: locality(loc),
      load_balancing_weight: members.reduce((n, m) => n + m.weight, 0),
      lb_endpoints: members.map((m) => {
        const lbe: Json = {
          endpoint: { address: { socket_address: { address: m.address, port_value: m.port } } },
          health_status: 'HEALTHY',
        }
        if (m.sidecar) lbe.metadata = SIDECAR_ENDPOINT_METADATA
        lbe.load_balancing_weight = m.weight
        return lbe
      }),
    }
  })
  return { cluster_name: clusterName, endpoints }
}

function normalizeLocality(text: string): string {
  const l = locality(text)
  return `${l.region}/${l.zone}/${l.sub_zone}`
}

/**
 * Istio's `h2UpgradePolicy`: an HTTP/1.1 port's requests go upstream as HTTP/2 when the DestinationRule says
 * UPGRADE, or says nothing (DEFAULT) and the mesh config does; `useClientProtocol` keeps the client's protocol.
 */
function h2Upgrade(policy: EffectivePolicy | undefined, protocol: string, scope: Scope): boolean {
  if (protocol !== 'HTTP') return false
  const http = policy?.connectionPool?.http
  if (http?.useClientProtocol === true) return false
  const p = http?.h2UpgradePolicy
  return p === 'UPGRADE' || ((p === undefined || p === 'DEFAULT') && scope.mesh.h2Upgrade)
}

/** Upstream HTTP/2, the way Envoy v3 configures it. */
export function http2Options(): Json {
  return {
    typed_extension_protocol_options: {
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
        '@type': TypeUrls.httpProtocolOptions,
        explicit_http_config: { http2_protocol_options: {} },
      },
    },
  }
}
