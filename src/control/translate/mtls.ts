/**
 * Istio's mutual TLS between sidecars, as pilot emits it.
 *
 * Outbound (`upstreamTransportSocket`): a cluster's TLS comes from its DestinationRule's `tls`, else from automatic
 * mutual TLS.
 * - Automatic mTLS: an endpoint has a sidecar when it carries the label `security.istio.io/tlsMode: istio` (Istio's
 *   injector sets it on pods; `loom up` sets it on the workloads it registers when the control plane issues
 *   certificates; a WorkloadEntry sets it itself). A cluster whose endpoints all have sidecars gets Istio's mTLS
 *   context as its `transport_socket`. A cluster with some endpoints with sidecars and some without gets Istio's
 *   per-endpoint switch (pilot's buildAutoMtlsSettings): `transport_socket_matches` `tlsMode-istio` (match
 *   `{tlsMode: istio}`: the mTLS context) then `tlsMode-disabled` (match `{}`: raw_buffer), and its EDS endpoints
 *   with sidecars carry `filter_metadata["envoy.transport_socket_match"] = {tlsMode: istio}`. A cluster without
 *   sidecar endpoints stays plain text. An endpoint whose own PeerAuthentication mode for its port is DISABLE
 *   counts as one without a sidecar (Istio's mTLS checker): its sidecar would not take TLS there.
 * - `ISTIO_MUTUAL`: Istio's mTLS context whatever the endpoints; `DISABLE`: plain text; `SIMPLE` / `MUTUAL`: TLS
 *   origination with the rule's `sni`, `subjectAltNames`, `caCertificates` and (MUTUAL) `clientCertificate` /
 *   `privateKey` files, or on gateways a `credentialName` (SDS `kubernetes://<name>`, `kubernetes://<name>-cacert`,
 *   gateway-credentials.ts; sidecars get plain text from such a rule, as in Istio). `caCrl` and `insecureSkipVerify`
 *   cannot be honoured (no CRLs, the proxy always verifies): such a rule's cluster stays plain text and analyze warns.
 * - Istio's mTLS context: certificate `default` and trust bundle `ROOTCA` over SDS (ADS), SNI
 *   `outbound_.<port>_.<subset>_.<host>`, ALPN `istio-peer-exchange`, `istio`, and as the accepted subject alt
 *   names the rule's `subjectAltNames` (ISTIO_MUTUAL), else the service's accounts as pilot computes them: the
 *   ServiceEntry's `subjectAltNames` plus the SPIFFE IDs of the endpoints' service accounts. A ServiceEntry's
 *   `subjectAltNames` are also what SIMPLE / MUTUAL accept when the rule names none (pilot's constructUpstreamTLS).
 *
 * Inbound (`peerAuthenticationMode`): PeerAuthentication's mode for a workload port, most specific first: the
 * port's `portLevelMtls` of the workload policy, the workload policy (a selector matching the workload, in its
 * namespace), the namespace policy (no selector), the mesh policy (root namespace, no selector); UNSET inherits, the
 * default is PERMISSIVE. At each level the oldest policy wins, as in Istio.
 */
import type { ClientTLSSettings, PeerAuthenticationSpec, Resource } from '../../api/index.js'
import { TypeUrls } from '../../config/type-urls.js'
import { labelsMatch } from '../registry/hostname.js'
import { credentialCaSdsName, credentialSdsName } from './gateway-credentials.js'
import type { ServiceEndpoint } from '../registry/registry.js'
import type { Scope } from './scope.js'
import type { Json } from './util.js'

/** the endpoint label that says a workload has a sidecar (Istio's) */
export const TLS_MODE_LABEL = 'security.istio.io/tlsMode'
/** SDS names of the proxy's own certificate and of the trust bundle (Istio's) */
export const SDS_DEFAULT = 'default'
export const SDS_ROOTCA = 'ROOTCA'
/** the ALPN Istio's sidecars offer to each other (`istio-peer-exchange`: the TCP metadata exchange) */
export const ISTIO_ALPN = ['istio-peer-exchange', 'istio']
/** the ALPN of an inbound mTLS chain of a TCP port (Istio's ALPNDownstreamWithMxc): the exchange first */
export const INBOUND_TCP_ALPN = ['istio-peer-exchange', 'h2', 'http/1.1']
/**
 * Istio's TCP metadata exchange (`istio.metadata_exchange`): as a network filter it runs on inbound TCP chains,
 * in a cluster's `filters` on the connections to the cluster (pilot's TCPListenerMx and TCPClusterMx).
 */
export const METADATA_EXCHANGE: Json = {
  name: 'istio.metadata_exchange',
  typed_config: { '@type': TypeUrls.metadataExchange, protocol: 'istio-peer-exchange' },
}
export const TLS_SOCKET = 'envoy.transport_sockets.tls'
/** the EDS metadata namespace a cluster's transport_socket_matches read (Envoy's), and Istio's key in it */
export const TRANSPORT_SOCKET_MATCH = 'envoy.transport_socket_match'
export const TLS_MODE_MATCH: Json = { tlsMode: 'istio' }
/** `filter_metadata` of an EDS endpoint with a sidecar, in a cluster that switches per endpoint */
export const SIDECAR_ENDPOINT_METADATA: Json = { filter_metadata: { [TRANSPORT_SOCKET_MATCH]: TLS_MODE_MATCH } }
/** plain text (Envoy's raw_buffer transport socket) */
export const RAW_BUFFER_SOCKET: Json = {
  name: 'envoy.transport_sockets.raw_buffer',
  typed_config: { '@type': TypeUrls.rawBuffer },
}

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

/**
 * The service's accounts (pilot's PushContext.ServiceAccounts): the ServiceEntry's `subjectAltNames` and the SPIFFE
 * IDs of the endpoints' service accounts, sorted and de-duplicated.
 */
export function endpointSpiffeIds(
  trustDomain: string,
  eps: readonly ServiceEndpoint[],
  namespace: string,
  serviceSans: readonly string[] = [],
): string[] {
  const ids = new Set<string>(serviceSans)
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

/**
 * Why a DestinationRule's `tls` cannot be honoured, or null. `credentialName` is honoured on gateways only (as
 * Istio, whose sidecars get no TLS from a rule with a credential and no workloadSelector); `gateway` says which.
 */
export function unsupportedClientTls(tls: ClientTLSSettings, gateway = false): string | null {
  if (tls.mode !== 'SIMPLE' && tls.mode !== 'MUTUAL') return null
  if (!gateway && credentialOf(tls) !== undefined)
    return 'credentialName applies to gateways only (as in Istio); from sidecars this traffic is plain text'
  if (tls.caCrl !== undefined) return 'caCrl is not supported; traffic is plain text'
  if (tls.insecureSkipVerify === true)
    return 'insecureSkipVerify is not supported (the proxy always verifies); traffic is plain text'
  return null
}

function credentialOf(tls: ClientTLSSettings): string | undefined {
  return tls.credentialName === undefined || tls.credentialName === '' ? undefined : tls.credentialName
}

/**
 * TLS origination (SIMPLE, MUTUAL) with the rule's files, SNI and subject alt names (else the service's); with a
 * `credentialName` (gateways), the client certificate (MUTUAL) is SDS `kubernetes://<name>` and the CA
 * `kubernetes://<name>-cacert`, as Istio's egress gateways read them.
 */
function originationTls(tls: ClientTLSSettings, serviceSans: readonly string[]): Json {
  const common: Json = {}
  const credential = credentialOf(tls)
  if (credential !== undefined && tls.mode === 'MUTUAL') {
    common.tls_certificate_sds_secret_configs = [sdsSecret(credentialSdsName(credential))]
  } else if (tls.mode === 'MUTUAL' && tls.clientCertificate !== undefined && tls.privateKey !== undefined) {
    common.tls_certificates = [
      { certificate_chain: { filename: tls.clientCertificate }, private_key: { filename: tls.privateKey } },
    ]
  }
  const validation: Json = {}
  if (tls.caCertificates !== undefined && tls.caCertificates !== '')
    validation.trusted_ca = { filename: tls.caCertificates }
  const own = tls.subjectAltNames ?? []
  const sans = own.length > 0 ? own : serviceSans
  if (sans.length > 0) {
    validation.match_typed_subject_alt_names = sans.map((s) => ({
      san_type: s.startsWith('spiffe://') ? 'URI' : 'DNS',
      matcher: { exact: s },
    }))
  }
  if (credential !== undefined) {
    common.combined_validation_context = {
      default_validation_context: validation,
      validation_context_sds_secret_config: sdsSecret(credentialCaSdsName(credential)),
    }
  } else if (Object.keys(validation).length > 0) common.validation_context = validation
  const ctx: Json = { '@type': TypeUrls.upstreamTls, common_tls_context: common }
  if (tls.sni !== undefined && tls.sni !== '') ctx.sni = tls.sni
  return { name: TLS_SOCKET, typed_config: ctx }
}

/**
 * How an outbound cluster's connections are made: `transport_socket` (absent: plain text), or Istio's
 * `transport_socket_matches` with `markSidecars` (the EDS endpoints that take mTLS then carry
 * SIDECAR_ENDPOINT_METADATA).
 */
export interface UpstreamTransport {
  transport_socket?: Json
  transport_socket_matches?: Json[]
  /** the endpoints (`address|port`) that get SIDECAR_ENDPOINT_METADATA, with transport_socket_matches; else null */
  markSidecars: ReadonlySet<string> | null
}

const PLAIN: UpstreamTransport = { markSidecars: null }

/**
 * The transport of an outbound cluster. `tls` is the DestinationRule's effective `tls` for the (subset, port);
 * `eps` the cluster's endpoints; `serviceSans` the ServiceEntry's `subjectAltNames`.
 */
export function upstreamTransport(
  scope: Scope,
  tls: ClientTLSSettings | undefined,
  target: { host: string; namespace: string; port: number; subset: string },
  eps: readonly ServiceEndpoint[],
  dns: boolean,
  serviceSans: readonly string[] = [],
): UpstreamTransport {
  const mode = tls?.mode
  if (mode === 'DISABLE') return PLAIN
  if (mode === 'SIMPLE' || mode === 'MUTUAL') {
    if (unsupportedClientTls(tls!, scope.node.kind === 'gateway') !== null) return PLAIN
    return { transport_socket: originationTls(tls!, serviceSans), markSidecars: null }
  }
  const istio = (sans: readonly string[] | undefined) =>
    istioMutualTls(
      istioSni(target.port, target.subset, target.host),
      sans !== undefined && sans.length > 0
        ? sans
        : endpointSpiffeIds(scope.mesh.trustDomain, eps, target.namespace, serviceSans),
    )
  if (mode === 'ISTIO_MUTUAL') return { transport_socket: istio(tls?.subjectAltNames), markSidecars: null }
  // automatic mTLS: endpoints with a sidecar that takes mTLS on their port (DNS clusters have no known workloads)
  if (dns) return PLAIN
  const ready = eps.filter((e) => mtlsReady(scope, e, target.namespace))
  if (ready.length === 0) return PLAIN
  if (ready.length === eps.length) return { transport_socket: istio(undefined), markSidecars: null }
  // some endpoints take mTLS, some do not: Istio's switch per endpoint
  return {
    transport_socket_matches: [
      { name: 'tlsMode-istio', match: TLS_MODE_MATCH, transport_socket: istio(undefined) },
      { name: 'tlsMode-disabled', match: {}, transport_socket: RAW_BUFFER_SOCKET },
    ],
    markSidecars: new Set(ready.map((e) => `${e.address}|${e.port}`)),
  }
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

/**
 * The inbound mTLS filter chain's transport socket: own certificate, client certificates required, ROOTCA. A TCP
 * port's (`tcp`) offers Istio's ALPN with the metadata exchange first (INBOUND_TCP_ALPN); an HTTP port's leaves
 * ALPN to the connection manager's codecs.
 */
export function inboundMutualTls(tcp = false): Json {
  const common: Json = {
    tls_certificate_sds_secret_configs: [sdsSecret(SDS_DEFAULT)],
    validation_context_sds_secret_config: sdsSecret(SDS_ROOTCA),
  }
  if (tcp) common.alpn_protocols = INBOUND_TCP_ALPN
  return {
    name: TLS_SOCKET,
    typed_config: { '@type': TypeUrls.downstreamTls, common_tls_context: common, require_client_certificate: true },
  }
}

/** What the inbound connection manager does with `x-forwarded-client-cert` on an mTLS chain (Istio's). */
export const INBOUND_XFCC: Json = {
  forward_client_cert_details: 'APPEND_FORWARD',
  set_current_client_cert_details: { uri: true },
}
