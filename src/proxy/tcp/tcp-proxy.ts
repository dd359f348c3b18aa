/**
 * The TCP proxy network filter: each downstream connection gets one upstream connection to a host of the chosen
 * cluster, and bytes flow both ways with backpressure (pipe), half-close preserved, and an idle timeout.
 *
 * Istio's TCP metadata exchange (telemetry/tcp-exchange.ts) runs here on both sides: the chain's
 * `istio.metadata_exchange` filter on the downstream connection, the cluster's on the upstream one. Each direction
 * starts piping once its source's prefix is read (and its destination connected); a connection without an
 * exchange pipes as before.
 */
import * as net from 'node:net'
import { tls } from '../../core/lazy.js'
import type { TcpProxy } from '../../config/envoy.js'
import { parseDurationMs } from '../../core/duration.js'
import { type AccessLogSink, createAccessLogs } from '../access-log.js'
import type { ClusterManager } from '../cluster/index.js'
import type { StatsStore, TcpProxyStats } from '../stats/stats.js'
import { addressOf } from '../http/hcm.js'
import { connectionPeer } from '../identity/connection-peer.js'

/** The downstream side of a connection's access log entry. */
function downstreamFields(downstream: net.Socket): Record<string, unknown> {
  const sni = (downstream as { servername?: unknown }).servername
  return {
    downstream_local_address: addressOf(downstream.localAddress, downstream.localPort),
    downstream_remote_address: downstream.remoteAddress ?? null,
    downstream_peer_principal: connectionPeer(downstream)?.uris[0] ?? null,
    requested_server_name: typeof sni === 'string' ? sni : null,
  }
}
import { NO_EXCHANGE, type ExchangeResult, type TcpExchange } from '../telemetry/tcp-exchange.js'
import type { TcpStatsRecorder } from '../telemetry/tcp-stats.js'
import { Host } from '../cluster/host.js'
import { originalDst } from '../listener/original-dst.js'

/**
 * An ORIGINAL_DST cluster's host for a connection: where the connection was going before iptables redirected it
 * to this proxy (Istio's PassthroughCluster). Null when it was not redirected, or was sent to this very listener
 * (a passthrough to itself would loop).
 */
function passthroughHost(downstream: net.Socket): Host | null {
  const dst = originalDst(downstream)
  if (dst === null) return null
  if (dst.port === downstream.localPort && dst.address === downstream.localAddress) return null
  return new Host({ address: dst.address, port: dst.port })
}

export class TcpProxyContext {
  readonly stats: TcpProxyStats
  private readonly store: StatsStore
  private readonly clusters: ClusterManager
  private readonly choices: { name: string; weight: number }[]
  private readonly totalWeight: number
  private readonly idleTimeoutMs: number
  private readonly accessLogs: AccessLogSink[]
  /** Istio's TCP metrics (the chain's istio.stats network filter), or null */
  private readonly istio: TcpStatsRecorder | null
  /** Istio's metadata exchange: the chain's filter (downstream) and the clusters' (upstream); null: neither runs */
  private readonly exchange: TcpExchange | null
  private readonly listenerName: string

  constructor(
    cfg: TcpProxy,
    clusters: ClusterManager,
    store: StatsStore,
    istio: TcpStatsRecorder | null = null,
    exchange: TcpExchange | null = null,
    listenerName = '',
  ) {
    this.istio = istio
    this.exchange = exchange
    this.listenerName = listenerName
    this.stats = store.forTcp(cfg.stat_prefix)
    this.store = store
    this.clusters = clusters
    this.choices =
      cfg.cluster !== undefined
        ? [{ name: cfg.cluster, weight: 1 }]
        : (cfg.weighted_clusters?.clusters ?? []).map((c) => ({ name: c.name, weight: c.weight }))
    this.totalWeight = this.choices.reduce((a, c) => a + c.weight, 0)
    // Envoy's default idle timeout for the TCP proxy is 1 hour; 0s disables it
    this.idleTimeoutMs = cfg.idle_timeout === undefined ? 3600_000 : parseDurationMs(cfg.idle_timeout)!
    this.accessLogs = createAccessLogs(cfg.access_log)
  }

  private pickCluster(): string {
    if (this.choices.length === 1) return this.choices[0]!.name
    let r = Math.random() * this.totalWeight
    for (const c of this.choices) {
      r -= c.weight
      if (r < 0) return c.name
    }
    return this.choices[this.choices.length - 1]!.name
  }

  /**
   * A connection a network filter before this one refused (`details`: why): counted as a downstream connection
   * and written to the access log, with no upstream.
   */
  refused(downstream: net.Socket, details: string): void {
    this.stats.downstream_cx_total++
    if (this.accessLogs.length === 0) return
    const entry = {
      start_time: new Date().toISOString(),
      protocol: 'TCP',
      response_flags: '-',
      connection_termination_details: details,
      bytes_received: 0,
      bytes_sent: 0,
      duration: 0,
      ...downstreamFields(downstream),
      upstream_cluster: null,
      upstream_host: null,
      upstream_local_address: null,
      upstream_peer_principal: null,
    }
    for (const l of this.accessLogs) l.write(entry)
  }

  handle(downstream: net.Socket): void {
    const stats = this.stats
    stats.downstream_cx_total++
    const start = performance.now()
    const clusterName = this.pickCluster()
    const cluster = this.clusters.get(clusterName)
    const host =
      cluster === undefined
        ? null
        : cluster.type === 'ORIGINAL_DST'
          ? passthroughHost(downstream)
          : cluster.chooseHost(undefined)
    const istio = this.istio
    const open = istio === null ? null : istio.opened(downstream, cluster)
    let flag = ''
    /** why the proxy closed the connection itself (a bad exchange prefix), for the access log */
    let termination: string | null = null
    /** the exchange's prefix bytes on the downstream socket, each way (not the application's) */
    let prefixIn = 0
    let prefixOut = 0
    // read while the connection is open (a closed socket no longer knows its addresses)
    const down = this.accessLogs.length > 0 ? downstreamFields(downstream) : null
    /** the upstream connection's local address and verified peer, once connected (with an access log only) */
    let upstreamLocal: string | null = null
    let upstreamPeer: string | null = null
    const finish = () => {
      if (open !== null) istio!.closed(open)
      if (this.accessLogs.length === 0) return
      const ms = performance.now() - start
      const entry = {
        start_time: new Date(Date.now() - ms).toISOString(),
        protocol: 'TCP',
        response_flags: flag || '-',
        connection_termination_details: termination,
        bytes_received: downstream.bytesRead - prefixIn,
        bytes_sent: downstream.bytesWritten - prefixOut,
        duration: Math.round(ms * 1000) / 1000,
        ...down,
        upstream_cluster: clusterName,
        upstream_host: host?.key ?? null,
        upstream_local_address: upstreamLocal,
        upstream_peer_principal: upstreamPeer,
      }
      for (const l of this.accessLogs) l.write(entry)
    }
    if (cluster === undefined || host === null) {
      flag = cluster === undefined ? 'NC' : 'UH'
      stats.downstream_cx_no_route++
      downstream.destroy()
      finish()
      return
    }
    const cstats = this.store.forCluster(cluster.name)
    cstats.upstream_cx_total++
    cstats.upstream_cx_active++
    host.activeConnections++
    // half-open like the downstream socket: a FIN from the server must not end what the client still sends
    const opts = { host: host.address, port: host.port, allowHalfOpen: true }
    const tlsOptions = host.transport.tls
    const upstream = tlsOptions === null ? net.connect(opts) : tls().connect({ ...tlsOptions, ...opts })
    upstream.setNoDelay(true)
    downstream.setNoDelay(true)
    downstream.pause()
    const connectTimer = setTimeout(() => {
      flag = 'UF'
      cstats.upstream_cx_connect_timeout++
      upstream.destroy()
    }, cluster.connectTimeoutMs)
    // each direction pipes once its source's prefix is read (if any) and the upstream is connected
    const exchange = this.exchange
    let connected = false
    let downstreamReady = true
    let upstreamReady = false
    let flowingUp = false
    let flowingDown = false
    const flow = () => {
      if (!connected) return
      if (downstreamReady && !flowingUp) {
        flowingUp = true
        downstream.pipe(upstream)
        downstream.resume()
      }
      if (upstreamReady && !flowingDown) {
        flowingDown = true
        upstream.pipe(downstream)
      }
    }
    const refuse = (reason: string) => {
      termination = reason
      downstream.destroy()
      upstream.destroy()
    }
    const inbound = istio?.inbound === true
    const downProtocol = exchange?.downstreamProtocol ?? null
    if (downProtocol !== null) {
      downstreamReady = false
      exchange!.run(
        downstream,
        downProtocol,
        this.listenerName,
        (r) => {
          prefixIn = r.read
          prefixOut = r.written
          if (open !== null && inbound) istio!.identify(open, r.peer, null, r.read, r.written)
          downstreamReady = true
          flow()
        },
        refuse,
      )
    } else if (open !== null && inbound) istio!.identify(open, NO_EXCHANGE.peer, null, 0, 0)
    upstream.once(tlsOptions === null ? 'connect' : 'secureConnect', () => {
      clearTimeout(connectTimer)
      if (this.accessLogs.length > 0) {
        upstreamLocal = addressOf(upstream.localAddress, upstream.localPort)
        upstreamPeer = connectionPeer(upstream)?.uris[0] ?? null
      }
      connected = true
      const upProtocol = cluster.exchangeProtocol
      if (upProtocol === null || tlsOptions === null || exchange === null) {
        if (open !== null && !inbound) istio!.identify(open, NO_EXCHANGE.peer, upstream, 0, 0)
        upstreamReady = true
      } else {
        const identified = (r: ExchangeResult) => {
          if (open !== null && !inbound) istio!.identify(open, r.peer, upstream, 0, 0)
          upstreamReady = true
          flow()
        }
        exchange.run(upstream, upProtocol, cluster.name, identified, refuse)
      }
      flow()
    })
    if (this.idleTimeoutMs > 0) {
      const onIdle = () => {
        stats.idle_timeout++
        downstream.destroy()
        upstream.destroy()
      }
      downstream.setTimeout(this.idleTimeoutMs, onIdle)
      upstream.setTimeout(this.idleTimeoutMs, onIdle)
    }
    upstream.on('error', () => {
      if (flag === '' && upstream.bytesRead === 0 && upstream.bytesWritten === 0) {
        flag = 'UF'
        cstats.upstream_cx_connect_fail++
      }
    })
    downstream.on('error', () => {})
    let closed = 0
    const onClose = () => {
      if (++closed === 1) {
        downstream.destroySoon?.()
        upstream.destroySoon?.()
        // give a half-closed peer time to drain, then make sure both are gone
        setTimeout(() => {
          downstream.destroy()
          upstream.destroy()
        }, 1000).unref()
        return
      }
      clearTimeout(connectTimer)
      cstats.upstream_cx_active--
      host.activeConnections--
      stats.downstream_cx_rx_bytes_total += downstream.bytesRead - prefixIn
      stats.downstream_cx_tx_bytes_total += downstream.bytesWritten - prefixOut
      cstats.upstream_cx_rx_bytes_total += upstream.bytesRead
      cstats.upstream_cx_tx_bytes_total += upstream.bytesWritten
      finish()
    }
    downstream.once('close', onClose)
    upstream.once('close', onClose)
  }
}
