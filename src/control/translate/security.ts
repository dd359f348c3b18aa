/**
 * A workload's security as its sidecar gets it, computed by the translator's own functions (what `loom describe
 * workload` shows): per inbound port the PeerAuthentication mode and the policy that decided it (mtls.ts), the
 * DestinationRule TLS modes of the destinations it calls where a rule sets one, and the AuthorizationPolicies and
 * RequestAuthentications that apply to it (authz.ts, authn.ts).
 */
import type { ClientTLSSettings, Resource, TrafficPolicy } from '../../api/index.js'
import type { RegisteredWorkload, Service } from '../registry/registry.js'
import { isHttpProtocol } from '../registry/registry.js'
import { requestAuthentications } from './authn.js'
import { applicablePolicies, DRY_RUN_ANNOTATION, httpOnlyFields } from './authz.js'
import { ownEndpoints } from './listeners.js'
import { type MtlsDecision, peerAuthenticationDecision } from './mtls.js'
import { resolveMeshConfig, Scope } from './scope.js'
import type { TranslateInput } from './translate.js'

export interface PortSecurity extends MtlsDecision {
  servicePort: number
  workloadPort: number
  protocol: string
  /** `http` (connection manager, RBAC HTTP filters) or `tcp` (tcp_proxy, network RBAC filters) */
  filter: 'http' | 'tcp'
}

export interface OutboundTls {
  host: string
  /** '' for the whole host */
  subset: string
  /** 0 for every port */
  port: number
  mode: string
  /** `namespace/name` of the DestinationRule */
  rule: string
}

export interface PolicyRef {
  name: string
  namespace: string
  action?: string
  dryRun?: boolean
  /** AuthorizationPolicy rules that read HTTP requests (on the workload's TCP ports: left out of ALLOW, widened in DENY) */
  httpOnlyRules?: number[]
}

export interface WorkloadSecurity {
  workload: { name: string; namespace: string; address: string; labels: Record<string, string>; serviceAccount: string }
  ports: PortSecurity[]
  outboundTls: OutboundTls[]
  authorizationPolicies: PolicyRef[]
  requestAuthentications: PolicyRef[]
}

function tlsRows(
  out: OutboundTls[],
  host: string,
  subset: string,
  tp: TrafficPolicy | undefined,
  rule: (t: ClientTLSSettings) => string,
) {
  if (tp === undefined) return
  if (tp.tls?.mode !== undefined) out.push({ host, subset, port: 0, mode: tp.tls.mode, rule: rule(tp.tls) })
  for (const pl of tp.portLevelSettings ?? []) {
    if (pl.tls?.mode !== undefined)
      out.push({ host, subset, port: pl.port?.number ?? 0, mode: pl.tls.mode, rule: rule(pl.tls) })
  }
}

/** The security of a registered workload, as the translator gives its sidecar. */
export function workloadSecurity(input: TranslateInput, w: RegisteredWorkload): WorkloadSecurity {
  const node = {
    id: `sidecar~${w.address}~${w.name}.${w.namespace}~${w.namespace}.svc.cluster.local`,
    kind: 'sidecar' as const,
    namespace: w.namespace,
    labels: w.labels,
    serviceAccount: w.serviceAccount,
    ip: w.address,
    generator: 'envoy' as const,
  }
  const scope = new Scope(input.resources, input.services as Service[], node, resolveMeshConfig(input.meshConfig))
  const ports: PortSecurity[] = []
  const seen = new Set<number>()
  for (const { service, endpoint } of ownEndpoints(scope)) {
    if (seen.has(endpoint.servicePort)) continue
    seen.add(endpoint.servicePort)
    const protocol = service.ports.find((p) => p.number === endpoint.servicePort)?.protocol ?? ''
    if (protocol === 'UDP') continue
    // the port policies name, as the inbound listeners take it (the targetPort when the registered port is the sidecar's)
    const workloadPort = endpoint.targetPort ?? endpoint.port
    ports.push({
      servicePort: endpoint.servicePort,
      workloadPort,
      protocol: protocol || 'HTTP (undeclared)',
      filter: isHttpProtocol(protocol) ? 'http' : 'tcp',
      ...peerAuthenticationDecision(scope, { workloadPort, servicePort: endpoint.servicePort }),
    })
  }
  ports.sort((a, b) => a.servicePort - b.servicePort)
  const outboundTls: OutboundTls[] = []
  for (const svc of scope.services) {
    const dr = scope.destinationRule(svc.hostname)
    if (dr === undefined) continue
    // the rule that set a tls block (rules for one host merge, the first policy wins)
    const ruleOf = () => {
      const src = dr.sources.find((s) => JSON.stringify(s.spec).includes('"tls"')) ?? dr.sources[0]!
      return `${src.metadata.namespace}/${src.metadata.name}`
    }
    tlsRows(outboundTls, svc.hostname, '', dr.spec.trafficPolicy, ruleOf)
    for (const sub of dr.spec.subsets ?? []) tlsRows(outboundTls, svc.hostname, sub.name, sub.trafficPolicy, ruleOf)
  }
  const hasTcp = ports.some((p) => p.filter === 'tcp')
  const ref = (r: Resource) => ({ name: r.metadata.name, namespace: r.metadata.namespace })
  return {
    workload: {
      name: w.name,
      namespace: w.namespace,
      address: w.address,
      labels: w.labels,
      serviceAccount: w.serviceAccount,
    },
    ports,
    outboundTls,
    authorizationPolicies: applicablePolicies(scope).map((p) => {
      const out: PolicyRef = { ...ref(p), action: p.spec?.action ?? 'ALLOW' }
      if ((p.metadata.annotations?.[DRY_RUN_ANNOTATION] ?? '').toLowerCase() === 'true') out.dryRun = true
      if (hasTcp) {
        const http = (p.spec?.rules ?? []).flatMap((r, i) => (httpOnlyFields(r).length > 0 ? [i] : []))
        if (http.length > 0) out.httpOnlyRules = http
      }
      return out
    }),
    requestAuthentications: requestAuthentications(scope).map(ref),
  }
}
