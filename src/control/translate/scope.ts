/**
 * What one proxy sees of the mesh config: the resources sorted in Istio's order (oldest first, then namespace and
 * name), the services visible to it (exportTo, then its Sidecar's egress hosts), and the lookups every generator
 * needs: hostname resolution, the DestinationRule for a host, the hash policy for a destination.
 */
import type { DestinationRuleSpec, Resource, SidecarSpec, VirtualServiceSpec } from '../../api/index.js'
import type { ExtensionProvider } from '../../api/mesh-config.js'
import type { AccessLogProvider } from './access-log.js'
import type { ProxyNode } from '../../xds/snapshot.js'
import {
  DEFAULT_DOMAIN_SUFFIX,
  hostMatches,
  isExportedTo,
  isWildcard,
  labelsMatch,
  mostSpecificMatch,
  resolveHost,
} from '../registry/hostname.js'
import { configOrder, isHttpProtocol, type Service } from '../registry/registry.js'
import type { Subset } from './types.js'
import { effectivePolicy, hashPolicy, type LbPolicy } from './policy.js'
import type { LocalitySetting } from './locality.js'
import { cmp, type Json } from './util.js'
import { type EffectiveTelemetry, effectiveTelemetry } from './telemetry.js'
import { virtualServiceDestinations } from './incremental.js'
import type { TelemetrySpec } from '../../api/telemetry.js'

/** Mesh-wide defaults (Istio's MeshConfig, the parts Loom reads). */
export interface MeshConfig {
  /** where mesh-wide Sidecar and DestinationRule defaults live; default `istio-system` */
  rootNamespace?: string
  /** default `cluster.local` */
  domainSuffix?: string
  /** cluster connect timeout when no DestinationRule sets one; default `10s` */
  connectTimeout?: string
  /** load balancer when no DestinationRule sets one; default LEAST_REQUEST, as Istio */
  defaultLoadBalancer?: 'LEAST_REQUEST' | 'ROUND_ROBIN' | 'RANDOM'
  /** proxy defaults (Istio's ProxyConfig); a proxy's node metadata `PROXY_CONFIG` overrides them */
  defaultConfig?: { gatewayTopology?: { numTrustedProxies?: number }; tracing?: { sampling?: number } }
  /**
   * locality load balancing where no DestinationRule sets it; default `{enabled: true}`, as Istio's: clusters with
   * outlier detection fail over by locality (locality.ts)
   */
  localityLbSetting?: LocalitySetting
  /** how every generated connection manager normalizes request paths; default BASE, as Istio */
  pathNormalization?: { normalization?: PathNormalization | 'DEFAULT' }
  /** the trust domain of workload SPIFFE IDs (the subject alt names mTLS expects); default `cluster.local` */
  trustDomain?: string
  /** external authorizers AuthorizationPolicies with the CUSTOM action name (`provider.name`) */
  extensionProviders?: readonly ExtensionProvider[]
  /** whether HTTP/1.1 ports are sent upstream as HTTP/2 where no DestinationRule says; default DO_NOT_UPGRADE */
  h2UpgradePolicy?: 'DO_NOT_UPGRADE' | 'UPGRADE'
  /** the providers (extensionProviders names) used where no Telemetry names one */
  defaultProviders?: { tracing?: readonly string[]; accessLogging?: readonly string[]; metrics?: readonly string[] }
  /** whether `defaultProviders.tracing` traces without a Telemetry resource; default true (Istio's) */
  enableTracing?: boolean
  /**
   * mesh-wide access logs (Istio's accessLogFile, accessLogEncoding, accessLogFormat) as the provider every sidecar
   * and gateway writes to; none by default (Istio's default: accessLogFile empty)
   */
  accessLog?: AccessLogProvider
  /**
   * Loom's own: who may ask for the live decision record (`x-loom-explain`): SPIFFE principals without the scheme
   * (`cluster.local/ns/default/sa/bookinfo-productpage`), namespaces, and at gateways client addresses (CIDR)
   */
  explainFrom?: ExplainFrom
}

export interface ExplainFrom {
  principals?: readonly string[] | undefined
  namespaces?: readonly string[] | undefined
  ipBlocks?: readonly string[] | undefined
}

/** Istio's `meshConfig.pathNormalization.normalization` (DEFAULT is BASE). */
export const PATH_NORMALIZATIONS = ['NONE', 'BASE', 'MERGE_SLASHES', 'DECODE_AND_MERGE_SLASHES'] as const
export type PathNormalization = (typeof PATH_NORMALIZATIONS)[number]

export interface ResolvedMeshConfig {
  rootNamespace: string
  domainSuffix: string
  connectTimeout: string
  defaultLoadBalancer: LbPolicy
  /** trusted proxies in front of gateways (`xff_num_trusted_hops`); default 0 */
  numTrustedProxies: number
  localityLbSetting: LocalitySetting | null
  pathNormalization: PathNormalization
  trustDomain: string
  extensionProviders: readonly ExtensionProvider[]
  h2Upgrade: boolean
  defaultProviders: { tracing: readonly string[]; accessLogging: readonly string[]; metrics: readonly string[] }
  enableTracing: boolean
  /** random sampling percentage where no Telemetry sets one: defaultConfig.tracing.sampling, default 1 (Istio's) */
  tracingSampling: number
  /** every generated connection manager's and TCP proxy's access log; null: none */
  accessLog: AccessLogProvider | null
  explainFrom: ExplainFrom
}

const DEFAULT_LOCALITY_LB: LocalitySetting = Object.freeze({ enabled: true })

export function resolveMeshConfig(m: MeshConfig | undefined): ResolvedMeshConfig {
  return {
    rootNamespace: m?.rootNamespace ?? 'istio-system',
    domainSuffix: m?.domainSuffix ?? DEFAULT_DOMAIN_SUFFIX,
    connectTimeout: m?.connectTimeout ?? '10s',
    defaultLoadBalancer: m?.defaultLoadBalancer ?? 'LEAST_REQUEST',
    numTrustedProxies: m?.defaultConfig?.gatewayTopology?.numTrustedProxies ?? 0,
    localityLbSetting: m?.localityLbSetting ?? DEFAULT_LOCALITY_LB,
    pathNormalization: pathNormalizationOf(m?.pathNormalization?.normalization),
    trustDomain: m?.trustDomain ?? 'cluster.local',
    extensionProviders: m?.extensionProviders ?? [],
    h2Upgrade: m?.h2UpgradePolicy === 'UPGRADE',
    defaultProviders: {
      tracing: m?.defaultProviders?.tracing ?? [],
      accessLogging: m?.defaultProviders?.accessLogging ?? [],
      metrics: m?.defaultProviders?.metrics ?? [],
    },
    enableTracing: m?.enableTracing ?? true,
    tracingSampling: m?.defaultConfig?.tracing?.sampling ?? 1,
    accessLog: m?.accessLog ?? null,
    explainFrom: m?.explainFrom ?? {},
  }
}

function pathNormalizationOf(n: PathNormalization | 'DEFAULT' | undefined): PathNormalization {
  return n === undefined || n === 'DEFAULT' ? 'BASE' : n
}

/** A DestinationRule as it applies to one host: the chosen rules merged (first policy wins, subsets appended). */
export interface AppliedDestinationRule {
  spec: DestinationRuleSpec
  /** the rules that contributed, in order */
  sources: Resource<DestinationRuleSpec>[]
}

/**
 * What every Scope over the same inputs computes alike, built once per (resources, services, domain suffix): with
 * a thousand proxies scoped apart, a rebuild makes a thousand Scopes, and sorting every resource and service and
 * resolving every VirtualService's hosts for each of them was most of the rebuild.
 */
class SharedInputs {
  readonly resources: Resource[]
  readonly services: Service[]
  readonly knownHosts: Set<string>
  readonly byKind = new Map<string, Resource[]>()
  /** namespace → host as written → FQDN (nested: no key string made per lookup) */
  readonly #resolved = new Map<string, Map<string, string>>()
  readonly #vsHosts = new WeakMap<object, string[]>()
  readonly #vsDestinations = new WeakMap<object, readonly string[]>()
  /** VirtualServices exported to a namespace, in config order */
  readonly #vsFor = new Map<string, Resource<VirtualServiceSpec>[]>()
  /** derived values the translator keys itself (e.g. the mesh VirtualService index of a namespace) */
  readonly memo = new Map<string, unknown>()

  virtualServicesFor(ns: string): Resource<VirtualServiceSpec>[] {
    let list = this.#vsFor.get(ns)
    if (list === undefined) {
      list = ((this.byKind.get('VirtualService') ?? []) as Resource<VirtualServiceSpec>[]).filter((vs) =>
        isExportedTo(vs.metadata.namespace, vs.spec?.exportTo, ns),
      )
      this.#vsFor.set(ns, list)
    }
    return list
  }

  constructor(
    resources: readonly Resource[],
    services: readonly Service[],
    readonly domainSuffix: string,
  ) {
    this.resources = [...resources].sort((a, b) => configOrder(a, b) || cmpKind(a, b))
    this.services = [...services].sort((a, b) => cmp(a.hostname, b.hostname) || cmp(a.namespace, b.namespace))
    this.knownHosts = new Set(services.map((s) => s.hostname))
    for (const r of this.resources) {
      let list = this.byKind.get(r.kind)
      if (list === undefined) this.byKind.set(r.kind, (list = []))
      list.push(r)
    }
  }

  resolve(host: string, namespace: string): string {
    let inNs = this.#resolved.get(namespace)
    if (inNs === undefined) this.#resolved.set(namespace, (inNs = new Map()))
    let r = inNs.get(host)
    if (r === undefined) {
      r = resolveHost(host, namespace, (h) => this.knownHosts.has(h), this.domainSuffix)
      inNs.set(host, r)
    }
    return r
  }

  readonly #vsByHost = new Map<string, VsHostIndex>()

  /**
   * The VirtualServices exported to a namespace by the hosts they name, resolved: exact hosts in a map, the ones
   * naming a wildcard host in a list (config order in both).
   */
  vsByHost(ns: string): VsHostIndex {
    let ix = this.#vsByHost.get(ns)
    if (ix === undefined) {
      ix = { exact: new Map(), wildcard: [] }
      for (const vs of this.virtualServicesFor(ns)) {
        const hosts = this.vsHosts(vs)
        if (hosts.some(isWildcard)) ix.wildcard.push(vs)
        for (const h of new Set(hosts)) {
          if (isWildcard(h)) continue
          const list = ix.exact.get(h)
          if (list === undefined) ix.exact.set(h, [vs])
          else list.push(vs)
        }
      }
      this.#vsByHost.set(ns, ix)
    }
    return ix
  }

  /** A VirtualService's hosts, resolved. */
  vsHosts(vs: Resource<VirtualServiceSpec>): string[] {
    let h = this.#vsHosts.get(vs)
    if (h === undefined) {
      h = (vs.spec?.hosts ?? []).map((x) => this.resolve(x, vs.metadata.namespace))
      this.#vsHosts.set(vs, h)
    }
    return h
  }

  /** The hosts a VirtualService routes to, resolved. */
  vsDestinations(vs: Resource<VirtualServiceSpec>): readonly string[] {
    let d = this.#vsDestinations.get(vs)
    if (d === undefined) {
      d = [...virtualServiceDestinations(vs, (h, n) => this.resolve(h, n))]
      this.#vsDestinations.set(vs, d)
    }
    return d
  }
}

/** Whether a service has a port outside the outbound HTTP listener (what scoping leaves as it is). */
export function hasTcpPort(s: Service): boolean {
  return s.ports.some((p) => !isHttpProtocol(p.protocol))
}

const tcpLists = new WeakMap<readonly Service[], Service[]>()

/** The services of a list with a port that is not HTTP (memoized on the list: visible lists are shared). */
function tcpServices(services: readonly Service[]): Service[] {
  let out = tcpLists.get(services)
  if (out === undefined) {
    out = services.filter(hasTcpPort)
    tcpLists.set(services, out)
  }
  return out
}

interface VsHostIndex {
  exact: Map<string, Resource<VirtualServiceSpec>[]>
  wildcard: Resource<VirtualServiceSpec>[]
}

const sharedInputs = new WeakMap<readonly Resource[], WeakMap<readonly Service[], Map<string, SharedInputs>>>()

function sharedOf(resources: readonly Resource[], services: readonly Service[], domainSuffix: string): SharedInputs {
  let bySvc = sharedInputs.get(resources)
  if (bySvc === undefined) sharedInputs.set(resources, (bySvc = new WeakMap()))
  let bySuffix = bySvc.get(services)
  if (bySuffix === undefined) bySvc.set(services, (bySuffix = new Map()))
  let s = bySuffix.get(domainSuffix)
  if (s === undefined) bySuffix.set(domainSuffix, (s = new SharedInputs(resources, services, domainSuffix)))
  return s
}

export class Scope {
  readonly node: ProxyNode
  readonly mesh: ResolvedMeshConfig
  /** every resource, in Istio's config order */
  readonly resources: Resource[]
  /** every service in the registry */
  readonly allServices: readonly Service[]
  /** the services this proxy may reach, one per hostname, sorted by hostname */
  readonly services: readonly Service[]
  /** the Sidecar resource that applies to this proxy, if any */
  readonly sidecar: Resource<SidecarSpec> | undefined
  readonly #byHost: ReadonlyMap<string, Service>
  readonly #shared: SharedInputs
  readonly #knownHosts: Set<string>
  readonly #drCache = new Map<string, AppliedDestinationRule | undefined>()
  /**
   * Scoping (`scopeHosts` of the node): the hosts whose HTTP ports the proxy gets (virtual hosts, clusters, load
   * assignments): the scope's hosts and the destinations of the VirtualServices for them; null: every visible host
   */
  readonly #scoped: Set<string> | null = null
  /** the scope's own hosts (their virtual hosts); null: not scoped */
  readonly #direct: ReadonlySet<string> | null = null

  constructor(
    resources: readonly Resource[],
    services: readonly Service[],
    node: ProxyNode & { scopeHosts?: ReadonlySet<string> | undefined },
    mesh: ResolvedMeshConfig,
  ) {
    this.node = node
    this.mesh = mesh
    // Sorted here too, so the output never depends on the order the caller passed things in (shared: never changed)
    this.#shared = sharedOf(resources, services, mesh.domainSuffix)
    this.resources = this.#shared.resources
    this.allServices = this.#shared.services
    this.#knownHosts = this.#shared.knownHosts
    this.sidecar = node.kind === 'sidecar' ? this.#selectSidecar() : undefined
    const visible = this.sidecar === undefined ? this.#visibleIn(node.namespace) : this.#visible(this.sidecar)
    this.#byHost = visible.byHost
    this.services = visible.services
    // a Sidecar with egress listeners says what the proxy sees: it wins over scoping
    const scopeHosts = node.kind === 'sidecar' ? node.scopeHosts : undefined
    if (scopeHosts !== undefined && (this.sidecar?.spec?.egress?.length ?? 0) === 0) {
      const scoped = new Set(scopeHosts)
      // the VirtualServices naming a scope host, exactly or by a wildcard that matches it, add their destinations
      const { exact, wildcard } = this.#shared.vsByHost(node.namespace)
      const add = (vs: Resource<VirtualServiceSpec>) => {
        for (const d of this.#shared.vsDestinations(vs)) scoped.add(d)
      }
      for (const h of scopeHosts) for (const vs of exact.get(h) ?? []) add(vs)
      for (const vs of wildcard) {
        const hosts = this.#shared.vsHosts(vs).filter(isWildcard)
        if (hosts.some((w) => scopeHosts.has(w) || [...scopeHosts].some((s) => hostMatches(s, w)))) add(vs)
      }
      this.#scoped = scoped
      this.#direct = scopeHosts
    }
  }

  /** The services a proxy of `namespace` without a Sidecar resource sees: the same for all of them (shared). */
  #visibleIn(namespace: string): { byHost: Map<string, Service>; services: Service[] } {
    const key = `visible\u0000${namespace}`
    const m = this.#shared.memo
    let v = m.get(key) as { byHost: Map<string, Service>; services: Service[] } | undefined
    if (v === undefined) m.set(key, (v = this.#visible(undefined)))
    return v
  }

  /** The services this proxy sees: exported to its namespace, and allowed by its Sidecar's egress if it has one. */
  #visible(sidecar: Resource<SidecarSpec> | undefined): { byHost: Map<string, Service>; services: Service[] } {
    const ns = this.node.namespace
    const egress = sidecar === undefined ? null : egressHosts(sidecar.spec)
    const byHost = new Map<string, Service>()
    for (const s of this.allServices) {
      if (!isExportedTo(s.namespace, s.exportTo, ns)) continue
      if (egress !== null && !egress.some((h) => egressAllows(h, s.namespace, s.hostname, ns))) continue
      const prev = byHost.get(s.hostname)
      // Two namespaces define the same host: the proxy's own namespace wins, else the first.
      if (prev === undefined || (prev.namespace !== ns && s.namespace === ns)) byHost.set(s.hostname, s)
    }
    return { byHost, services: [...byHost.values()].sort((a, b) => cmp(a.hostname, b.hostname)) }
  }

  /**
   * Whether the proxy gets the clusters of a host's HTTP ports (false only outside a scope: `scopeHosts` and the
   * destinations of their VirtualServices).
   */
  inScope(hostname: string): boolean {
    return this.#scoped === null || this.#scoped.has(hostname)
  }

  #clusterServices: readonly Service[] | null = null

  /**
   * The visible services that may have clusters for this proxy, sorted by hostname: all of them, or when scoped,
   * those in the scope and those with a port outside the outbound HTTP listener (the rest have none).
   */
  get clusterServices(): readonly Service[] {
    if (this.#scoped === null) return this.services
    if (this.#clusterServices === null) {
      const out = [...tcpServices(this.services)]
      for (const h of this.#scoped) {
        const svc = this.#byHost.get(h)
        if (svc !== undefined && !hasTcpPort(svc)) out.push(svc)
      }
      this.#clusterServices = out.sort((a, b) => cmp(a.hostname, b.hostname))
    }
    return this.#clusterServices
  }

  /** The visible services whose virtual hosts this proxy gets, sorted by hostname (all, or the scope's own). */
  get routeServices(): readonly Service[] {
    if (this.#direct === null) return this.services
    const out: Service[] = []
    for (const h of this.#direct) {
      const svc = this.#byHost.get(h)
      if (svc !== undefined) out.push(svc)
    }
    return out.sort((a, b) => cmp(a.hostname, b.hostname))
  }

  /** The hosts whose HTTP ports the proxy gets when scoping applies to it, else null. */
  get scopedHosts(): ReadonlySet<string> | null {
    return this.#scoped
  }

  #telemetry: EffectiveTelemetry | null = null

  /** The Telemetry resources' effect on this proxy, with MeshConfig's defaults (telemetry.ts). */
  telemetry(): EffectiveTelemetry {
    this.#telemetry ??= effectiveTelemetry(
      this.of<TelemetrySpec>('Telemetry'),
      { namespace: this.node.namespace, labels: this.node.labels },
      this.mesh,
    )
    return this.#telemetry
  }

  of<S>(kind: string): Resource<S>[] {
    return (this.#shared.byKind.get(kind) ?? []) as Resource<S>[]
  }

  /** A host as written in a resource of `namespace`, as an FQDN. */
  resolve(host: string, namespace: string): string {
    return this.#shared.resolve(host, namespace)
  }

  isKnownHost(fqdn: string): boolean {
    return this.#knownHosts.has(fqdn)
  }

  /** A visible service by FQDN. */
  service(fqdn: string): Service | undefined {
    return this.#byHost.get(fqdn)
  }

  /** VirtualServices exported to this proxy's namespace, in config order. */
  virtualServices(): Resource<VirtualServiceSpec>[] {
    // shared by the proxies of a namespace: a copy, since callers may change what they get
    return [...this.#shared.virtualServicesFor(this.node.namespace)]
  }

  /** A VirtualService's hosts, resolved (shared: never change the list). */
  virtualServiceHosts(vs: Resource<VirtualServiceSpec>): readonly string[] {
    return this.#shared.vsHosts(vs)
  }

  /**
   * A value derived from the inputs and this proxy's namespace alone, computed once for every proxy of the
   * namespace without a Sidecar resource (with one, it is computed for this proxy).
   */
  perNamespace<T>(what: string, make: () => T): T {
    if (this.sidecar !== undefined) return make()
    const key = `${what}\u0000${this.node.namespace}`
    const m = this.#shared.memo
    if (m.has(key)) return m.get(key) as T
    const v = make()
    m.set(key, v)
    return v
  }

  /**
   * Whether this sidecar's Sidecar resource lets it see a VirtualService (some host allowed for its namespace).
   * Always true for gateways and proxies without a Sidecar.
   */
  sidecarAllowsVirtualService(vs: Resource<VirtualServiceSpec>): boolean {
    if (this.sidecar === undefined) return true
    const egress = egressHosts(this.sidecar.spec)
    const hosts = (vs.spec?.hosts ?? []).map((h) => this.resolve(h, vs.metadata.namespace))
    return egress.some((e) => hosts.some((h) => egressAllows(e, vs.metadata.namespace, h, this.node.namespace)))
  }

  /**
   * The DestinationRule for a service, as Istio picks it: the proxy's namespace first (rules there need not be
   * exported), then the service's namespace, then the root namespace (exported rules only). Within a namespace the
   * most specific host wins; rules for that same host merge.
   */
  destinationRule(hostname: string): AppliedDestinationRule | undefined {
    if (this.#drCache.has(hostname)) return this.#drCache.get(hostname)
    const svcNs = this.#byHost.get(hostname)?.namespace
    const rules = this.of<DestinationRuleSpec>('DestinationRule').filter((dr) => {
      // Istio's DestinationRule selector is `matchLabels`; accept `labels` too.
      const ws = dr.spec?.workloadSelector as { labels?: Record<string, string>; matchLabels?: Record<string, string> }
      const sel = ws?.matchLabels ?? ws?.labels
      if (sel === undefined) return true
      return (
        this.node.kind === 'sidecar' &&
        dr.metadata.namespace === this.node.namespace &&
        labelsMatch(sel, this.node.labels)
      )
    })
    const tiers: ((dr: Resource<DestinationRuleSpec>) => boolean)[] = [
      (dr) => dr.metadata.namespace === this.node.namespace,
      (dr) => svcNs !== undefined && dr.metadata.namespace === svcNs && this.#exported(dr),
      (dr) => dr.metadata.namespace === this.mesh.rootNamespace && this.#exported(dr),
    ]
    let found: AppliedDestinationRule | undefined
    for (const inTier of tiers) {
      const candidates = rules.filter(inTier)
      const hosts = candidates.map((dr) => this.resolve(dr.spec?.host ?? '', dr.metadata.namespace))
      const best = mostSpecificMatch(hostname, hosts)
      if (best < 0) continue
      const host = hosts[best]!
      const sources = candidates.filter((_, i) => hosts[i] === host)
      found = { spec: mergeRules(sources), sources }
      break
    }
    this.#drCache.set(hostname, found)
    return found
  }

  /** A subset of the host's DestinationRule, or undefined if it does not define one by that name. */
  subset(hostname: string, name: string): Subset | undefined {
    return (this.destinationRule(hostname)?.spec.subsets ?? []).find((s) => s.name === name)
  }

  /** The route hash policy for traffic to (host, subset, port), from the DestinationRule's consistentHash. */
  hashPolicy(hostname: string, subset: string, port: number): Json | null {
    const dr = this.destinationRule(hostname)
    if (dr === undefined) return null
    return hashPolicy(effectivePolicy(dr.spec, subset, port)?.loadBalancer?.consistentHash, this.node.generator)
  }

  #exported(dr: Resource<DestinationRuleSpec>): boolean {
    return isExportedTo(dr.metadata.namespace, dr.spec?.exportTo, this.node.namespace)
  }

  /** A Sidecar selecting the workload, else the namespace's default, else the root namespace's default. */
  #selectSidecar(): Resource<SidecarSpec> | undefined {
    const all = this.of<SidecarSpec>('Sidecar')
    const ns = this.node.namespace
    return (
      all.find(
        (s) =>
          s.metadata.namespace === ns &&
          s.spec?.workloadSelector?.labels !== undefined &&
          labelsMatch(s.spec.workloadSelector.labels, this.node.labels),
      ) ??
      all.find((s) => s.metadata.namespace === ns && s.spec?.workloadSelector === undefined) ??
      all.find((s) => s.metadata.namespace === this.mesh.rootNamespace && s.spec?.workloadSelector === undefined)
    )
  }
}

function cmpKind(a: Resource, b: Resource): number {
  return cmp(a.kind, b.kind)
}

function mergeRules(rules: Resource<DestinationRuleSpec>[]): DestinationRuleSpec {
  const first = rules[0]!.spec ?? {}
  const out: DestinationRuleSpec = { ...first, subsets: [...(first.subsets ?? [])] }
  for (const r of rules.slice(1)) {
    if (out.trafficPolicy === undefined && r.spec?.trafficPolicy !== undefined) out.trafficPolicy = r.spec.trafficPolicy
    for (const s of r.spec?.subsets ?? []) if (!out.subsets!.some((x) => x.name === s.name)) out.subsets!.push(s)
  }
  return out
}

/** A Sidecar's egress hosts (`namespace/dnsName`) from every egress listener; `*\/*` when it has none. */
function egressHosts(spec: SidecarSpec | undefined): string[] {
  const hosts = (spec?.egress ?? []).flatMap((e) => e.hosts ?? [])
  return spec?.egress === undefined || spec.egress.length === 0 ? ['*/*'] : hosts
}

/**
 * Whether an egress host `ns/dnsName` admits a host of `namespace`: `ns` is `*`, `.` (the proxy's namespace), `~`
 * (none) or a name; `dnsName` is `*`, a `*.suffix` wildcard or an FQDN.
 */
export function egressAllows(egressHost: string, namespace: string, hostname: string, proxyNamespace: string): boolean {
  const slash = egressHost.indexOf('/')
  const ns = slash < 0 ? '*' : egressHost.slice(0, slash)
  const dns = (slash < 0 ? egressHost : egressHost.slice(slash + 1)).toLowerCase()
  if (ns === '~') return false
  if (ns !== '*' && (ns === '.' ? proxyNamespace : ns) !== namespace) return false
  if (dns === '*') return true
  return isWildcard(dns) || isWildcard(hostname) ? hostMatches(hostname, dns) : hostname === dns
}
