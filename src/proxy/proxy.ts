/**
 * The proxy process: builds clusters, listeners and the admin endpoint from a validated bootstrap, and drains on
 * request. Config is compiled completely before anything listens, so an invalid bootstrap never half-starts.
 */
import type { Bootstrap, Listener } from '../config/envoy.js'
import { TypeUrls } from '../config/type-urls.js'
import { ConfigError, type ConfigIssue, ErrorCodes, LoomError } from '../core/errors.js'
import { log } from '../core/log.js'
import { AdminServer } from './admin/admin.js'
import { ClusterManager } from './cluster/index.js'
import { HcmContext } from './http/hcm.js'
import { PoolManager } from './http/pools.js'
import { ActiveListener, type CompiledChain, type NetworkHandler } from './listener/listener.js'
import { compileRouteConfig } from './route/router.js'
import { StatsStore } from './stats/stats.js'
import { TcpProxyContext } from './tcp/tcp-proxy.js'
import { buildDownstreamTls } from './tls.js'

export interface ProxyOptions {
  /** Where the config came from, for error messages. */
  file: string
  /** How long in-flight work may take to finish on shutdown. */
  drainTimeMs: number
}

function issuesOf(err: unknown): ConfigIssue[] | null {
  const issues = (err as { issues?: unknown } | null)?.issues
  return Array.isArray(issues) ? (issues as ConfigIssue[]) : null
}

export class ProxyServer {
  readonly bootstrap: Bootstrap
  readonly options: ProxyOptions
  readonly stats = new StatsStore()
  readonly clusters: ClusterManager
  readonly listeners: ActiveListener[] = []
  private readonly hcms: HcmContext[] = []
  private admin: AdminServer | null = null
  state: 'initializing' | 'live' | 'draining' = 'initializing'
  readonly startedAt = new Date()

  /** Compiles everything; throws ConfigError with every issue found, paths from the bootstrap root. */
  constructor(bootstrap: Bootstrap, options: ProxyOptions) {
    this.bootstrap = bootstrap
    this.options = options
    const issues: ConfigIssue[] = []
    const clusterConfigs = bootstrap.static_resources?.clusters ?? []
    let clusters: ClusterManager | null = null
    try {
      clusters = new ClusterManager(clusterConfigs)
    } catch (err) {
      const list = issuesOf(err)
      if (list === null) throw err
      for (const i of list) issues.push({ path: `static_resources.clusters${i.path}`, message: i.message })
    }
    this.clusters = clusters ?? new ClusterManager([])
    for (const c of clusterConfigs) this.stats.forCluster(c.name)
    const pools = new PoolManager(this.stats)
    ;(bootstrap.static_resources?.listeners ?? []).forEach((l, i) => {
      const chains = this.compileListener(l, `static_resources.listeners[${i}]`, pools, issues)
      if (chains !== null) this.listeners.push(new ActiveListener(l, chains))
    })
    if (issues.length > 0) throw new ConfigError(options.file, issues)
  }

  private compileListener(
    l: Listener,
    path: string,
    pools: PoolManager,
    issues: ConfigIssue[],
  ): CompiledChain[] | null {
    const chains: CompiledChain[] = []
    const before = issues.length
    l.filter_chains.forEach((fc, j) => {
      const fpath = `${path}.filter_chains[${j}]`
      const t = fc.filters[0]!.typed_config
      let handler: NetworkHandler
      let defaultAlpn = ['http/1.1']
      if (t['@type'] === TypeUrls.hcm) {
        try {
          const router = compileRouteConfig(t.route_config)
          const hcm = new HcmContext(t, router, this.clusters, pools, this.stats)
          this.hcms.push(hcm)
          handler = { kind: 'hcm', hcm }
          defaultAlpn = hcm.codec === 'HTTP1' ? ['http/1.1'] : hcm.codec === 'HTTP2' ? ['h2'] : ['h2', 'http/1.1']
        } catch (err) {
          const list = issuesOf(err)
          if (list === null) throw err
          for (const i of list) {
            issues.push({
              path: `${fpath}.filters[0].typed_config.route_config.${i.path}`.replace(/\.$/, '').replace(/\.\[/g, '['),
              message: i.message,
            })
          }
          return
        }
      } else {
        handler = { kind: 'tcp', tcp: new TcpProxyContext(t, this.clusters, this.stats) }
        defaultAlpn = []
      }
      let secure = null
      if (fc.transport_socket !== undefined) {
        secure = buildDownstreamTls(
          fc.transport_socket.typed_config,
          defaultAlpn,
          `${fpath}.transport_socket.typed_config`,
          issues,
        )
        if (secure === null) return
      }
      chains.push({
        config: fc,
        serverNames: (fc.filter_chain_match?.server_names ?? []).map((s) => s.toLowerCase()),
        secureContext: secure?.context ?? null,
        alpn: secure?.alpn ?? [],
        requireClientCert: secure?.requireClientCert ?? false,
        handler,
      })
    })
    return issues.length === before ? chains : null
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
    await this.clusters.start()
    for (const l of this.listeners) {
      try {
        await l.listen()
      } catch (err) {
        await this.close()
        throw new LoomError(
          ErrorCodes.LISTEN,
          `listener "${l.name}" cannot listen on ${l.address}: ${(err as Error).message}`,
        )
      }
      // Envoy names listener stats by address; with port 0 that is the port the OS chose
      l.stats = this.stats.forListener(`${l.config.address.socket_address.address}_${l.boundPort}`)
      log('info', 'listener', 'listening', { name: l.name, address: l.address })
    }
    this.state = 'live'
  }

  get adminAddress(): string | null {
    return this.admin?.address ?? null
  }

  /** Stop accepting on every listener; connections finish their current request and close. */
  drainListeners(): void {
    for (const l of this.listeners) l.drain()
  }

  /** Graceful shutdown: drain, wait for connections to finish (up to the drain time), then close everything. */
  async shutdown(): Promise<void> {
    if (this.state === 'draining') return
    this.state = 'draining'
    this.drainListeners()
    const deadline = Date.now() + this.options.drainTimeMs
    while (Date.now() < deadline && this.listeners.some((l) => l.activeConnections > 0)) {
      await new Promise((r) => setTimeout(r, 50))
    }
    await this.close()
  }

  async close(): Promise<void> {
    for (const l of this.listeners) l.destroy()
    for (const c of this.clusters.all()) for (const h of c.hosts()) h.pool?.close()
    this.clusters.stop()
    for (const h of this.hcms) h.close()
    await this.admin?.close()
  }
}
