/**
 * Istio's TCP metrics for a tcp_proxy chain with the `istio.stats` network filter before it:
 * `istio_tcp_connections_opened_total` once the connection's labels are known, `..._closed_total` when it ends,
 * and `istio_tcp_received_bytes_total` / `istio_tcp_sent_bytes_total` (bytes read from and written to the
 * downstream connection, the metadata exchange's prefixes left out, as in Istio) every `tcp_reporting_duration`
 * (default 15 s, as Istio's) while it is open and at its end.
 *
 * The peer's workload comes from Istio's TCP metadata exchange (tcp-exchange.ts) on mTLS connections between
 * sidecars: inbound (reporter `destination`) the client's prefix gives the source_* labels, beside the principal of
 * the verified client certificate; outbound (reporter `source`) the server's prefix gives the destination_* labels,
 * beside the principal of the verified server certificate, the service coming from the cluster. Where there was no
 * exchange (plain text, a peer without it) the peer's labels are `unknown`. The listener's `traffic_direction`
 * decides the reporter as for HTTP.
 *
 * When: a connection is counted opened once its labels are known: inbound when the client's prefix has been read
 * (at once without an exchange), outbound when the upstream connection is up and the server's prefix read; one
 * that ends before that is counted then, with `unknown` peer labels.
 */
import type * as net from 'node:net'
import type { IstioStats } from '../../config/envoy.js'
import { parseDurationMs } from '../../core/duration.js'
import type { UpstreamCluster } from '../cluster/index.js'
import type { TelemetryContext } from '../http/filters/istio-stats/istio-stats.js'
import { connectionPeer } from '../identity/connection-peer.js'
import { type IstioMetrics, type LabelRow, type TcpSeries, UNKNOWN_SERVICE, UNKNOWN_WORKLOAD } from './metrics.js'
import { serviceOfCluster } from './service.js'
import { type LocalWorkload, UNKNOWN, type WorkloadMetadata } from './workload.js'

const DEFAULT_REPORTING_MS = 15_000

/** One connection the recorder follows: its series once its labels are known, and its counts not yet added. */
export class OpenConnection {
  readonly socket: net.Socket
  readonly cluster: UpstreamCluster | undefined
  /** inbound: the client certificate's principal, read while the socket is open */
  readonly principal: string
  series: TcpSeries | null = null
  /** the socket's bytesRead / bytesWritten already added (or not the application's: the exchange's prefixes) */
  read = 0
  written = 0
  constructor(socket: net.Socket, cluster: UpstreamCluster | undefined, principal: string) {
    this.socket = socket
    this.cluster = cluster
    this.principal = principal
  }
  /** adds what the socket moved since the last report */
  report(): void {
    const s = this.socket
    const series = this.series!
    const r = s.bytesRead
    const w = s.bytesWritten
    series.receivedBytes += r - this.read
    series.sentBytes += w - this.written
    this.read = r
    this.written = w
  }
}

export class TcpStatsRecorder {
  readonly inbound: boolean
  readonly workload: LocalWorkload
  readonly metrics: IstioMetrics
  readonly reportingMs: number
  /** peer metadata object → principal → cluster name → row */
  readonly #rows = new Map<WorkloadMetadata, Map<string, Map<string, LabelRow>>>()
  readonly #open = new Set<OpenConnection>()
  #timer: NodeJS.Timeout | null = null

  constructor(cfg: IstioStats, t: TelemetryContext) {
    this.inbound = t.direction === 'INBOUND'
    this.workload = t.workload
    this.metrics = t.metrics
    const d = cfg.tcp_reporting_duration === undefined ? null : parseDurationMs(cfg.tcp_reporting_duration)
    this.reportingMs = d !== null && d !== undefined && d > 0 ? d : DEFAULT_REPORTING_MS
  }

  #row(peer: WorkloadMetadata, principal: string, cluster: UpstreamCluster | undefined): LabelRow {
    let byPrincipal = this.#rows.get(peer)
    if (byPrincipal === undefined) this.#rows.set(peer, (byPrincipal = new Map()))
    let byCluster = byPrincipal.get(principal)
    if (byCluster === undefined) byPrincipal.set(principal, (byCluster = new Map()))
    const key = cluster?.name ?? ''
    let row = byCluster.get(key)
    if (row === undefined) {
      const service = (cluster === undefined ? null : serviceOfCluster(cluster)) ?? UNKNOWN_SERVICE
      row = this.metrics.peerRow(this.workload, this.inbound, peer, principal, service)
      byCluster.set(key, row)
    }
    return row
  }

  /** A connection the TCP proxy takes on (to `cluster`): followed from now on, counted once `identify` says who. */
  opened(downstream: net.Socket, cluster: UpstreamCluster | undefined): OpenConnection {
    const principal = this.inbound ? (connectionPeer(downstream)?.uris[0] ?? UNKNOWN) : UNKNOWN
    const c = new OpenConnection(downstream, cluster, principal)
    this.#open.add(c)
    if (this.#timer === null) {
      this.#timer = setInterval(() => this.#report(), this.reportingMs)
      this.#timer.unref()
    }
    return c
  }

  /**
   * The connection's labels are known: `peer` from the exchange (UNKNOWN_WORKLOAD without one), the principal from
   * the downstream's client certificate (inbound) or `upstream`'s server certificate (outbound, null: not
   * connected). `skipRead` / `skipWritten`: the exchange's prefix bytes on the downstream socket, not counted.
   */
  identify(
    c: OpenConnection,
    peer: WorkloadMetadata,
    upstream: net.Socket | null,
    skipRead: number,
    skipWritten: number,
  ): void {
    if (c.series !== null || !this.#open.has(c)) return
    const principal = this.inbound ? c.principal : (connectionPeer(upstream)?.uris[0] ?? UNKNOWN)
    const series = this.#row(peer, principal, c.cluster).tcp()
    series.opened++
    c.series = series
    c.read = skipRead
    c.written = skipWritten
  }

  closed(c: OpenConnection): void {
    if (c.series === null) this.identify(c, UNKNOWN_WORKLOAD, null, c.read, c.written)
    if (!this.#open.delete(c)) return
    c.report()
    c.series!.closed++
    if (this.#open.size === 0 && this.#timer !== null) {
      clearInterval(this.#timer)
      this.#timer = null
    }
  }

  #report(): void {
    for (const c of this.#open) if (c.series !== null) c.report()
  }
}
