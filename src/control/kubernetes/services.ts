/**
 * Kubernetes Services and EndpointSlices as registry services, the way Istio's Kubernetes registry maps them:
 *
 * - A Service `svc` in `ns` is `svc.ns.svc.<domain>`; its ports keep their numbers and names. A port's protocol is
 *   its `appProtocol` (`kubernetes.io/h2c` is HTTP2, `kubernetes.io/ws`/`wss` HTTP), else the prefix of its name
 *   (`http`, `http-web`, `grpc-api`, `tcp-db`, `tls`...), else undeclared (Istio sniffs it); a UDP port is UDP.
 * - Endpoints come from the EndpointSlices labelled `kubernetes.io/service-name: svc`: each ready address, for
 *   each service port, on the slice's port of the same name (which is how a named `targetPort` resolves: the
 *   endpoint controller writes the container port it found in the pod). The labels, service account and node of
 *   an address come from its Pod (`targetRef`), its locality from the Node's `topology.kubernetes.io/region` and
 *   `zone` labels (and `topology.istio.io/subzone`).
 * - `clusterIP: None` (headless): resolution NONE, endpoints by pod IP; `type: ExternalName`: resolution DNS to
 *   the external name, MESH_EXTERNAL; otherwise STATIC, MESH_INTERNAL.
 * - The `networking.istio.io/exportTo` annotation (comma-separated) sets where the service is visible.
 */
import { DEFAULT_DOMAIN_SUFFIX } from '../registry/hostname.js'
import type { Service, ServiceEndpoint, ServicePort } from '../registry/registry.js'
import { portProtocol } from '../registry/registry.js'
import type { KubeObject } from './client.js'

/** The caches the mapping reads, as the API server sends them. */
export interface KubeState {
  services: readonly KubeObject[]
  endpointSlices: readonly KubeObject[]
  pods: readonly KubeObject[]
  nodes: readonly KubeObject[]
  namespaces?: readonly KubeObject[]
}

interface KService {
  metadata: { name: string; namespace: string; annotations?: Record<string, string> }
  spec?: {
    type?: string
    clusterIP?: string
    externalName?: string
    ports?: Array<{
      name?: string
      port: number
      protocol?: string
      appProtocol?: string
      targetPort?: number | string
    }>
  }
}

interface KSlice {
  metadata: { name: string; namespace: string; labels?: Record<string, string> }
  addressType?: string
  endpoints?: Array<{
    addresses: string[]
    conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null }
    targetRef?: { kind?: string; name?: string; namespace?: string }
    nodeName?: string
    zone?: string
  }>
  ports?: Array<{ name?: string | null; port?: number | null; protocol?: string; appProtocol?: string }> | null
}

interface KPod {
  metadata: { name: string; namespace: string; labels?: Record<string, string> }
  spec?: { serviceAccountName?: string; nodeName?: string }
  status?: { podIP?: string }
}

/** Istio's protocol for a Service port. */
export function kubePortProtocol(port: { name?: string; protocol?: string; appProtocol?: string }): string {
  if (port.protocol === 'UDP') return 'UDP'
  const app = port.appProtocol?.toLowerCase()
  if (app === 'kubernetes.io/h2c') return 'HTTP2'
  if (app === 'kubernetes.io/ws' || app === 'kubernetes.io/wss') return 'HTTP'
  if (app !== undefined && app !== '') return portProtocol(app, '')
  return portProtocol('', port.name ?? '')
}

export function kubeServices(state: KubeState, domain = DEFAULT_DOMAIN_SUFFIX): Service[] {
  const pods = new Map<string, KPod>()
  for (const p of state.pods as unknown as KPod[]) pods.set(`${p.metadata.namespace}/${p.metadata.name}`, p)
  const localities = new Map<string, string>()
  for (const n of state.nodes) {
    const l = n.metadata?.labels ?? {}
    const parts = [
      l['topology.kubernetes.io/region'] ?? '',
      l['topology.kubernetes.io/zone'] ?? '',
      l['topology.istio.io/subzone'] ?? '',
    ]
    localities.set(n.metadata?.name ?? '', parts.join('/').replace(/\/+$/, ''))
  }
  const slicesOf = new Map<string, KSlice[]>()
  for (const s of state.endpointSlices as unknown as KSlice[]) {
    const svc = s.metadata.labels?.['kubernetes.io/service-name']
    if (svc === undefined || s.addressType === 'FQDN') continue
    const key = `${s.metadata.namespace}/${svc}`
    slicesOf.set(key, [...(slicesOf.get(key) ?? []), s])
  }
  const deleting = new Set(
    (state.namespaces ?? [])
      .filter((n) => n.status !== undefined && (n.status as { phase?: string }).phase === 'Terminating')
      .map((n) => n.metadata?.name),
  )

  const out: Service[] = []
  for (const svc of state.services as unknown as KService[]) {
    const ns = svc.metadata.namespace
    if (deleting.has(ns)) continue
    const spec = svc.spec ?? {}
    const hostname = `${svc.metadata.name}.${ns}.svc.${domain}`
    const ports: ServicePort[] = (spec.ports ?? [])
      .map((p) => ({ number: p.port, name: p.name ?? '', protocol: kubePortProtocol(p) }))
      .sort((a, b) => a.number - b.number)
    const exportTo = (svc.metadata.annotations?.['networking.istio.io/exportTo'] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '')
    const base = {
      hostname,
      namespace: ns,
      ports,
      exportTo: exportTo.length > 0 ? exportTo : ['*'],
      source: `Service/${ns}/${svc.metadata.name}`,
    }
    if (spec.type === 'ExternalName') {
      const address = spec.externalName ?? ''
      out.push({
        ...base,
        resolution: 'DNS',
        location: 'MESH_EXTERNAL',
        endpoints:
          address === ''
            ? []
            : ports.map((p) => endpoint(address, p.number, p.number, {}, 'default', '', true, base.source)),
      })
      continue
    }
    const endpoints: ServiceEndpoint[] = []
    const seen = new Set<string>()
    for (const slice of slicesOf.get(`${ns}/${svc.metadata.name}`) ?? []) {
      for (const sp of ports) {
        // the slice's port of the service port's name; a Service with one unnamed port has one unnamed slice port
        const slicePort = (slice.ports ?? []).find((q) => (q.name ?? '') === sp.name)
        if (slicePort === undefined || typeof slicePort.port !== 'number') continue
        for (const e of slice.endpoints ?? []) {
          // Kubernetes: a nil ready condition means ready
          const ready = e.conditions?.ready !== false
          if (!ready && e.conditions?.serving !== true) continue
          const pod =
            e.targetRef?.kind === 'Pod' ? pods.get(`${e.targetRef.namespace ?? ns}/${e.targetRef.name}`) : undefined
          const nodeName = e.nodeName ?? pod?.spec?.nodeName ?? ''
          for (const address of e.addresses) {
            const key = `${address}|${sp.number}|${slicePort.port}`
            if (seen.has(key)) continue
            seen.add(key)
            endpoints.push(
              endpoint(
                address,
                sp.number,
                slicePort.port,
                pod?.metadata.labels ?? {},
                pod?.spec?.serviceAccountName ?? 'default',
                localities.get(nodeName) ?? '',
                ready,
                pod !== undefined
                  ? `Pod/${pod.metadata.namespace}/${pod.metadata.name}`
                  : `EndpointSlice/${ns}/${slice.metadata.name}`,
              ),
            )
          }
        }
      }
    }
    endpoints.sort(
      (a, b) =>
        a.servicePort - b.servicePort || cmp(a.address, b.address) || a.port - b.port || cmp(a.source, b.source),
    )
    out.push({
      ...base,
      resolution: spec.clusterIP === 'None' ? 'NONE' : 'STATIC',
      location: 'MESH_INTERNAL',
      endpoints,
    })
  }
  return out.sort((a, b) => cmp(a.hostname, b.hostname) || cmp(a.namespace, b.namespace))
}

function endpoint(
  address: string,
  servicePort: number,
  port: number,
  labels: Record<string, string>,
  serviceAccount: string,
  locality: string,
  healthy: boolean,
  source: string,
): ServiceEndpoint {
  return { address, servicePort, port, labels: { ...labels }, serviceAccount, locality, weight: 1, healthy, source }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
