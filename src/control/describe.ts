/**
 * `GET /api/v1/describe/service/:namespace/:name` (what `loom describe service` prints and the dashboard's service
 * page shows): the service from the registry; the DestinationRules and VirtualServices that name it, as stored and
 * laid out (each http route's matches and destinations with weights; each subset with the endpoints its labels
 * match); every endpoint with its health in the registry and the live state its callers' proxies see (outlier
 * ejection, active health checks, from their admin `/clusters`, as `loom explain` reads them); and the policies that
 * select the service's workloads, as the translator applies them (translate/security.ts).
 */
import type { Resource } from '../api/resource.js'
import { TYPE_URL } from '../xds/snapshot.js'
import type { ControlPlane } from './control.js'
import type { Service, ServiceEndpoint } from './registry/registry.js'
import { workloadSecurity } from './translate/security.js'

/** The service a name means: `reviews` (in `namespace`), `reviews.other`, or a full host name. */
export function serviceHostname(name: string, namespace: string): string {
  const parts = name.split('.')
  return parts.length > 2 ? name : `${parts[0]}.${parts[1] ?? namespace}.svc.cluster.local`
}

export class DescribeError extends Error {}

interface Json {
  [k: string]: unknown
}

export interface RouteDestination {
  host: string
  subset: string
  port: number | null
  /** percent (Istio's default: 100 for a route's only destination, else 0) */
  weight: number
}

export interface HttpRouteView {
  /** its position in the VirtualService's `http` list, from 1 */
  index: number
  name: string | null
  /** the route's `match` list as written; null: every request */
  match: unknown[] | null
  destinations: RouteDestination[]
  /** what the route does besides (or instead of) routing: `redirect`, `direct response`, `fault`, `timeout 2s`... */
  notes: string[]
}

export interface VirtualServiceView {
  namespace: string
  name: string
  hosts: string[]
  gateways: string[]
  http: HttpRouteView[]
}

export interface SubsetView {
  /** `namespace/name` of the DestinationRule */
  rule: string
  name: string
  labels: Record<string, string>
  /** `address:port` of the endpoints the labels match */
  endpoints: string[]
  healthy: number
  trafficPolicy: unknown
}

/** How one caller's proxy sees an endpoint in one of its clusters. */
export interface HostObservation {
  proxy: string
  cluster: string
  edsHealthStatus: string
  ejected: boolean
  failedActiveHealthCheck: boolean
  activeRequests: number
}

export interface EndpointView extends ServiceEndpoint {
  /** the registered workload behind it (`workload/ns/name` source), else null */
  workload: string | null
  /**
   * `healthy`; `unhealthy` (the registry: its heartbeats say so); `ejected` (a caller's outlier detection left it
   * out); `failing health checks` (a caller's active health checks)
   */
  state: 'healthy' | 'unhealthy' | 'ejected' | 'failing health checks'
  observations: HostObservation[]
}

export interface PolicyView {
  kind: 'AuthorizationPolicy' | 'PeerAuthentication' | 'RequestAuthentication'
  namespace: string
  name: string
  /** AuthorizationPolicy action; PeerAuthentication: the mode per port (`9080 STRICT`) */
  detail: string
  dryRun?: boolean
  /** the service's workloads it selects */
  workloads: string[]
}

export interface ServiceDescription {
  service: Service
  destinationRules: Resource<Json>[]
  virtualServices: Resource<Json>[]
  routes: VirtualServiceView[]
  subsets: SubsetView[]
  endpoints: EndpointView[]
  policies: PolicyView[]
  /** the callers' proxies read for the live host states, and those that could not be read */
  live: { proxies: string[]; errors: string[] }
}

function labelsMatch(want: Record<string, string> | undefined, have: Record<string, string>): boolean {
  return Object.entries(want ?? {}).every(([k, v]) => have[k] === v)
}

function routesOf(vs: Resource<Json>): VirtualServiceView {
  const spec = vs.spec
  const http = (spec.http ?? []) as Json[]
  return {
    namespace: vs.metadata.namespace,
    name: vs.metadata.name,
    hosts: (spec.hosts as string[] | undefined) ?? [],
    gateways: (spec.gateways as string[] | undefined) ?? ['mesh'],
    http: http.map((h, i) => {
      const route = (h.route ?? []) as { destination: Json; weight?: number }[]
      const notes: string[] = []
      if (h.redirect !== undefined) notes.push('redirect')
      if (h.directResponse !== undefined) notes.push('direct response')
      if (h.fault !== undefined) notes.push(`fault ${Object.keys(h.fault as Json).join('+')}`)
      if (h.timeout !== undefined) notes.push(`timeout ${String(h.timeout)}`)
      if (h.retries !== undefined) notes.push(`retries ${String((h.retries as Json).attempts ?? '')}`.trim())
      if (h.mirror !== undefined) notes.push(`mirror ${String((h.mirror as Json).host)}`)
      if (h.rewrite !== undefined) notes.push('rewrite')
      return {
        index: i + 1,
        name: typeof h.name === 'string' ? h.name : null,
        match: h.match === undefined ? null : (h.match as unknown[]),
        destinations: route.map((r) => ({
          host: String(r.destination.host),
          subset: typeof r.destination.subset === 'string' ? r.destination.subset : '',
          port:
            typeof (r.destination.port as Json | undefined)?.number === 'number'
              ? (r.destination.port as { number: number }).number
              : null,
          weight: r.weight ?? (route.length === 1 ? 100 : 0),
        })),
        notes,
      }
    }),
  }
}

/** The proxies that have a cluster of `hostname` (its callers), with their admin address. */
function callers(cp: ControlPlane, hostname: string): { name: string; admin: string }[] {
  const out: { name: string; admin: string }[] = []
  for (const t of cp.scrapeTargets()) {
    const clusters = cp.xds.cache.getSnapshot(t.nodeId)?.resources.get(TYPE_URL.cluster)?.items
    if (clusters === undefined) continue
    let has = false
    for (const name of clusters.keys()) if (name.startsWith('outbound|') && name.endsWith(`|${hostname}`)) has = true
    if (has) out.push({ name: `${t.workload}.${t.namespace}`, admin: t.adminAddress })
  }
  return out
}

async function readClusters(admin: string): Promise<Json[]> {
  const res = await fetch(`http://${admin}/clusters?format=json`, { signal: AbortSignal.timeout(3000) })
  if (!res.ok) throw new Error(`admin ${admin} answered ${res.status}`)
  return ((await res.json()) as { cluster_statuses?: Json[] }).cluster_statuses ?? []
}

export async function describeService(cp: ControlPlane, namespace: string, name: string): Promise<ServiceDescription> {
  const fqdn = serviceHostname(name, namespace)
  const services = cp.registry.services()
  // a host name as it is (`api.example.com`), else the short forms
  const svc = services.find((s) => s.hostname === name) ?? services.find((s) => s.hostname === fqdn)
  if (svc === undefined)
    throw new DescribeError(`no service ${fqdn}; services: ${services.map((s) => s.hostname).join(', ') || '(none)'}`)
  const short = svc.hostname.split('.')[0]!
  const names = new Set([svc.hostname, short, `${short}.${svc.namespace}`])
  const list = async (kind: string) => (await cp.store.list(kind)).items as Resource<Json>[]
  const drs = (await list('DestinationRule')).filter((d) => names.has(String(d.spec.host)))
  const vss = (await list('VirtualService')).filter((v) =>
    (v.spec.hosts as string[] | undefined)?.some((h) => names.has(h)),
  )

  const subsets: SubsetView[] = []
  for (const d of drs) {
    for (const sub of (d.spec.subsets ?? []) as {
      name: string
      labels?: Record<string, string>
      trafficPolicy?: unknown
    }[]) {
      const match = svc.endpoints.filter((e) => labelsMatch(sub.labels, e.labels))
      subsets.push({
        rule: `${d.metadata.namespace}/${d.metadata.name}`,
        name: sub.name,
        labels: sub.labels ?? {},
        endpoints: match.map((e) => `${e.address}:${e.port}`),
        healthy: match.filter((e) => e.healthy).length,
        trafficPolicy: sub.trafficPolicy ?? null,
      })
    }
  }

  // the live host states: every caller's proxy, read at once
  const who = callers(cp, svc.hostname)
  const errors: string[] = []
  const observed = new Map<string, HostObservation[]>()
  await Promise.all(
    who.map(async (p) => {
      let statuses: Json[]
      try {
        statuses = await readClusters(p.admin)
      } catch (err) {
        errors.push(`${p.name}: ${(err as Error).message}`)
        return
      }
      for (const c of statuses) {
        const cluster = String(c.name)
        if (!cluster.startsWith('outbound|') || !cluster.endsWith(`|${svc.hostname}`)) continue
        for (const h of (c.host_statuses ?? []) as Json[]) {
          const sa = (h.address as Json | undefined)?.socket_address as Json | undefined
          const hs = (h.health_status ?? {}) as Json
          const key = `${String(sa?.address)}:${Number(sa?.port_value)}`
          let list = observed.get(key)
          if (list === undefined) observed.set(key, (list = []))
          list.push({
            proxy: p.name,
            cluster,
            edsHealthStatus: String(hs.eds_health_status ?? 'UNKNOWN'),
            ejected: hs.failed_outlier_check === true,
            failedActiveHealthCheck: hs.failed_active_health_check === true,
            activeRequests: Number((h.stats as Json | undefined)?.rq_active ?? 0),
          })
        }
      }
    }),
  )
  const endpoints: EndpointView[] = svc.endpoints.map((e) => {
    const observations = (observed.get(`${e.address}:${e.port}`) ?? []).sort(
      (a, b) => a.proxy.localeCompare(b.proxy) || a.cluster.localeCompare(b.cluster),
    )
    const src = e.source.split('/')
    return {
      ...e,
      workload: src[0] === 'workload' && src.length === 3 ? src[2]! : null,
      state: !e.healthy
        ? 'unhealthy'
        : observations.some((o) => o.ejected)
          ? 'ejected'
          : observations.some((o) => o.failedActiveHealthCheck)
            ? 'failing health checks'
            : 'healthy',
      observations,
    }
  })

  return {
    service: svc,
    destinationRules: drs,
    virtualServices: vss,
    routes: vss.map(routesOf),
    subsets,
    endpoints,
    policies: policiesOf(cp, svc),
    live: { proxies: who.map((p) => p.name).sort(), errors: errors.sort() },
  }
}

/** The policies that select the service's registered workloads, each with the workloads it selects. */
function policiesOf(cp: ControlPlane, svc: Service): PolicyView[] {
  const ids = new Set(
    svc.endpoints.flatMap((e) => {
      const p = e.source.split('/')
      return p[0] === 'workload' && p.length === 3 ? [`${p[1]}/${p[2]}`] : []
    }),
  )
  const workloads = cp.registry.workloads().filter((w) => ids.has(w.id))
  if (workloads.length === 0) return []
  const input = cp.translateInput()
  const found = new Map<string, PolicyView>()
  const add = (p: Omit<PolicyView, 'workloads'>, workload: string) => {
    const key = `${p.kind}/${p.namespace}/${p.name}`
    let v = found.get(key)
    if (v === undefined) found.set(key, (v = { ...p, workloads: [] }))
    if (!v.workloads.includes(workload)) v.workloads.push(workload)
  }
  for (const w of workloads) {
    const sec = workloadSecurity(input, w)
    for (const p of sec.authorizationPolicies)
      add(
        {
          kind: 'AuthorizationPolicy',
          namespace: p.namespace,
          name: p.name,
          detail: p.action ?? 'ALLOW',
          ...(p.dryRun ? { dryRun: true } : {}),
        },
        w.name,
      )
    for (const p of sec.requestAuthentications)
      add({ kind: 'RequestAuthentication', namespace: p.namespace, name: p.name, detail: 'JWT' }, w.name)
    for (const port of sec.ports) {
      if (port.policy === null) continue
      const [ns, name] = port.policy.split('/') as [string, string]
      add({ kind: 'PeerAuthentication', namespace: ns, name, detail: '' }, w.name)
      const v = found.get(`PeerAuthentication/${ns}/${name}`)!
      const mode = `${port.servicePort} ${port.mode} (${port.level})`
      v.detail = v.detail === '' ? mode : v.detail.split(', ').includes(mode) ? v.detail : `${v.detail}, ${mode}`
    }
  }
  for (const v of found.values()) v.workloads.sort()
  return [...found.values()].sort(
    (a, b) => a.kind.localeCompare(b.kind) || a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name),
  )
}

/** One of a workload's proxies and the certificate it holds (its admin `/certs`, as `loom certs` reads it). */
export interface ProxyCertificate {
  proxy: string
  admin: string
  certificate: {
    spiffeId: string
    serialNumber: string
    issuer: string | null
    notBefore: string
    notAfter: string
    nextRenewal: string | null
    lastRenewalError: string | null
  } | null
  /** why there is no certificate: the proxy did not answer, runs without an identity, or has none yet */
  error: string | null
}

export interface WorkloadIdentity {
  namespace: string
  name: string
  /** from the registration; null for a proxy the registry does not know (a gateway) */
  serviceAccount: string | null
  /** what its certificate should name (null without a CA or a service account) */
  spiffeId: string | null
  proxies: ProxyCertificate[]
}

/** `GET /api/v1/workloads/:namespace/:name/identity`: the workload's SPIFFE id and each of its proxies' certificate. */
export async function workloadIdentity(cp: ControlPlane, namespace: string, name: string): Promise<WorkloadIdentity> {
  const reg = cp.registry.workloads().find((w) => w.namespace === namespace && w.name === name)
  const targets = cp.scrapeTargets().filter((t) => t.namespace === namespace && t.workload === name)
  if (reg === undefined && targets.length === 0)
    throw new DescribeError(`no workload ${namespace}/${name}: it is not registered and no proxy of it is connected`)
  const sa = reg?.serviceAccount ?? null
  const td = cp.ca?.trustDomain ?? null
  const proxies = await Promise.all(
    targets.map(async (t): Promise<ProxyCertificate> => {
      const row: ProxyCertificate = { proxy: t.nodeId, admin: t.adminAddress, certificate: null, error: null }
      let body: { identity?: Json | null }
      try {
        const res = await fetch(`http://${t.adminAddress}/certs`, { signal: AbortSignal.timeout(3000) })
        if (!res.ok) throw new Error(`HTTP ${res.status}`)
        body = (await res.json()) as typeof body
      } catch (err) {
        row.error = `the proxy's admin endpoint ${t.adminAddress} does not answer (${(err as Error).message})`
        return row
      }
      const id = body.identity
      if (id === undefined) row.error = 'the proxy runs without a workload identity'
      else if (id === null) row.error = 'no certificate yet (the proxy is still asking the control plane)'
      else
        row.certificate = {
          spiffeId: String(id.spiffe_id),
          serialNumber: String(id.serial_number),
          issuer: typeof id.issuer === 'string' ? id.issuer : null,
          notBefore: String(id.valid_from),
          notAfter: String(id.expiration_time),
          nextRenewal: typeof id.next_renewal === 'string' ? id.next_renewal : null,
          lastRenewalError: typeof id.last_error === 'string' ? id.last_error : null,
        }
      return row
    }),
  )
  return {
    namespace,
    name,
    serviceAccount: sa,
    spiffeId: td === null || sa === null ? null : `spiffe://${td}/ns/${namespace}/sa/${sa}`,
    proxies: proxies.sort((a, b) => a.proxy.localeCompare(b.proxy)),
  }
}
