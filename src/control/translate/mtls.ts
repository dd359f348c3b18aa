/**
 * Istio's mutual TLS between sidecars, as pilot emits it.
 *
 * Outbound (`upstreamTransportSocket`): a cluster's TLS comes from its DestinationRule's `tls`, else from automatic
 * mutual TLS.
 * - Automatic mTLS: an endpoint has a sidecar when it carries the label `security.istio.io/tlsMode: istio` (Istio's
 *   injector sets it on pods; `loom up` sets it on the workloads it registers when the control plane issues
 *   certificates; a WorkloadEntry sets it itself). A cluster whose endpoints all have sidecars gets Istio's mTLS
 *   context; a cluster with an endpoint without one stays plain text (Istio switches per endpoint with
 *   `transport_socket_matches`, which Loom's proxy does not have: plain text is what every such endpoint accepts
 *   under the default PERMISSIVE mode). An endpoint whose own PeerAuthentication mode for its port is DISABLE
 *   counts as one without a sidecar (Istio's mTLS checker): its sidecar would not take TLS there.
 * - `ISTIO_MUTUAL`: Istio's mTLS context whatever the endpoints; `DISABLE`: plain text; `SIMPLE` / `MUTUAL`: TLS
 *   origination with the rule's `sni`, `subjectAltNames`, `caCertificates` and (MUTUAL) `clientCertificate` /
 *   `privateKey` files. `credentialName`, `caCrl` and `insecureSkipVerify` cannot be honoured (no gateway secret
 *   store, no CRLs, the proxy always verifies): such a rule's cluster stays plain text and analyze warns.
 * - Istio's mTLS context: certificate `default` and trust bundle `ROOTCA` over SDS (ADS), SNI
 *   `outbound_.<port>_.<subset>_.<host>`, ALPN `istio-peer-exchange`, `istio`, and the SPIFFE IDs of the endpoints'
 *   service accounts as the accepted subject alt names.
 *
 * Inbound (`peerAuthenticationMode`): PeerAuthentication's mode for a workload port, most specific first: the
 * port's `portLevelMtls` of the workload policy, the workload policy (a selector matching the workload, in its
 * namespace), the namespace policy (no selector), the mesh policy (root namespace, no selector); UNSET inherits, the
 * default is PERMISSIVE. At each level the oldest policy wins, as in Istio.
 */
import type { ClientTLSSettings, PeerAuthenticationSpec, Resource } from '../../api/index.js'
import { TypeUrls } from '../../config/type-urls.js'
import { labelsMatch } from '../registry/hostname.js'
import type { ServiceEndpoint } from '../registry/registry.js'
import type { Scope } from './scope.js'
import type { Json } from './util.js'

/** the endpoint label that says a workload has a sidecar (Istio's) */
export const TLS_MODE_LABEL = 'security.istio.io/tlsMode'
/** SDS names of the proxy's own certificate and of the trust bundle (Istio's) */
export const SDS_DEFAULT = 'default'
export const SDS_ROOTCA = 'ROOTCA'
/** the ALPN Istio's sidecars offer to each other */
export const ISTIO_ALPN = ['istio-peer-exchange', 'istio']
export const TLS_SOCKET = 'envoy.transport_sockets.tls'

export type MtlsMode = 'STRICT' | 'PERMISSIVE' | 'DISABLE'

export function hasSidecar(e: Pick<ServiceEndpoint, 'labels'>): boolean {
  return e.labels[TLS_MODE_LABEL] === 'istio'
}

/** `labels` without the sidecar mark (the same object when it has none). */
export function withoutTlsMode(labels: Record<string, string>): Record<string, string> {
  if (!(TLS_MODE_LABEL in labels)) return labels
  const { [TLS_MODE_LABEL]: _, ...rest } = labels
  return rest
}

export function sdsSecret(name: string): Json {
  return { name, sds_config: { ads: {}, resource_api_version: 'V3' } }
}

/** Istio's SNI for mTLS to a cluster: `outbound_.9080_.v1_.reviews.default.svc.cluster.local`. */
export function istioSni(port: number, subset: string, host: string): string {
  return `outbound_.${port}_.${subset}_.${host}`
}

/** SPIFFE IDs of the endpoints' service accounts, sorted and de-duplicated. */
export function endpointSpiffeIds(trustDomain: string, eps: readonly ServiceEndpoint[], namespace: string): string[] {
  const ids = new Set<string>()
  for (const e of eps) ids.add(`spiffe://${trustDomain}/ns/${namespace}/sa/${e.serviceAccount || 'default'}`)
  return [...ids].sort()
}

function uriSans(ids: readonly string[]): Json[] {
  return ids.map((id) => ({ san_type: 'URI', matcher: { exact: id } }))
}

/** Istio's mTLS upstream context: own certificate and trust bundle over SDS, Istio's SNI and ALPN, expected IDs. */
export function istioMutualTls(sni: string, spiffeIds: readonly string[]): Json {
  const common: Json = {
    tls_certificate_sds_secret_configs: [sdsSecret(SDS_DEFAULT)],
    combined_validation_context: {
      default_validation_context: spiffeIds.length > 0 ? { match_typed_subject_alt_names: uriSans(spiffeIds) } : {},
      validation_context_sds_secret_config: sdsSecret(SDS_ROOTCA),
    },
    alpn_protocols: ISTIO_ALPN,
  }
  return { name: TLS_SOCKET, typed_config: { '@type': TypeUrls.upstreamTls, common_tls_context: common, sni } }
}

/** Why a DestinationRule's `tls` cannot be honoured, or null. */
export function unsupportedClientTls(tls: ClientTLSSettings): string | null {
  if (tls.mode !== 'SIMPLE' && tls.mode !== 'MUTUAL') return null
  if (tls.credentialName !== undefined && tls.credentialName !== '')
    return 'credentialName is not supported (no secret store for client credentials); traffic is plain text'
  if (tls.caCrl !== undefined) return 'caCrl is not supported; traffic is plain text'
  if (tls.insecureSkipVerify === true)
    return 'insecureSkipVerify is not supported (the proxy always verifies); traffic is plain text'
  return null
}

/** TLS origination (SIMPLE, MUTUAL) with the rule's files, SNI and subject alt names. */
function originationTls(tls: ClientTLSSettings): Json {
  const common: Json = {}
  if (tls.mode === 'MUTUAL' && tls.clientCertificate !== undefined && tls.privateKey !== undefined) {
    common.tls_certificates = [
      { certificate_chain: { filename: tls.clientCertificate }, private_key: { filename: tls.privateKey } },
    ]
  }
  const validation: Json = {}
  if (tls.caCertificates !== undefined && tls.caCertificates !== '')
    validation.trusted_ca = { filename: tls.caCertificates }
  const sans = tls.subjectAltNames ?? []
  if (sans.length > 0) {
    validation.match_typed_subject_alt_names = sans.map((s) => ({
      san_type: s.startsWith('spiffe://') ? 'URI' : 'DNS',
      matcher: { exact: s },
    }))
  }
  if (Object.keys(validation).length > 0) common.validation_context = validation
  const ctx: Json = { '@type': TypeUrls.upstreamTls, common_tls_context: common }
  if (tls.sni !== undefined && tls.sni !== '') ctx.sni = tls.sni
  return { name: TLS_SOCKET, typed_config: ctx }
}

/**
 * The transport socket of an outbound cluster, or null for plain text. `tls` is the DestinationRule's effective
 * `tls` for the (subset, port); `eps` the cluster's endpoints.
 */
export function upstreamTransportSocket(
  scope: Scope,
  tls: ClientTLSSettings | undefined,
  target: { host: string; namespace: string; port: number; subset: string },
  eps: readonly ServiceEndpoint[],
  dns: boolean,
): Json | null {
  const mode = tls?.mode
  if (mode === 'DISABLE') return null
  if (mode === 'SIMPLE' || mode === 'MUTUAL') return unsupportedClientTls(tls!) === null ? originationTls(tls!) : null
  const istio = () =>
    istioMutualTls(
      istioSni(target.port, target.subset, target.host),
      endpointSpiffeIds(scope.mesh.trustDomain, eps, target.namespace),
    )
  if (mode === 'ISTIO_MUTUAL') return istio()
  // automatic mTLS: every endpoint has a sidecar that takes mTLS on its port (DNS clusters have no known workloads)
  if (dns || eps.length === 0 || !eps.every((e) => mtlsReady(scope, e, target.namespace))) return null
  return istio()
}

// === inbound ===

function modeOf(m: { mode?: string } | undefined): MtlsMode | undefined {
  const mode = m?.mode
  return mode === 'STRICT' || mode === 'PERMISSIVE' || mode === 'DISABLE' ? mode : undefined
}

/** Which PeerAuthentication decided a port's mode, at which level (`default`: none did, PERMISSIVE). */
export interface MtlsDecision {
  mode: MtlsMode
  level: 'port' | 'workload' | 'namespace' | 'mesh' | 'default'
  /** `namespace/name` of the deciding policy; null for the default */
  policy: string | null
}

/** The namespace of an endpoint's workload, from its source (`workload/ns/name`, `WorkloadEntry/ns/name`). */
function endpointNamespace(e: ServiceEndpoint, fallback: string): string {
  const parts = e.source.split('/')
  return parts.length === 3 && (parts[0] === 'workload' || parts[0] === 'WorkloadEntry') ? parts[1]! : fallback
}

/** Whether an endpoint takes Istio's mTLS: it has a sidecar, and its PeerAuthentication does not DISABLE its port. */
export function mtlsReady(scope: Scope, e: ServiceEndpoint, serviceNamespace: string): boolean {
  if (!hasSidecar(e)) return false
  if (scope.of<PeerAuthenticationSpec>('PeerAuthentication').length === 0) return true
  const workload = { namespace: endpointNamespace(e, serviceNamespace), labels: e.labels }
  const ports = { workloadPort: e.targetPort ?? e.port, servicePort: e.servicePort }
  return peerAuthenticationMode(scope, ports, workload) !== 'DISABLE'
}

/**
 * The PeerAuthentication mode for one port of a workload, by default the proxy's own (`ports`: the workload port
 * and the service port, either may key `portLevelMtls`).
 */
export function peerAuthenticationMode(
  scope: Scope,
  ports: { workloadPort: number; servicePort?: number },
  node: { namespace: string; labels: Record<string, string> } = scope.node,
): MtlsMode {
  return peerAuthenticationDecision(scope, ports, node).mode
}

/** `peerAuthenticationMode`, with the policy and the level that decided it. */
export function peerAuthenticationDecision(
  scope: Scope,
  ports: { workloadPort: number; servicePort?: number },
  node: { namespace: string; labels: Record<string, string> } = scope.node,
): MtlsDecision {
  const all = scope.of<PeerAuthenticationSpec>('PeerAuthentication')
  const selector = (p: Resource<PeerAuthenticationSpec>) => p.spec?.selector?.matchLabels
  const hasSelector = (p: Resource<PeerAuthenticationSpec>) => Object.keys(selector(p) ?? {}).length > 0
  const workload = all.find(
    (p) => p.metadata.namespace === node.namespace && hasSelector(p) && labelsMatch(selector(p)!, node.labels),
  )
  const namespace = all.find((p) => p.metadata.namespace === node.namespace && !hasSelector(p))
  const mesh = all.find((p) => p.metadata.namespace === scope.mesh.rootNamespace && !hasSelector(p))
  const portLevel = workload?.spec?.portLevelMtls
  const port =
    portLevel === undefined
      ? undefined
      : (modeOf(portLevel[String(ports.workloadPort)]) ??
        (ports.servicePort === undefined ? undefined : modeOf(portLevel[String(ports.servicePort)])))
  const name = (p: Resource | undefined) => (p === undefined ? null : `${p.metadata.namespace}/${p.metadata.name}`)
  const levels: [MtlsMode | undefined, MtlsDecision['level'], Resource | undefined][] = [
    [port, 'port', workload],
    [modeOf(workload?.spec?.mtls), 'workload', workload],
    [modeOf(namespace?.spec?.mtls), 'namespace', namespace],
    [modeOf(mesh?.spec?.mtls), 'mesh', mesh],
  ]
  for (const [mode, level, p] of levels) if (mode !== undefined) return { mode, level, policy: name(p) }
  return { mode: 'PERMISSIVE', level: 'default', policy: null }
}

/** The inbound mTLS filter chain's transport socket: own certificate, client certificates required, ROOTCA. */
export function inboundMutualTls(): Json {
  return {
    name: TLS_SOCKET,
    typed_config: {
      '@type': TypeUrls.downstreamTls,
      common_tls_context: {
        tls_certificate_sds_secret_configs: [sdsSecret(SDS_DEFAULT)],
        validation_context_sds_secret_config: sdsSecret(SDS_ROOTCA),
      },
      require_client_certificate: true,
    },
  }
}

/** What the inbound connection manager does with `x-forwarded-client-cert` on an mTLS chain (Istio's). */
export const INBOUND_XFCC: Json = {
  forward_client_cert_details: 'APPEND_FORWARD',
  set_current_client_cert_details: { uri: true },
}
