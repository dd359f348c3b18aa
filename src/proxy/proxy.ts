/**
 * The proxy process: clusters, listeners, routes and the admin endpoint, from a static bootstrap and, when connected
 * to a control plane, from xDS.
 *
 * Static config is compiled completely before anything listens, so an invalid bootstrap never half-starts. Dynamic
 * config arrives as whole sets per type (state of the world) through `applyClusters`, `applyEndpoints`,
 * `applyListeners` and `applyRoutes`: each set is compiled first and applied only if all of it is valid, so a bad
 * update is rejected (the xDS client NACKs it) and the running config stays as it was. Changing a listener keeps its
 * socket and drains the connections that were using the old filter chains; in-flight requests are never dropped.
 */
import type {
  Bootstrap,
  Cluster,
  ClusterLoadAssignment,
  IstioMetadataExchange,
  Listener,
  RouteConfiguration,
  Secret,
  TerminalNetworkFilter,
  VirtualHost,
} from '../config/envoy.js'
import { TypeUrls } from '../config/type-urls.js'
import { ConfigError, type ConfigIssue, ErrorCodes, LoomError } from '../core/errors.js'
import { log } from '../core/log.js'
import { AdminServer } from './admin/admin.js'
import { TapHub } from './tap/tap.js'
import { ClusterManager } from './cluster/index.js'
import { HcmContext } from './http/hcm.js'
import type { IdentityStatus } from './identity/client.js'
import { PoolManager } from './http/pools.js'
import { ActiveListener, type CompiledChain, type NetworkHandler } from './listener/listener.js'
import type { OnDemandHosts } from './route/on-demand.js'
import { type CompiledRouteConfig, compileRouteConfig } from './route/router.js'
import { PathStats } from './stats/paths.js'
import { StatsStore } from './stats/stats.js'
import { checkHttpFilters, HttpFilterConfigError } from './http/filters/index.js'
import { TcpProxyContext } from './tcp/tcp-proxy.js'
import { setTracingNode } from './tracing/tracer.js'
import { NetworkRbacFilter } from './rbac/network.js'
import { buildDownstreamTls } from './tls.js'
import { type Secret as StoredSecret, SecretStore } from './secrets/store.js'
import { storedSecret } from './secrets/tls-material.js'
import { LocalWorkload, type NodeInfo } from './telemetry/workload.js'
import type { TelemetryContext } from './http/filters/istio-stats/istio-stats.js'
import { TcpExchange } from './telemetry/tcp-exchange.js'
import { TcpStatsRecorder } from './telemetry/tcp-stats.js'

export interface ProxyOptions {
  /** Where the config came from, for error messages. */
  file: string
  /** How long in-flight work may take to finish on shutdown. */
  drainTimeMs: number
  /**
   * Keep this many busiest request paths of the connection managers that are not inbound (admin
   * `/stats/paths`); 0 or absent: none are kept
   */
  pathStats?: number
}

function issuesOf(err: unknown): ConfigIssue[] | null {
  const issues = (err as { issues?: unknown } | null)?.issues
  return Array.isArray(issues) ? (issues as ConfigIssue[]) : null
}

/** Thrown by the apply* methods: the update was not applied. */
export class UpdateRejectedError extends LoomError {
  override name = 'UpdateRejectedError'
  readonly issues: ConfigIssue[]
  constructor(what: string, issues: ConfigIssue[]) {
    super(ErrorCodes.CONFIG_INVALID, `${what} rejected:\n${issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`)
    this.issues = issues
  }
}

const EMPTY_ROUTES: RouteConfiguration = { virtual_hosts: [] }

export class ProxyServer {
  readonly bootstrap: Bootstrap
  readonly options: ProxyOptions
  readonly stats = new StatsStore()
  /**
   * secrets by SDS name: `default` (own chain and key) and `ROOTCA` (trust bundle) among them; filled by the
   * bootstrap's `static_resources.secrets`, SDS over ADS and the identity client
   */
  readonly secrets = new SecretStore()
  /**
   * The proxy's own workload (telemetry/workload.ts), from the bootstrap's node, or what `setNode` says when the
   * node comes from the command line (xDS): what Istio's stats filters report and exchange.
   */
  workload: LocalWorkload
  /** the proxy's own certificate from the control plane (`--identity-token-file`), for the admin `/certs` */
  identity: { status(): IdentityStatus | null; stop(): void } | null = null
  readonly clusters: ClusterManager
  private readonly pools: PoolManager
  private readonly listenerMap = new Map<string, ActiveListener>()
  /** HTTP connection managers by the RDS route configuration they use */
  private readonly rdsUsers = new Map<string, Set<HcmContext>>()
  /** RDS route configurations received, compiled (with the VHDS virtual hosts held for them) */
  private readonly routeTables = new Map<string, { config: RouteConfiguration; compiled: CompiledRouteConfig }>()
  /** VHDS: per route configuration that names `vhds`, the virtual hosts received (by VirtualHost resource name) */
  private readonly vhdsHosts = new Map<string, Map<string, VirtualHost>>()
  /** on-demand virtual hosts for route configurations with `vhds` (set when the proxy runs on xDS) */
  onDemand: OnDemandHosts | null = null
  /** names of clusters and listeners that came from the bootstrap (xDS never removes them) */
  private readonly staticClusters = new Set<string>()
  private readonly staticListeners = new Set<string>()
  /** the last dynamic configs applied, for config_dump */
  readonly dynamic = {
    clusters: new Map<string, Cluster>(),
    listeners: new Map<string, Listener>(),
    routes: new Map<string, RouteConfiguration>(),
    endpoints: new Map<string, ClusterLoadAssignment>(),
    secrets: new Map<string, StoredSecret>(),
  }
  private admin: AdminServer | null = null
  /** live request taps (admin `/tap`), shared by every connection manager */
  readonly tap = new TapHub(() => this.identity?.status()?.spiffeId ?? null)
  /**
   * Envoy's server states (`admin.v3.ServerInfo.State`): PRE_INITIALIZING until `start()`, INITIALIZING while the
   * clusters start and the listeners bind and while something holds it back (`holdLive`: the first config and
   * secrets from a control plane), LIVE when serving, DRAINING once the listeners stop accepting
   * (`POST /drain_listeners`, SIGTERM). `/ready` answers 200 only when LIVE.
   */
  state: 'PRE_INITIALIZING' | 'INITIALIZING' | 'LIVE' | 'DRAINING' = 'PRE_INITIALIZING'
  /** what holds the proxy in INITIALIZING (Envoy's init manager), and whether `start()` is done */
  readonly #holds = new Set<string>()
  #started = false
  private shuttingDown = false
  readonly startedAt = new Date()

  /** Compiles the static config; throws ConfigError with every issue found, paths from the bootstrap root. */
  constructor(bootstrap: Bootstrap, options: ProxyOptions) {
    this.bootstrap = bootstrap
    this.options = options
    if ((options.pathStats ?? 0) > 0) this.stats.paths = new PathStats(options.pathStats!)
    this.workload = new LocalWorkload(
      { id: bootstrap.node?.id ?? '', metadata: bootstrap.node?.metadata ?? {} },
      this.secrets,
    )
    if (bootstrap.node?.id !== undefined) setTracingNode(bootstrap.node.id, bootstrap.node.locality?.zone)
    const issues: ConfigIssue[] = []
    const clusterConfigs = bootstrap.static_resources?.clusters ?? []
    this.applyStaticSecrets(bootstrap.static_resources?.secrets ?? [], issues)
    let clusters: ClusterManager | null = null
    try {
      clusters = new ClusterManager(clusterConfigs, { secrets: this.secrets })
    } catch (err) {
      const list = issuesOf(err)
      if (list === null) throw err
      for (const i of list) issues.push({ path: `static_resources.clusters${i.path}`, message: i.message })
    }
    this.clusters = clusters ?? new ClusterManager([], { secrets: this.secrets })
    for (const c of clusterConfigs) {
      this.clusters.get(c.name)?.bindStats(this.stats.forCluster(c.name))
      this.staticClusters.add(c.name)
    }
    this.pools = new PoolManager(this.stats)
    ;(bootstrap.static_resources?.listeners ?? []).forEach((l, i) => {
      const chains = this.compileListener(l, `static_resources.listeners[${i}]`, issues)
      if (chains !== null) {
        this.listenerMap.set(l.name, this.wire(new ActiveListener(l, chains)))
        this.staticListeners.add(l.name)
      }
    })
    if (issues.length > 0) throw new ConfigError(options.file, issues)
  }

  /** The node as it identifies itself to the control plane: listeners compiled from now on report it. */
  setNode(node: NodeInfo): void {
    this.workload = new LocalWorkload(node, this.secrets)
  }

  /** `static_resources.secrets`: into the store, where TLS contexts find them by name. */
  private applyStaticSecrets(secrets: readonly Secret[], issues: ConfigIssue[]): void {
    const seen = new Set<string>()
    secrets.forEach((s, i) => {
      const path = `static_resources.secrets[${i}]`
      if (seen.has(s.name)) {
        issues.push({ path: `${path}.name`, message: `duplicate secret "${s.name}"` })
        return
      }
      seen.add(s.name)
      const stored = storedSecret(s, path, issues)
      if (stored !== null) this.secrets.set(s.name, stored)
    })
  }

  /**
   * Secret resources over ADS (SDS), by name. Each is stored; the TLS contexts that name it are rebuilt at once (new
   * connections use the new material, open ones keep theirs). A response is applied whole or not at all.
   */
  applySecrets(configs: readonly Secret[], removed: readonly string[] = []): void {
    const issues: ConfigIssue[] = []
    const next: [string, StoredSecret][] = []
    configs.forEach((s, i) => {
      const stored = storedSecret(s, `[${i}]`, issues)
      if (stored !== null) next.push([s.name, stored])
    })
    if (issues.length > 0) throw new UpdateRejectedError('secrets', issues)
    for (const [name, s] of next) {
      this.secrets.set(name, s)
      this.dynamic.secrets.set(name, s)
    }
    // only what SDS delivered is SDS's to remove (the identity client's `default` and `ROOTCA` are not)
    for (const name of removed) {
      if (!this.dynamic.secrets.has(name)) continue
      this.secrets.delete(name)
      this.dynamic.secrets.delete(name)
    }
  }

  /** SDS names the TLS contexts read (what to subscribe to over ADS). */
  secretNames(): string[] {
    const out = new Set<string>()
    for (const c of this.clusters.all()) {
      for (const s of c.sockets.all()) for (const n of s.secretNames()) out.add(n)
    }
    for (const l of this.listenerMap.values())
      for (const ch of l.chains) for (const n of ch.tls?.secretNames ?? []) out.add(n)
    return [...out].sort()
  }

  /**
   * A `use_original_dst` listener hands its connections over through the index of listeners that bind nothing, to
   * one of its own traffic direction (an inbound connection never lands on an outbound listener of the same port);
   * every listener change rebuilds the index on the next connection.
   */
  private wire(l: ActiveListener): ActiveListener {
    this.unbound = null
    l.handoff = l.config.use_original_dst === true ? this.byOriginalDst : null
    return l
  }

  /** `bind_to_port: false` listeners by `address:port` (null: to be rebuilt) */
  private unbound: Map<string, ActiveListener> | null = null

  private readonly byOriginalDst = (address: string, port: number, direction: string): ActiveListener | null => {
    let index = this.unbound
    if (index === null) {
      index = new Map()
      for (const l of this.listenerMap.values()) {
        if (l.binds) continue
        const a = l.config.address.socket_address
        index.set(`${l.config.traffic_direction ?? ''}|${a.address}:${a.port_value}`, l)
      }
      this.unbound = index
    }
    return index.get(`${direction}|${address}:${port}`) ?? index.get(`${direction}|0.0.0.0:${port}`) ?? null
  }

  get listeners(): ActiveListener[] {
    return [...this.listenerMap.values()]
  }

  private compileListener(l: Listener, path: string, issues: ConfigIssue[]): CompiledChain[] | null {
    const chains: CompiledChain[] = []
    const before = issues.length
    l.filter_chains.forEach((fc, j) => {
      const fpath = `${path}.filter_chains[${j}]`
      // network RBAC filters first, the terminal filter last (the schema checks the order)
      const last = fc.filters.length - 1
      const t = fc.filters[last]!.typed_config as TerminalNetworkFilter
      const rbac: NetworkRbacFilter[] = []
      let tcpStats: TcpStatsRecorder | null = null
      let exchange: IstioMetadataExchange | null = null
      const telemetry: TelemetryContext = {
        workload: this.workload,
        direction: l.traffic_direction ?? 'UNSPECIFIED',
        metrics: this.stats.istio,
      }
      fc.filters.slice(0, last).forEach((f, k) => {
        const c = f.typed_config
        if (c['@type'] === TypeUrls.networkRbac)
          rbac.push(new NetworkRbacFilter(f.name, c, `${fpath}.filters[${k}].typed_config`, issues, this.stats))
        else if (c['@type'] === TypeUrls.istioStats) tcpStats = new TcpStatsRecorder(c, telemetry)
        else if (c['@type'] === TypeUrls.metadataExchange) exchange = c
      })
      let handler: NetworkHandler
      let defaultAlpn = ['http/1.1']
      if (t['@type'] === TypeUrls.hcm) {
        const chainIssues = issues.length
        checkHttpFilters(t.http_filters ?? [], `${fpath}.filters[${last}].typed_config.http_filters`, issues)
        if (issues.length > chainIssues) return
        try {
          const rdsName = t.rds?.route_config_name ?? null
          const router =
            rdsName === null
              ? compileRouteConfig(t.route_config!)
              : (this.routeTables.get(rdsName)?.compiled ?? compileRouteConfig({ ...EMPTY_ROUTES, name: rdsName }))
          const hcm = new HcmContext(t, router, this.clusters, this.pools, this.stats, rdsName, telemetry, this.tap)
          if (rdsName !== null && this.routeTables.get(rdsName)?.config.vhds !== undefined) hcm.onDemand = this.onDemand
          handler = { kind: 'hcm', hcm }
          defaultAlpn = hcm.codec === 'HTTP1' ? ['http/1.1'] : hcm.codec === 'HTTP2' ? ['h2'] : ['h2', 'http/1.1']
        } catch (err) {
          const list = issuesOf(err)
          if (list === null) throw err
          const within = err instanceof HttpFilterConfigError ? '' : 'route_config.'
          for (const i of list) {
            issues.push({
              path: `${fpath}.filters[${last}].typed_config.${within}${i.path}`
                .replace(/\.$/, '')
                .replace(/\.\[/g, '['),
              message: i.message,
            })
          }
          return
        }
      } else {
        const mx = new TcpExchange(this.workload, this.stats, exchange)
        handler = { kind: 'tcp', tcp: new TcpProxyContext(t, this.clusters, this.stats, tcpStats, mx, l.name) }
        defaultAlpn = []
      }
      let secure = null
      if (fc.transport_socket !== undefined) {
        secure = buildDownstreamTls(
          fc.transport_socket.typed_config,
          defaultAlpn,
          `${fpath}.transport_socket.typed_config`,
          issues,
          this.secrets,
        )
        if (secure === null) return
      }
      const m = fc.filter_chain_match
      chains.push({
        config: fc,
        serverNames: (m?.server_names ?? []).map((s) => s.toLowerCase()),
        transportProtocol: m?.transport_protocol ?? '',
        applicationProtocols: m?.application_protocols ?? [],
        tls: secure,
        rbac,
        handler,
      })
    })
    return issues.length === before ? chains : null
  }

  /** The HTTP connection managers of a set of chains: they start using their RDS tables, and stop when drained. */
  private registerHcms(chains: readonly CompiledChain[]): void {
    for (const c of chains) {
      if (c.handler.kind !== 'hcm' || c.handler.hcm.rdsName === null) continue
      let set = this.rdsUsers.get(c.handler.hcm.rdsName)
      if (set === undefined) this.rdsUsers.set(c.handler.hcm.rdsName, (set = new Set()))
      set.add(c.handler.hcm)
    }
  }

  private unregisterHcms(chains: readonly CompiledChain[]): void {
    for (const c of chains) {
      if (c.handler.kind !== 'hcm') continue
      if (c.handler.hcm.rdsName !== null) this.rdsUsers.get(c.handler.hcm.rdsName)?.delete(c.handler.hcm)
    }
  }

  async start(): Promise<void> {
    const a = this.bootstrap.admin?.address.socket_address
    if (a !== undefined) {
      this.admin = new AdminServer(this)
      try {
        await this.admin.listen(a.address, a.port_value)
      } catch (err) {
        this.admin = null
        throw new LoomError(
          ErrorCodes.LISTEN,
          `admin endpoint cannot listen on ${a.address}:${a.port_value}: ${(err as Error).message}`,
        )
      }
    }
    this.state = 'INITIALIZING'
    await this.clusters.start()
    for (const l of this.listenerMap.values()) {
      this.registerHcms(l.chains)
      await this.listen(l)
    }
    this.#started = true
    this.#maybeLive()
  }

  /**
   * Holds the proxy back from LIVE (after `start()` too) until the returned function is called: what a proxy waits
   * for before it says it is ready, as Envoy's init manager does for the first xDS responses and their secrets.
   * Call it before `start()`. Releasing twice, or after the proxy left INITIALIZING, changes nothing.
   */
  holdLive(name: string): () => void {
    this.#holds.add(name)
    return () => {
      this.#holds.delete(name)
      this.#maybeLive()
    }
  }

  #maybeLive(): void {
    if (this.state === 'INITIALIZING' && this.#started && this.#holds.size === 0) this.state = 'LIVE'
  }

  private async listen(l: ActiveListener): Promise<void> {
    try {
      await l.listen()
    } catch (err) {
      throw new LoomError(
        ErrorCodes.LISTEN,
        `listener "${l.name}" cannot listen on ${l.address}: ${(err as Error).message}`,
      )
    }
    // Envoy names listener stats by address; with port 0 that is the port the OS chose
    l.stats = this.stats.forListener(`${l.config.address.socket_address.address}_${l.boundPort}`)
    log('info', 'listener', 'listening', { name: l.name, address: l.address })
  }

  // === dynamic configuration (xDS) ===

  /**
   * The full set of dynamic clusters (CDS). Clusters from the bootstrap stay. An unchanged cluster is not touched
   * (its hosts, pools and in-flight requests carry on); a changed one is rebuilt and starts from the last assignment
   * received for it, so it keeps its hosts until the new assignment arrives; a new one has no hosts until its first
   * assignment (the control plane sends routes to it only after that).
   */
  applyClusters(configs: readonly Cluster[]): void {
    const issues: ConfigIssue[] = []
    const built = new Map<string, Cluster>()
    configs.forEach((c, i) => {
      if (this.staticClusters.has(c.name)) {
        issues.push({ path: `[${i}].name`, message: `cluster "${c.name}" is defined in the bootstrap` })
      } else if (built.has(c.name)) {
        issues.push({ path: `[${i}].name`, message: `duplicate cluster "${c.name}"` })
      } else built.set(c.name, c)
    })
    // compile every new or changed cluster before touching the running set
    const changed: Cluster[] = []
    for (const [name, c] of built) {
      const prev = this.dynamic.clusters.get(name)
      if (prev === undefined || JSON.stringify(prev) !== JSON.stringify(c)) changed.push(c)
    }
    const compiled = ClusterManager.compile(changed, issues, { secrets: this.secrets })
    if (issues.length > 0) throw new UpdateRejectedError('clusters', issues)
    for (const cluster of compiled) {
      const prevEndpoints = this.dynamic.endpoints.get(cluster.edsName)
      cluster.bindStats(this.stats.forCluster(cluster.name))
      this.clusters.upsert(cluster, prevEndpoints)
      void cluster.start()
    }
    for (const name of this.dynamic.clusters.keys()) {
      if (!built.has(name)) this.clusters.remove(name)
    }
    this.dynamic.clusters = built
    // assignments of clusters that are gone are forgotten: a cluster added again waits for its endpoints (as Envoy
    // warms a new cluster) rather than starting from hosts that may no longer be there
    const used = new Set<string>()
    for (const c of this.clusters.all()) if (c.type === 'EDS') used.add(c.edsName)
    for (const name of this.dynamic.endpoints.keys()) if (!used.has(name)) this.dynamic.endpoints.delete(name)
    log('info', 'xds', 'clusters applied', { total: built.size, changed: changed.length })
  }

  /** Endpoints for EDS clusters (by cluster_name = the cluster's eds service name). */
  applyEndpoints(assignments: readonly ClusterLoadAssignment[]): void {
    for (const cla of assignments) {
      this.dynamic.endpoints.set(cla.cluster_name, cla)
      for (const c of this.clusters.all()) {
        if (c.type === 'EDS' && c.edsName === cla.cluster_name) c.updateFromAssignment(cla)
      }
    }
  }

  /** The full set of dynamic listeners (LDS). New ones start, changed ones swap chains and drain, removed ones drain. */
  async applyListeners(configs: readonly Listener[]): Promise<void> {
    const issues: ConfigIssue[] = []
    const next = new Map<string, { config: Listener; chains: CompiledChain[] | null }>()
    configs.forEach((l, i) => {
      if (this.staticListeners.has(l.name)) {
        issues.push({ path: `[${i}].name`, message: `listener "${l.name}" is defined in the bootstrap` })
        return
      }
      if (next.has(l.name)) {
        issues.push({ path: `[${i}].name`, message: `duplicate listener "${l.name}"` })
        return
      }
      const prev = this.dynamic.listeners.get(l.name)
      const same = prev !== undefined && JSON.stringify(prev) === JSON.stringify(l)
      next.set(l.name, { config: l, chains: same ? null : this.compileListener(l, `[${i}]`, issues) })
    })
    if (issues.length > 0) throw new UpdateRejectedError('listeners', issues)
    for (const [name, { config, chains }] of next) {
      if (chains === null) continue
      const current = this.listenerMap.get(name)
      const sameAddress =
        current !== undefined &&
        JSON.stringify(current.config.address) === JSON.stringify(config.address) &&
        current.canSwapTo(chains)
      if (current !== undefined && sameAddress) {
        const old = current.swapChains(config, chains)
        this.wire(current)
        this.registerHcms(chains)
        this.unregisterHcms(old)
        continue
      }
      if (current !== undefined) {
        this.retire(current)
      }
      const l = this.wire(new ActiveListener(config, chains))
      this.listenerMap.set(name, l)
      this.registerHcms(chains)
      await this.listen(l)
    }
    for (const [name, l] of this.listenerMap) {
      if (!this.staticListeners.has(name) && !next.has(name)) this.retire(l)
    }
    this.dynamic.listeners = new Map([...next].map(([n, v]) => [n, v.config]))
  }

  /** Stops a listener: no new connections; existing ones finish their requests and close. */
  private retire(l: ActiveListener): void {
    this.listenerMap.delete(l.name)
    this.unbound = null
    this.unregisterHcms(l.chains)
    l.drain()
    setTimeout(() => l.destroy(), this.options.drainTimeMs).unref()
  }

  /** Route configurations (RDS), by name; every HTTP connection manager using one switches to it at once. */
  applyRoutes(configs: readonly RouteConfiguration[]): void {
    const issues: ConfigIssue[] = []
    const compiled: { name: string; config: RouteConfiguration; compiled: CompiledRouteConfig }[] = []
    configs.forEach((rc, i) => {
      if (rc.name === undefined) {
        issues.push({ path: `[${i}].name`, message: 'a route configuration from RDS needs a name' })
        return
      }
      try {
        compiled.push({ name: rc.name, config: rc, compiled: compileRouteConfig(this.withVirtualHosts(rc)) })
      } catch (err) {
        const list = issuesOf(err)
        if (list === null) throw err
        for (const x of list) issues.push({ path: `[${i}].${x.path}`, message: x.message })
      }
    })
    if (issues.length > 0) throw new UpdateRejectedError('routes', issues)
    for (const r of compiled) this.installRoutes(r)
  }

  private installRoutes(r: { name: string; config: RouteConfiguration; compiled: CompiledRouteConfig }): void {
    this.routeTables.set(r.name, r)
    // config dumps show the virtual hosts the proxy holds, as it routes by them
    this.dynamic.routes.set(r.name, this.withVirtualHosts(r.config))
    const onDemand = r.config.vhds !== undefined ? this.onDemand : null
    for (const hcm of this.rdsUsers.get(r.name) ?? []) {
      hcm.router = r.compiled
      hcm.onDemand = onDemand
    }
  }

  /** A route configuration with the VHDS virtual hosts held for it added to its own (named as in the config). */
  private withVirtualHosts(rc: RouteConfiguration): RouteConfiguration {
    if (rc.vhds === undefined || rc.name === undefined) return rc
    const held = this.vhdsHosts.get(rc.name)
    if (held === undefined || held.size === 0) return rc
    const prefix = `${rc.name}/`
    const added = [...held.values()].map((vh) => ({ ...vh, name: vh.name.slice(prefix.length) }))
    return { ...rc, virtual_hosts: [...(rc.virtual_hosts ?? []), ...added] }
  }

  /**
   * VHDS: virtual hosts that came (resources named `<route configuration>/<virtual host>`) and ones removed. Each
   * route configuration they belong to is compiled again with them, all or nothing; virtual hosts of a route
   * configuration the proxy does not have yet are kept for when it comes.
   */
  applyVirtualHosts(vhosts: readonly VirtualHost[], removed: readonly string[] = []): void {
    const next = new Map<string, Map<string, VirtualHost>>()
    const touched = (rc: string) => {
      let m = next.get(rc)
      if (m === undefined) next.set(rc, (m = new Map(this.vhdsHosts.get(rc) ?? [])))
      return m
    }
    const issues: ConfigIssue[] = []
    vhosts.forEach((vh, i) => {
      const slash = vh.name.indexOf('/')
      if (slash <= 0) {
        issues.push({ path: `[${i}].name`, message: 'a VirtualHost from VHDS is named <route configuration>/<name>' })
        return
      }
      touched(vh.name.slice(0, slash)).set(vh.name, vh)
    })
    for (const n of removed) {
      const slash = n.indexOf('/')
      if (slash > 0 && this.vhdsHosts.get(n.slice(0, slash))?.has(n)) touched(n.slice(0, slash)).delete(n)
    }
    if (issues.length > 0) throw new UpdateRejectedError('routes', issues)
    const compiled: { name: string; config: RouteConfiguration; compiled: CompiledRouteConfig }[] = []
    const before = new Map(this.vhdsHosts)
    for (const [rc, m] of next) this.vhdsHosts.set(rc, m)
    try {
      for (const rc of next.keys()) {
        const t = this.routeTables.get(rc)
        if (t === undefined) continue
        try {
          compiled.push({ name: rc, config: t.config, compiled: compileRouteConfig(this.withVirtualHosts(t.config)) })
        } catch (err) {
          const list = issuesOf(err)
          if (list === null) throw err
          for (const x of list) issues.push({ path: x.path, message: x.message })
        }
      }
      if (issues.length > 0) throw new UpdateRejectedError('routes', issues)
    } catch (err) {
      this.vhdsHosts.clear()
      for (const [k, v] of before) this.vhdsHosts.set(k, v)
      throw err
    }
    for (const r of compiled) this.installRoutes(r)
  }

  /** The VHDS virtual hosts held, by route configuration (config dumps). */
  virtualHosts(): Map<string, VirtualHost[]> {
    return new Map([...this.vhdsHosts].map(([rc, m]) => [rc, [...m.values()]]))
  }

  /** Route configuration names the listeners need (what to subscribe to over RDS). */
  routeNames(): string[] {
    return [...this.rdsUsers.keys()].filter((n) => (this.rdsUsers.get(n)?.size ?? 0) > 0).sort()
  }

  /** EDS names the clusters need. */
  endpointNames(): string[] {
    const out: string[] = []
    for (const c of this.clusters.all()) if (c.type === 'EDS') out.push(c.edsName)
    return out.sort()
  }

  get adminAddress(): string | null {
    return this.admin?.address ?? null
  }

  /** Stop accepting on every listener; connections finish their current request and close. */
  drainListeners(): void {
    this.state = 'DRAINING'
    for (const l of this.listenerMap.values()) l.drain()
  }

  /** Graceful shutdown: drain, wait for connections to finish (up to the drain time), then close everything. */
  async shutdown(): Promise<void> {
    if (this.shuttingDown) return
    this.shuttingDown = true
    this.drainListeners()
    const deadline = Date.now() + this.options.drainTimeMs
    while (Date.now() < deadline && this.listeners.some((l) => l.activeConnections > 0)) {
      await new Promise((r) => setTimeout(r, 50))
    }
    await this.close()
  }

  async close(): Promise<void> {
    this.identity?.stop()
    for (const l of this.listenerMap.values()) {
      l.destroy()
      l.close()
    }
    for (const c of this.clusters.all()) for (const h of c.hosts()) h.pool?.close()
    this.clusters.stop()
    this.tap.closeAll()
    await this.admin?.close()
  }
}
