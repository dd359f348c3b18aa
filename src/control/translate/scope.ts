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
import { configOrder, type Service } from '../registry/registry.js'
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

export class Scope {
  readonly node: ProxyNode
  readonly mesh: ResolvedMeshConfig
  /** every resource, in Istio's config order */
  readonly resources: Resource[]
  /** every service in the registry */
  readonly allServices: readonly Service[]
  /** the services this proxy may reach, one per hostname, sorted by hostname */
  readonly services: Service[]
  /** the Sidecar resource that applies to this proxy, if any */
  readonly sidecar: Resource<SidecarSpec> | undefined
  readonly #byHost = new Map<string, Service>()
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
    this.resources = [...resources].sort((a, b) => configOrder(a, b) || cmpKind(a, b))
    // Sorted here too, so the output never depends on the order the caller passed things in.
    this.allServices = [...services].sort((a, b) => cmp(a.hostname, b.hostname) || cmp(a.namespace, b.namespace))
    this.#knownHosts = new Set(services.map((s) => s.hostname))
    this.sidecar = node.kind === 'sidecar' ? this.#selectSidecar() : undefined
    const egress = this.sidecar === undefined ? null : egressHosts(this.sidecar.spec)
    const visible = this.allServices
      .filter((s) => isExportedTo(s.namespace, s.exportTo, node.namespace))
      .filter((s) => egress === null || egress.some((h) => egressAllows(h, s.namespace, s.hostname, node.namespace)))
    for (const s of visible) {
      const prev = this.#byHost.get(s.hostname)
      // Two namespaces define the same host: the proxy's own namespace wins, else the first.
      if (prev === undefined || (prev.namespace !== node.namespace && s.namespace === node.namespace)) {
        this.#byHost.set(s.hostname, s)
      }
    }
    this.services = [...this.#byHost.values()].sort((a, b) => cmp(a.hostname, b.hostname))
    // a Sidecar with egress listeners says what the proxy sees: it wins over scoping
    const scopeHosts = node.kind === 'sidecar' ? node.scopeHosts : undefined
    if (scopeHosts !== undefined && (this.sidecar?.spec?.egress?.length ?? 0) === 0) {
      const scoped = new Set(scopeHosts)
      const inScope = (h: string) =>
        scopeHosts.has(h) || (isWildcard(h) && [...scopeHosts].some((s) => hostMatches(s, h)))
      for (const vs of this.virtualServices()) {
        const ns = vs.metadata.namespace
        if (!(vs.spec?.hosts ?? []).some((h) => inScope(this.resolve(h, ns)))) continue
        for (const d of virtualServiceDestinations(vs, (h, n) => this.resolve(h, n))) scoped.add(d)
      }
      this.#scoped = scoped
      this.#direct = scopeHosts
    }
  }

  /**
   * Whether the proxy gets the clusters of a host's HTTP ports (false only outside a scope: `scopeHosts` and the
   * destinations of their VirtualServices).
   */
  inScope(hostname: string): boolean {
    return this.#scoped === null || this.#scoped.has(hostname)
  }

  /** Whether the proxy gets a host's virtual hosts (false only outside `scopeHosts`). */
  routesHost(hostname: string): boolean {
    return this.#direct === null || this.#direct.has(hostname)
  }

  /** The hosts whose HTTP ports the proxy gets when scoping applies to it, else null. */
  get scopedHosts(): ReadonlySet<string> | null {
    return this.#scoped
  }

  #byKind: Map<string, Resource[]> | null = null
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
    if (this.#byKind === null) {
      this.#byKind = new Map()
      for (const r of this.resources) {
        let list = this.#byKind.get(r.kind)
        if (list === undefined) this.#byKind.set(r.kind, (list = []))
        list.push(r)
      }
    }
    return (this.#byKind.get(kind) ?? []) as Resource<S>[]
  }

  /** A host as written in a resource of `namespace`, as an FQDN. */
  resolve(host: string, namespace: string): string {
    return resolveHost(host, namespace, (h) => this.#knownHosts.has(h), this.mesh.domainSuffix)
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
    const ns = this.node.namespace
    return this.of<VirtualServiceSpec>('VirtualService').filter((vs) =>
      isExportedTo(vs.metadata.namespace, vs.spec?.exportTo, ns),
    )
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
