/**
 * An upstream cluster: its settings (with Envoy's defaults), its hosts, and host choice by the cluster's LB policy
 * across Envoy priority levels.
 *
 * Load balancers are compiled per (priority level, healthy|degraded) host set whenever membership, weights,
 * priorities or health change, so a pick is a priority draw plus one O(1)/O(log n) LB pick, with no allocation.
 */
import type { Cluster, ClusterLoadAssignment } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { log } from '../../core/log.js'
import { DnsDiscovery, type DnsLookup, type DnsTarget, type DnsTtlLookup } from './dns.js'
import { ClusterConfigError } from './errors.js'
import { Host, type HostOwner, type HostSpec, hostKey } from './host.js'
import { type LbFactory, type LbPolicy, type LoadBalancer, lbFactoryFor, samplesLatency, usesHash } from './lb/index.js'
import { localityWeightedLb } from './locality.js'
import { computePriorityLoad, type LevelCounts, type PriorityLoad } from './priority.js'
import { type ClusterSettings, clusterSettings, type Http2Options, hostSpecsFromAssignment } from './settings.js'
import { ClusterStats } from '../stats/stats.js'
import { CircuitBreakers, defaultThresholds, RetryBudget, breakerDefaults } from './circuit-breakers.js'
import { OutlierDetector } from './outlier.js'
import { HealthChecker } from './health-check/checker.js'
import { healthCheckSettings } from './health-check/settings.js'
import type { SecretStore } from '../secrets/store.js'
import type { UpstreamTlsOptions } from './tls.js'
import type { TransportSockets } from './transport-socket.js'

export interface UpstreamClusterOptions {
  /** Where the cluster sits in its config document, prefixed to issue paths (e.g. `[2]`). Default: ''. */
  path?: string
  /** Replaces `dns.promises.lookup` for STRICT_DNS (tests). */
  dnsLookup?: DnsLookup
  /** Replaces the TTL query made for respect_dns_ttl (tests). */
  dnsTtlLookup?: DnsTtlLookup
  /** where the UpstreamTlsContext finds the secrets it names through SDS */
  secrets?: SecretStore
}

/** Hosts that joined and left in one membership update. */
export interface HostsChange {
  added: Host[]
  removed: Host[]
}

export type HostsListener = (change: HostsChange) => void

/**
 * Whether the load balancer chooses from a host: `healthy` and `degraded` hosts form their priority's sets; `null`
 * hosts are never chosen (ejected by outlier detection, failing active health checks, or EDS status UNHEALTHY,
 * DRAINING or TIMEOUT). There is no panic mode: a priority with no eligible host gets no traffic.
 */
export function hostEligibility(
  ejected: boolean,
  failedActiveHc: boolean,
  healthStatus: string,
): 'healthy' | 'degraded' | null {
  if (ejected || failedActiveHc) return null
  if (healthStatus === 'HEALTHY' || healthStatus === 'UNKNOWN') return 'healthy'
  return healthStatus === 'DEGRADED' ? 'degraded' : null
}

export class UpstreamCluster implements HostOwner {
  readonly name: string
  readonly config: Cluster
  readonly type: 'STATIC' | 'STRICT_DNS' | 'EDS' | 'ORIGINAL_DST'
  /** the name EDS assignments for this cluster carry (eds_cluster_config.service_name, else the cluster name) */
  readonly edsName: string
  readonly lbPolicy: LbPolicy
  /** connect_timeout; default 5s. */
  readonly connectTimeoutMs: number
  /** Whether upstream connections speak HTTP/2 (http2_protocol_options, on the cluster or in HttpProtocolOptions). */
  readonly http2: boolean
  readonly http2Options: Http2Options
  /** common_http_protocol_options.idle_timeout; default 1h; 0 disables it. */
  readonly idleTimeoutMs: number
  /** 0 = unlimited. */
  readonly maxRequestsPerConnection: number
  /** per_connection_buffer_limit_bytes; default 1 MiB. */
  readonly perConnectionBufferLimitBytes: number
  /**
   * transport_socket and transport_socket_matches: each host's `transport` is one of them, chosen by its metadata
   * when it joins or is restated. A socket's TLS options are rebuilt when an SDS secret it names changes (new
   * connections use them, open ones keep theirs); `pending` while one is missing.
   */
  readonly sockets: TransportSockets
  readonly #secrets: SecretStore | undefined
  #unsubscribe: (() => void)[] = []
  /** circuit_breakers (DEFAULT priority), or null when the cluster sets none (the pools' fixed limits apply). */
  readonly circuitBreakers: CircuitBreakers | null
  /**
   * Retries in flight against max_retries (default 3, also without circuit_breakers) or the retry_budget: whoever
   * retries a request calls `tryAcquire()` before the retry and `release()` once the retry's outcome is known.
   */
  readonly retryBudget: RetryBudget
  /** outlier_detection, or null: the data path then reports nothing for this cluster's hosts. */
  readonly outlierDetector: OutlierDetector | null
  /** health_checks[0], or null: no host is actively checked. */
  readonly healthChecker: HealthChecker | null
  /**
   * Connections an HTTP/1.1 pool may open to one host when circuitBreakers is null: Envoy's default of 1024 without
   * circuit_breakers, no limit when they are set (and unlimited).
   */
  readonly hostConnectionLimit: number
  /** Whether the data path samples response latency into `host.latency` (the PEAK_EWMA policy). */
  readonly samplesLatency: boolean
  /**
   * Whether the pool manager hands the codec's request to the stream as it is: no circuit breakers, no outlier
   * detection, no latency sampling. One check per request for all three.
   */
  readonly plainRequests: boolean
  /** Where circuit breaking and outlier detection count (the proxy's stats object for the cluster; bindStats). */
  stats: ClusterStats
  /**
   * The ALPN protocol of the cluster's `istio.metadata_exchange` upstream filter (Istio's `istio-peer-exchange`),
   * which the TCP proxy runs on its TLS connections to the cluster; null without one.
   */
  readonly exchangeProtocol: string | null

  #hosts: readonly Host[] = []
  #byKey = new Map<string, Host>()
  readonly #lbFactory: LbFactory
  readonly #hashPicksPriority: boolean
  /** common_lb_config.locality_weighted_lb_config: a locality is drawn within the level (locality.ts) */
  readonly #localityWeighted: boolean
  /** One compiled LB per (level, healthy|degraded) set that gets traffic, with cumulative load in percent. */
  #choices: LoadBalancer[] = []
  #cumulative = new Float64Array(0)
  #load: PriorityLoad = { healthy: [], degraded: [] }
  #dirty = false
  #rebuildQueued = false
  readonly #dns: DnsDiscovery | null = null
  readonly #listeners = new Set<HostsListener>()

  /** Throws ClusterConfigError for what the schema could not check. */
  constructor(config: Cluster, options: UpstreamClusterOptions = {}) {
    const issues: ConfigIssue[] = []
    const s: ClusterSettings = clusterSettings(config, options.path ?? '', issues, options.secrets)
    const hc = config.health_checks?.[0]
    const hcPath = `${options.path ?? ''}.health_checks[0]`
    const hcSettings = hc === undefined ? null : healthCheckSettings(hc, config.name, s.http2, hcPath, issues)
    if (issues.length > 0) throw new ClusterConfigError(issues)
    this.name = config.name
    this.config = config
    this.type = s.type
    this.edsName = config.eds_cluster_config?.service_name ?? config.name
    this.lbPolicy = s.lbPolicy
    this.connectTimeoutMs = s.connectTimeoutMs
    this.http2 = s.http2
    this.http2Options = s.http2Options
    this.idleTimeoutMs = s.idleTimeoutMs
    this.maxRequestsPerConnection = s.maxRequestsPerConnection
    this.perConnectionBufferLimitBytes = s.perConnectionBufferLimitBytes
    this.sockets = s.sockets!
    this.#secrets = options.secrets
    this.#lbFactory = lbFactoryFor(config)
    this.#hashPicksPriority = usesHash(s.lbPolicy)
    this.#localityWeighted = config.common_lb_config?.locality_weighted_lb_config !== undefined
    this.stats = new ClusterStats(config.name)
    const thresholds = defaultThresholds(config.circuit_breakers?.thresholds)
    const breakers = config.circuit_breakers === undefined ? null : new CircuitBreakers(thresholds, this.stats)
    // Istio's thresholds for a pool that sets nothing are all 2^32-1: nothing to enforce, nothing to pay per request
    // (a retry budget is a share of the requests in flight, which only a breaker object counts)
    const budget = thresholds?.retry_budget !== undefined
    this.circuitBreakers = breakers === null || (breakers.unlimited && !budget) ? null : breakers
    this.hostConnectionLimit = breakers === null ? breakerDefaults.maxConnections : Number.POSITIVE_INFINITY
    this.retryBudget = new RetryBudget(thresholds, this.stats, this.circuitBreakers)
    this.outlierDetector =
      config.outlier_detection === undefined
        ? null
        : new OutlierDetector(config.outlier_detection, this, config.name, this.stats.outlier)
    this.healthChecker = hcSettings === null ? null : new HealthChecker(hcSettings, this)
    this.samplesLatency = samplesLatency(s.lbPolicy)
    this.plainRequests = this.circuitBreakers === null && this.outlierDetector === null && !this.samplesLatency
    this.exchangeProtocol = config.filters?.[0]?.typed_config.protocol ?? null

    const cla = config.load_assignment
    if (s.type === 'EDS') {
      if (cla !== undefined) this.updateHosts(hostSpecsFromAssignment(cla))
    } else if (s.type === 'STATIC') {
      this.updateHosts(hostSpecsFromAssignment(cla!))
    } else if (s.type === 'STRICT_DNS') {
      this.#dns = new DnsDiscovery(
        this.name,
        dnsTargets(cla!),
        {
          refreshRateMs: s.dnsRefreshRateMs,
          family: s.dnsLookupFamily,
          respectTtl: s.respectDnsTtl,
          lookup: options.dnsLookup,
          ttlLookup: options.dnsTtlLookup,
        },
        (hosts) => this.updateHosts(hosts),
      )
    }
  }

  /**
   * Starts discovery: for STRICT_DNS, resolves when every name resolved (or failed) once; refreshes continue on
   * unref'd timers until stop(). Immediate for STATIC clusters.
   */
  start(): Promise<void> {
    this.outlierDetector?.start()
    this.#watchSecrets()
    const discovered = this.#dns?.start() ?? Promise.resolve()
    const hc = this.healthChecker
    // as Envoy's cluster initialisation, a health-checked cluster is ready after the first round of checks
    return hc === null ? discovered : discovered.then(() => hc.start())
  }

  /** Stops DNS refreshes, outlier detection's interval and active health checks. */
  stop(): void {
    for (const off of this.#unsubscribe) off()
    this.#unsubscribe = []
    this.#dns?.stop()
    this.outlierDetector?.stop()
    this.healthChecker?.stop()
  }

  /**
   * Options for `tls.connect` of the cluster's own transport_socket, or null (plain text); a host's own are
   * `host.transport.tls`.
   */
  get tls(): UpstreamTlsOptions | null {
    return this.sockets.default.tls
  }

  /** Rebuilds a socket's TLS options when a secret its context names changes (a failed rebuild keeps the old). */
  #watchSecrets(): void {
    const store = this.#secrets
    if (store === undefined || this.#unsubscribe.length > 0) return
    for (const socket of this.sockets.all()) {
      const rebuild = () => socket.rebuild(this.http2, store, this.name)
      for (const name of socket.secretNames()) this.#unsubscribe.push(store.subscribe(name, rebuild))
    }
  }

  /** Counts circuit breaking and outlier detection in `stats` (kept by name across cluster updates). */
  bindStats(stats: ClusterStats): void {
    this.stats = stats
    if (this.circuitBreakers !== null) this.circuitBreakers.counters = stats
    this.retryBudget.counters = stats
    if (this.outlierDetector !== null) this.outlierDetector.stats = stats.outlier
    stats.cluster = this
  }

  /** Every host, whatever its priority and health. The array is replaced, never mutated, by updates. */
  hosts(): readonly Host[] {
    return this.#hosts
  }

  /** The host with this `address:port` key, if it is a member. */
  host(key: string): Host | undefined {
    return this.#byKey.get(key)
  }

  /**
   * Picks a host by the cluster's lb_policy. The priority level (and healthy before degraded hosts) is drawn by
   * Envoy's priority load (overprovisioning factor 1.4); for RING_HASH and MAGLEV the draw uses `hash` too, so a
   * key sticks to a level. `hash` (a uint32) is what RING_HASH and MAGLEV route by; undefined picks at random.
   * Returns null when no host is healthy (the proxy answers 503 UH).
   */
  chooseHost(hash: number | undefined): Host | null {
    if (this.#dirty) this.#rebuild()
    const choices = this.#choices
    const n = choices.length
    if (n === 0) return null
    if (n === 1) return choices[0]!.pick(hash)
    const u = hash !== undefined && this.#hashPicksPriority ? (hash >>> 0) % 100 : Math.random() * 100
    const cumulative = this.#cumulative
    let i = 0
    while (i < n - 1 && u >= cumulative[i]!) i++
    return choices[i]!.pick(hash)
  }

  /** Percent of traffic each priority level's healthy and degraded hosts get now (index = priority). */
  priorityLoad(): PriorityLoad {
    if (this.#dirty) this.#rebuild()
    return { healthy: this.#load.healthy.slice(), degraded: this.#load.degraded.slice() }
  }

  /**
   * Replaces the membership. Hosts whose `address:port` stays keep their identity (the same Host object, so
   * pools and counters survive) and take the new weight, priority, locality and (when given) health; removed hosts
   * get `pool.drain()`. Load balancers are rebuilt once, and only if something they depend on changed.
   * A key listed twice keeps its first listing.
   */
  updateHosts(specs: readonly HostSpec[]): HostsChange {
    const next = new Map<string, Host>()
    const list: Host[] = []
    const added: Host[] = []
    const removed: Host[] = []
    let changed = false
    const sockets = this.sockets
    for (const spec of specs) {
      const key = hostKey(spec.address, spec.port)
      if (next.has(key)) {
        log('debug', 'cluster', 'duplicate host in update; keeping the first', { cluster: this.name, host: key })
        continue
      }
      let host = this.#byKey.get(key)
      if (host === undefined) {
        host = new Host(spec, this)
        added.push(host)
        changed = true
      } else if (host.update(spec)) {
        changed = true
      }
      host.transport = sockets.matches
        ? sockets.choose(host.transportMatch, host.localityTransportMatch)
        : sockets.default
      next.set(key, host)
      list.push(host)
    }
    for (const [key, host] of this.#byKey) {
      if (next.has(key)) continue
      removed.push(host)
      changed = true
    }
    this.#byKey = next
    this.#hosts = list
    const od = this.outlierDetector
    if (od !== null) {
      for (const host of added) od.addHost(host)
      for (const host of removed) od.removeHost(host)
    }
    const hc = this.healthChecker
    if (hc !== null) {
      for (const host of added) hc.addHost(host)
      for (const host of removed) hc.removeHost(host)
    }
    if (changed) this.#rebuild()
    for (const host of removed) host.pool?.drain()
    if (added.length > 0 || removed.length > 0) {
      log('debug', 'cluster', 'membership updated', {
        cluster: this.name,
        added: added.map((h) => h.key),
        removed: removed.map((h) => h.key),
        hosts: list.length,
      })
      const change = { added, removed }
      for (const listener of this.#listeners) listener(change)
    }
    return { added, removed }
  }

  /** Membership from an EDS ClusterLoadAssignment (endpoints must be IP addresses; others are skipped). */
  updateFromAssignment(cla: ClusterLoadAssignment): HostsChange {
    return this.updateHosts(hostSpecsFromAssignment(cla))
  }

  /** Called after each membership update that adds or removes hosts. Returns a function that unsubscribes. */
  onHostsChanged(listener: HostsListener): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** HostOwner: a host's health changed; rebuild the LBs before the next pick (once for a burst of changes). */
  hostHealthChanged(): void {
    this.#dirty = true
    if (this.#rebuildQueued) return
    this.#rebuildQueued = true
    queueMicrotask(() => {
      this.#rebuildQueued = false
      if (this.#dirty) this.#rebuild()
    })
  }

  #rebuild(): void {
    this.#dirty = false
    let levels = 0
    for (const h of this.#hosts) levels = Math.max(levels, h.priority + 1)
    const healthy: Host[][] = Array.from({ length: levels }, () => [])
    const degraded: Host[][] = Array.from({ length: levels }, () => [])
    const counts: LevelCounts[] = Array.from({ length: levels }, () => ({ healthy: 0, degraded: 0, total: 0 }))
    for (const h of this.#hosts) {
      const p = h.priority
      counts[p]!.total++
      const e = hostEligibility(h.ejected, h.failedActiveHc, h.healthStatus)
      if (e === 'healthy') {
        healthy[p]!.push(h)
        counts[p]!.healthy++
      } else if (e === 'degraded') {
        degraded[p]!.push(h)
        counts[p]!.degraded++
      }
    }
    const load = computePriorityLoad(counts)
    const choices: LoadBalancer[] = []
    const cumulative: number[] = []
    let sum = 0
    const members: Host[][] = Array.from({ length: this.#localityWeighted ? levels : 0 }, () => [])
    if (this.#localityWeighted) for (const h of this.#hosts) members[h.priority]!.push(h)
    const add = (hosts: Host[], share: number, p: number) => {
      if (share <= 0 || hosts.length === 0) return
      choices.push(
        this.#localityWeighted
          ? localityWeightedLb(hosts, members[p]!, this.#lbFactory, this.#hashPicksPriority)
          : this.#lbFactory(hosts),
      )
      sum += share
      cumulative.push(sum)
    }
    for (let p = 0; p < levels; p++) add(healthy[p]!, load.healthy[p]!, p)
    for (let p = 0; p < levels; p++) add(degraded[p]!, load.degraded[p]!, p)
    this.#choices = choices
    this.#cumulative = Float64Array.from(cumulative)
    this.#load = load
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, type: this.type, lb_policy: this.lbPolicy, hosts: this.#hosts.map((h) => h.toJSON()) }
  }
}

/** The names a STRICT_DNS cluster resolves, one per lb_endpoint. */
function dnsTargets(cla: ClusterLoadAssignment): DnsTarget[] {
  const out: DnsTarget[] = []
  for (const locality of cla.endpoints ?? []) {
    for (const lbe of locality.lb_endpoints) {
      const sa = lbe.endpoint.address.socket_address
      const target: DnsTarget = {
        name: sa.address,
        port: sa.port_value,
        hostname: lbe.endpoint.hostname || sa.address,
        weight: lbe.load_balancing_weight ?? 1,
        priority: locality.priority ?? 0,
      }
      if (locality.locality !== undefined) target.locality = locality.locality
      if (locality.load_balancing_weight !== undefined) target.localityWeight = locality.load_balancing_weight
      if (lbe.health_status !== undefined) target.healthStatus = lbe.health_status
      out.push(target)
    }
  }
  return out
}
