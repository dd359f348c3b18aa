/**
 * The service registry: which services exist, on which ports, and which endpoints serve them. Its inputs are
 * Istio resources (ServiceEntry, WorkloadEntry) and workloads that register themselves over the control plane's API
 * (what `loom up` does for each local process) and must keep heart-beating or expire. Its output, `services()`, is
 * a plain, sorted, deterministic list the translator reads; the registry never talks to proxies itself.
 *
 * How endpoints come about, per Istio:
 * - A ServiceEntry lists `endpoints` inline, or selects WorkloadEntries (and self-registered workloads) of its own
 *   namespace with `workloadSelector.labels`. Each ServiceEntry host is one service with the entry's ports.
 * - An endpoint's port for a service port is the workload's port of the same name, else the service port's
 *   `targetPort`, else the service port's number.
 * - A self-registered workload joins the services named by its `serviceHosts` (resolved in its namespace), or, with
 *   none, `<app label>.<namespace>.svc.cluster.local`. If a ServiceEntry defines that host the workload becomes one
 *   of its endpoints; otherwise the registry makes the service from the workloads' own ports, as a Kubernetes
 *   Service would.
 */
import { keyOf, type Resource, type ServiceEntrySpec, type WorkloadEntrySpec } from '../../api/index.js'
import { DEFAULT_DOMAIN_SUFFIX, labelsMatch, resolveHost, serviceFqdn } from './hostname.js'

// === output ===

export interface ServicePort {
  number: number
  name: string
  /** upper case, as Istio spells protocols: HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TCP, TLS, ...; '' = not declared */
  protocol: string
}

export interface ServiceEndpoint {
  /** an IP, or a DNS name for `resolution: DNS` */
  address: string
  /** the service port this endpoint serves */
  servicePort: number
  /** the port to send that service port's traffic to: the workload's named port, targetPort or the service port */
  port: number
  /**
   * the workload's own port as policies name it (PeerAuthentication `portLevelMtls`, AuthorizationPolicy `ports`),
   * when `port` is a port its sidecar listens on instead (Loom's local mode); absent: `port`
   */
  targetPort?: number
  labels: Record<string, string>
  serviceAccount: string
  /** `region/zone/subzone`, any part may be empty */
  locality: string
  /** relative weight among the service's endpoints, at least 1 */
  weight: number
  healthy: boolean
  /**
   * where the endpoint comes from: `ServiceEntry/ns/name`, `WorkloadEntry/ns/name`, `workload/ns/name`, or, from
   * Kubernetes, `Pod/ns/name` (`EndpointSlice/ns/name` for an address without a pod)
   */
  source: string
}

export type Resolution = 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN' | 'DYNAMIC_DNS'
export type Location = 'MESH_EXTERNAL' | 'MESH_INTERNAL'

export interface Service {
  hostname: string
  namespace: string
  ports: ServicePort[]
  /** one row per endpoint and service port, sorted by service port, address, port */
  endpoints: ServiceEndpoint[]
  resolution: Resolution
  location: Location
  /** namespaces the service is visible from (`*` all, `.` its own); default `['*']` */
  exportTo: string[]
  /**
   * `ServiceEntry/ns/name` of the defining entry, `workload` for a service made from registered workloads, or
   * `Service/ns/name` for a Kubernetes Service
   */
  source: string
  /** the ServiceEntry's `subjectAltNames`: what its endpoints' certificates may name (upstream TLS) */
  subjectAltNames?: string[]
}

// === self-registration ===

export interface WorkloadPort {
  name: string
  /** where the workload (or its sidecar's inbound listener) accepts this port's traffic */
  number: number
  /** the service port this port serves, when the workload defines its service (default: `number`) */
  servicePort?: number
  /** the workload's own port as policies name it, when `number` is its sidecar's (default: `number`) */
  targetPort?: number
}

export interface WorkloadRegistration {
  name: string
  /** default `default` */
  namespace?: string
  address: string
  /** a list, or a map from port name to number as in a WorkloadEntry */
  ports: WorkloadPort[] | Record<string, number>
  labels?: Record<string, string>
  serviceAccount?: string
  /** hosts of the services this workload serves; default: `<labels.app>.<namespace>.svc.cluster.local` */
  serviceHosts?: string[]
  /** the registration expires this long after the last register or heartbeat */
  ttlSeconds: number
  /** `region/zone/subzone` */
  locality?: string
  weight?: number
}

export interface RegisteredWorkload {
  id: string
  name: string
  namespace: string
  address: string
  ports: WorkloadPort[]
  labels: Record<string, string>
  serviceAccount: string
  serviceHosts: string[] | undefined
  ttlSeconds: number
  locality: string
  weight: number
  healthy: boolean
  /** clock time of the last register or heartbeat, ms */
  lastSeenMs: number
}

export interface RegistryOptions {
  /** milliseconds; default Date.now */
  clock?: () => number
  /** default cluster.local */
  domainSuffix?: string
  /**
   * registrations never expire by this registry's clock: their TTL is kept elsewhere (an etcd lease, which every
   * control plane sharing the registrations sees), and whoever keeps it deregisters them when it runs out
   */
  expiresElsewhere?: boolean
}

/** What a caller did to a registration (not what `restore` puts back): for keeping registrations elsewhere too. */
export type RegistrationEvent =
  | { type: 'register'; workload: RegisteredWorkload }
  | { type: 'heartbeat'; workload: RegisteredWorkload; healthChanged: boolean }
  | { type: 'deregister'; id: string }

export class RegistrationError extends Error {
  override name = 'RegistrationError'
}

/** Istio's protocol from a declared protocol or a port name (`http`, `http-web`, `grpc`...); '' if neither says. */
export function portProtocol(declared: string | undefined, portName: string): string {
  const pick = (s: string) => {
    const p = s.toUpperCase()
    return KNOWN_PROTOCOLS.has(p) ? p : ''
  }
  if (declared !== undefined && declared !== '') return pick(declared)
  const name = portName.toLowerCase()
  if (name.startsWith('grpc-web')) return 'GRPC-WEB'
  return pick(name.split('-')[0] ?? '')
}

const KNOWN_PROTOCOLS = new Set([
  'HTTP',
  'HTTP2',
  'HTTPS',
  'GRPC',
  'GRPC-WEB',
  'TCP',
  'TLS',
  'UDP',
  'MONGO',
  'MYSQL',
  'REDIS',
])

/** Ports the HTTP routing path serves: HTTP flavours, and undeclared ones (Istio sniffs those). */
export function isHttpProtocol(protocol: string): boolean {
  return (
    protocol === 'HTTP' || protocol === 'HTTP2' || protocol === 'GRPC' || protocol === 'GRPC-WEB' || protocol === ''
  )
}

/** Ports whose upstream connections speak HTTP/2. */
export function isHttp2Protocol(protocol: string): boolean {
  return protocol === 'HTTP2' || protocol === 'GRPC' || protocol === 'GRPC-WEB'
}

// === the registry ===

export class Registry {
  readonly #clock: () => number
  readonly #domain: string
  #resources: Resource[] = []
  #platform: Service[] = []
  readonly #workloads = new Map<string, RegisteredWorkload>()
  readonly #listeners = new Set<() => void>()
  readonly #registrationListeners = new Set<(e: RegistrationEvent) => void>()
  readonly #expiresElsewhere: boolean
  #version = 0
  #cache: { version: number; validUntilMs: number; services: Service[] } | null = null

  constructor(options: RegistryOptions = {}) {
    this.#clock = options.clock ?? Date.now
    this.#domain = options.domainSuffix ?? DEFAULT_DOMAIN_SUFFIX
    this.#expiresElsewhere = options.expiresElsewhere === true
  }

  static fromResources(resources: readonly Resource[], options: RegistryOptions = {}): Registry {
    const r = new Registry(options)
    r.setResources(resources)
    return r
  }

  /** Replaces the ServiceEntries and WorkloadEntries the registry reads (other kinds are ignored). */
  setResources(resources: readonly Resource[]): void {
    this.#resources = resources.filter((r) => r.kind === 'ServiceEntry' || r.kind === 'WorkloadEntry')
    this.#changed()
  }

  /**
   * Replaces the services a platform defines (Kubernetes Services with their EndpointSlices, already mapped). A
   * ServiceEntry or a self-registered workload's service of the same hostname and namespace wins: the platform's
   * is left out.
   */
  setPlatformServices(services: readonly Service[]): void {
    this.#platform = [...services]
    this.#changed()
  }

  /**
   * Registers (or re-registers, replacing) a workload; returns its id, `namespace/name`. Throws RegistrationError on
   * a malformed registration.
   */
  register(w: WorkloadRegistration): string {
    const reg = normalizeRegistration(w, this.#clock())
    this.#workloads.set(reg.id, reg)
    this.#changed()
    this.#emit({ type: 'register', workload: copyWorkload(reg) })
    return reg.id
  }

  /**
   * Keeps a registration alive and optionally reports its health. Returns false if the id is unknown (never
   * registered, deregistered or expired and pruned): the workload must register again.
   */
  heartbeat(id: string, status: { healthy?: boolean } = {}): boolean {
    const w = this.#workloads.get(id)
    if (w === undefined) return false
    const now = this.#clock()
    const wasExpired = this.#isExpired(w, now)
    w.lastSeenMs = now
    const healthChanged = status.healthy !== undefined && status.healthy !== w.healthy
    if (status.healthy !== undefined) w.healthy = status.healthy
    if (wasExpired || healthChanged) this.#changed()
    else this.#cache = null // the expiry horizon moved
    this.#emit({ type: 'heartbeat', workload: copyWorkload(w), healthChanged })
    return true
  }

  /**
   * Puts back registrations saved earlier (by a control plane that restarted): each keeps its health and gets a
   * full TTL from now to heartbeat again. Malformed entries are skipped. Returns how many were restored.
   */
  restore(saved: readonly RegisteredWorkload[]): number {
    const now = this.#clock()
    let n = 0
    for (const w of saved) {
      let reg: RegisteredWorkload
      try {
        reg = normalizeRegistration(
          {
            name: w.name,
            namespace: w.namespace,
            address: w.address,
            ports: w.ports,
            labels: w.labels,
            serviceAccount: w.serviceAccount,
            ...(Array.isArray(w.serviceHosts) ? { serviceHosts: w.serviceHosts } : {}),
            ttlSeconds: w.ttlSeconds,
            locality: w.locality,
            weight: w.weight,
          },
          now,
        )
      } catch {
        continue
      }
      reg.healthy = w.healthy !== false
      this.#workloads.set(reg.id, reg)
      n++
    }
    if (n > 0) this.#changed()
    return n
  }

  deregister(id: string): boolean {
    const had = this.#workloads.delete(id)
    if (had) {
      this.#changed()
      this.#emit({ type: 'deregister', id })
    }
    return had
  }

  /** Drops registrations past their TTL and returns their ids. Call it from a timer; `services()` already hides them. */
  expire(): string[] {
    const now = this.#clock()
    const gone: string[] = []
    for (const [id, w] of this.#workloads) if (this.#isExpired(w, now)) gone.push(id)
    for (const id of gone) this.#workloads.delete(id)
    if (gone.length > 0) this.#changed()
    return gone.sort()
  }

  /** Live (unexpired) registrations, sorted by id. */
  workloads(): RegisteredWorkload[] {
    const now = this.#clock()
    return [...this.#workloads.values()]
      .filter((w) => !this.#isExpired(w, now))
      .sort((a, b) => cmp(a.id, b.id))
      .map(copyWorkload)
  }

  /** Called with every register, heartbeat and deregister (synchronously, after the change). */
  onRegistration(listener: (e: RegistrationEvent) => void): () => void {
    this.#registrationListeners.add(listener)
    return () => this.#registrationListeners.delete(listener)
  }

  /** Called after every change that can alter `services()` (not on expiry by time alone: call `expire()`). */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** Increases on every change. */
  get version(): number {
    return this.#version
  }

  /** Every service with its endpoints, sorted by hostname then namespace. Do not mutate the result. */
  services(): Service[] {
    const now = this.#clock()
    const c = this.#cache
    if (c !== null && c.version === this.#version && now < c.validUntilMs) return c.services
    const live = [...this.#workloads.values()].filter((w) => !this.#isExpired(w, now))
    let validUntilMs = Number.POSITIVE_INFINITY
    if (!this.#expiresElsewhere)
      for (const w of live) validUntilMs = Math.min(validUntilMs, w.lastSeenMs + w.ttlSeconds * 1000)
    const built = buildServices(this.#resources, live, this.#domain)
    const services = this.#platform.length === 0 ? built : mergePlatform(built, this.#platform)
    this.#cache = { version: this.#version, validUntilMs, services }
    return services
  }

  #isExpired(w: RegisteredWorkload, now: number): boolean {
    return !this.#expiresElsewhere && isExpired(w, now)
  }

  #emit(e: RegistrationEvent): void {
    for (const l of this.#registrationListeners) l(e)
  }

  #changed(): void {
    this.#version++
    this.#cache = null
    for (const l of this.#listeners) l()
  }
}

function mergePlatform(built: Service[], platform: readonly Service[]): Service[] {
  const have = new Set(built.map((s) => `${s.hostname}|${s.namespace}`))
  return [...built, ...platform.filter((s) => !have.has(`${s.hostname}|${s.namespace}`))].sort(
    (a, b) => cmp(a.hostname, b.hostname) || cmp(a.namespace, b.namespace),
  )
}

function copyWorkload(w: RegisteredWorkload): RegisteredWorkload {
  return { ...w, ports: w.ports.map((p) => ({ ...p })), labels: { ...w.labels } }
}

function isExpired(w: RegisteredWorkload, now: number): boolean {
  return now >= w.lastSeenMs + w.ttlSeconds * 1000
}

function normalizeRegistration(w: WorkloadRegistration, now: number): RegisteredWorkload {
  const fail = (m: string): never => {
    throw new RegistrationError(`workload ${JSON.stringify(w.name)}: ${m}`)
  }
  const dns1123 = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/
  if (typeof w.name !== 'string' || !dns1123.test(w.name)) fail('name must be a DNS-1123 name')
  const namespace = w.namespace ?? 'default'
  if (!dns1123.test(namespace)) fail('namespace must be a DNS-1123 name')
  if (typeof w.address !== 'string' || w.address === '') fail('address is required')
  if (!(typeof w.ttlSeconds === 'number' && w.ttlSeconds > 0)) fail('ttlSeconds must be a positive number')
  const list: WorkloadPort[] = Array.isArray(w.ports)
    ? w.ports.map((p) => ({ ...p }))
    : Object.entries(w.ports ?? {}).map(([name, number]) => ({ name, number }))
  const isPort = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535
  for (const p of list) {
    if (typeof p.name !== 'string' || p.name === '') fail('every port needs a name')
    if (!isPort(p.number)) fail(`port ${p.name}: number must be 1-65535`)
    if (p.servicePort !== undefined && !isPort(p.servicePort)) fail(`port ${p.name}: servicePort must be 1-65535`)
    if (p.targetPort !== undefined && !isPort(p.targetPort)) fail(`port ${p.name}: targetPort must be 1-65535`)
  }
  if (new Set(list.map((p) => p.name)).size !== list.length) fail('port names must be unique')
  const weight = w.weight ?? 1
  if (!(Number.isInteger(weight) && weight >= 1)) fail('weight must be a positive integer')
  const locality = w.locality ?? ''
  if (typeof locality !== 'string' || (locality !== '' && !isLocality(locality))) {
    fail('locality must be region[/zone[/subzone]]')
  }
  return {
    id: `${namespace}/${w.name}`,
    name: w.name,
    namespace,
    address: w.address,
    ports: list.sort((a, b) => a.number - b.number || cmp(a.name, b.name)),
    labels: { ...(w.labels ?? {}) },
    serviceAccount: w.serviceAccount ?? 'default',
    serviceHosts: w.serviceHosts === undefined ? undefined : [...w.serviceHosts],
    ttlSeconds: w.ttlSeconds,
    locality,
    weight,
    healthy: true,
    lastSeenMs: now,
  }
}

/** `region[/zone[/subzone]]`, no empty part. */
export function isLocality(text: string): boolean {
  const parts = text.split('/')
  return parts.length <= 3 && parts.every((p) => p !== '')
}

// === building services ===

/** One workload as an endpoint source, whatever it came from. */
interface Instance {
  address: string
  /** port name → number */
  namedPorts: Map<string, number>
  /** service port → workload port, for registered workloads that say which service port a port serves */
  byServicePort: Map<number, number>
  /** workload port → the port policies name it by, where they differ */
  policyPorts: Map<number, number>
  labels: Record<string, string>
  serviceAccount: string
  locality: string
  weight: number
  healthy: boolean
  source: string
}

interface Draft {
  service: Service
  /** service port → targetPort, from the defining ServiceEntries */
  targetPorts: Map<number, number>
  /** `address|servicePort|port` of endpoints already added */
  seen: Set<string>
}

function buildServices(resources: readonly Resource[], workloads: RegisteredWorkload[], domain: string): Service[] {
  const ordered = [...resources].sort(configOrder)
  const entries = ordered.filter((r) => r.kind === 'ServiceEntry') as Resource<ServiceEntrySpec>[]
  const workloadEntries = ordered.filter((r) => r.kind === 'WorkloadEntry') as Resource<WorkloadEntrySpec>[]
  const registered = [...workloads].sort((a, b) => cmp(a.id, b.id))
  const drafts = new Map<string, Draft>()

  for (const se of entries) {
    const spec = se.spec ?? {}
    const ns = se.metadata.namespace
    const ports: ServicePort[] = []
    const targetPorts = new Map<number, number>()
    for (const p of spec.ports ?? []) {
      if (typeof p.number !== 'number' || ports.some((q) => q.number === p.number)) continue
      const name = p.name ?? ''
      ports.push({ number: p.number, name, protocol: portProtocol(p.protocol, name) })
      if (typeof p.targetPort === 'number' && p.targetPort > 0) targetPorts.set(p.number, p.targetPort)
    }
    ports.sort((a, b) => a.number - b.number)
    const source = `ServiceEntry/${ns}/${se.metadata.name}`
    const instances: Instance[] = []
    if (spec.workloadSelector !== undefined) {
      const sel = spec.workloadSelector.labels ?? {}
      for (const we of workloadEntries) {
        if (we.metadata.namespace === ns && labelsMatch(sel, we.spec?.labels ?? {})) {
          instances.push(fromWorkloadEntry(we.spec ?? {}, keyOf(we)))
        }
      }
      for (const w of registered)
        if (w.namespace === ns && labelsMatch(sel, w.labels)) instances.push(fromRegistered(w))
    } else {
      ;(spec.endpoints ?? []).forEach((e, i) => {
        instances.push(fromWorkloadEntry(e, `${source}#${i}`))
      })
    }
    for (const rawHost of spec.hosts ?? []) {
      const hostname = rawHost.toLowerCase()
      const key = `${hostname}|${ns}`
      let d = drafts.get(key)
      if (d === undefined) {
        d = {
          service: {
            hostname,
            namespace: ns,
            ports: ports.map((p) => ({ ...p })),
            endpoints: [],
            resolution: spec.resolution ?? 'NONE',
            location: spec.location ?? 'MESH_EXTERNAL',
            exportTo: spec.exportTo !== undefined && spec.exportTo.length > 0 ? [...spec.exportTo] : ['*'],
            source,
            ...(spec.subjectAltNames !== undefined && spec.subjectAltNames.length > 0
              ? { subjectAltNames: [...spec.subjectAltNames] }
              : {}),
          },
          targetPorts: new Map(targetPorts),
          seen: new Set(),
        }
        drafts.set(key, d)
      } else {
        // The same host again in the namespace: Istio keeps the first entry's settings and adds ports and endpoints.
        for (const p of ports) {
          if (d.service.ports.some((q) => q.number === p.number)) continue
          d.service.ports.push({ ...p })
          const t = targetPorts.get(p.number)
          if (t !== undefined) d.targetPorts.set(p.number, t)
        }
        d.service.ports.sort((a, b) => a.number - b.number)
      }
      for (const inst of instances) addInstance(d, inst, ports)
    }
  }

  // Self-registered workloads: the services they name, or their app's Kubernetes-style service.
  const known = (fqdn: string) => [...drafts.values()].some((d) => d.service.hostname === fqdn)
  const implicit = new Map<string, RegisteredWorkload[]>()
  for (const w of registered) {
    const hosts =
      w.serviceHosts !== undefined
        ? w.serviceHosts.map((h) => resolveHost(h, w.namespace, known, domain))
        : w.labels.app !== undefined && w.labels.app !== ''
          ? [serviceFqdn(w.labels.app, w.namespace, domain)]
          : []
    for (const host of new Set(hosts)) {
      const d = drafts.get(`${host}|${w.namespace}`) ?? [...drafts.values()].find((x) => x.service.hostname === host)
      if (d !== undefined && d.service.source !== 'workload') {
        addInstance(d, fromRegistered(w), d.service.ports)
      } else {
        const key = `${host}|${w.namespace}`
        implicit.set(key, [...(implicit.get(key) ?? []), w])
      }
    }
  }
  for (const [key, members] of implicit) {
    const [hostname, namespace] = key.split('|') as [string, string]
    const ports: ServicePort[] = []
    for (const w of members) {
      for (const p of w.ports) {
        // Ports unify by name (the first workload, by id, sets the number), so replicas listening on different local
        // ports still make one service port.
        const number = p.servicePort ?? p.number
        if (ports.some((q) => q.name === p.name || q.number === number)) continue
        ports.push({ number, name: p.name, protocol: portProtocol('', p.name) })
      }
    }
    ports.sort((a, b) => a.number - b.number)
    const d: Draft = {
      service: {
        hostname,
        namespace,
        ports,
        endpoints: [],
        resolution: 'STATIC',
        location: 'MESH_INTERNAL',
        exportTo: ['*'],
        source: 'workload',
      },
      targetPorts: new Map(),
      seen: new Set(),
    }
    for (const w of members) addInstance(d, fromRegistered(w), ports)
    drafts.set(key, d)
  }

  const out = [...drafts.values()].map((d) => d.service)
  for (const s of out) {
    s.endpoints.sort(
      (a, b) =>
        a.servicePort - b.servicePort || cmp(a.address, b.address) || a.port - b.port || cmp(a.source, b.source),
    )
  }
  return out.sort((a, b) => cmp(a.hostname, b.hostname) || cmp(a.namespace, b.namespace))
}

function addInstance(d: Draft, inst: Instance, ports: readonly ServicePort[]) {
  for (const sp of ports) {
    const port =
      inst.namedPorts.get(sp.name) ?? inst.byServicePort.get(sp.number) ?? d.targetPorts.get(sp.number) ?? sp.number
    const key = `${inst.address}|${sp.number}|${port}`
    if (d.seen.has(key)) continue
    d.seen.add(key)
    const targetPort = inst.policyPorts.get(port)
    d.service.endpoints.push({
      address: inst.address,
      servicePort: sp.number,
      port,
      ...(targetPort !== undefined ? { targetPort } : {}),
      labels: { ...inst.labels },
      serviceAccount: inst.serviceAccount,
      locality: inst.locality,
      weight: inst.weight,
      healthy: inst.healthy,
      source: inst.source,
    })
  }
}

function fromWorkloadEntry(we: WorkloadEntrySpec, source: string): Instance {
  return {
    address: we.address ?? '',
    namedPorts: new Map(Object.entries(we.ports ?? {})),
    byServicePort: new Map(),
    policyPorts: new Map(),
    labels: { ...(we.labels ?? {}) },
    serviceAccount: we.serviceAccount ?? 'default',
    locality: we.locality ?? '',
    weight: typeof we.weight === 'number' && we.weight > 0 ? we.weight : 1,
    healthy: true,
    source,
  }
}

function fromRegistered(w: RegisteredWorkload): Instance {
  const byServicePort = new Map<number, number>()
  for (const p of w.ports) byServicePort.set(p.servicePort ?? p.number, p.number)
  const policyPorts = new Map<number, number>()
  for (const p of w.ports)
    if (p.targetPort !== undefined && p.targetPort !== p.number) policyPorts.set(p.number, p.targetPort)
  return {
    address: w.address,
    namedPorts: new Map(w.ports.map((p) => [p.name, p.number])),
    byServicePort,
    policyPorts,
    labels: { ...w.labels },
    serviceAccount: w.serviceAccount,
    locality: w.locality,
    weight: w.weight,
    healthy: w.healthy,
    source: `workload/${w.id}`,
  }
}

/** Istio's config order: oldest first (creationTimestamp), then namespace, then name. */
export function configOrder(a: Resource, b: Resource): number {
  return (
    cmp(a.metadata.creationTimestamp ?? '', b.metadata.creationTimestamp ?? '') ||
    cmp(a.metadata.namespace, b.metadata.namespace) ||
    cmp(a.metadata.name, b.metadata.name)
  )
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
