/**
 * Istio's TCP metrics for a tcp_proxy chain with the `istio.stats` network filter before it:
 * `istio_tcp_connections_opened_total` when the upstream connection is attempted, `..._closed_total` when the
 * connection ends, and `istio_tcp_received_bytes_total` / `istio_tcp_sent_bytes_total` (bytes read from and written
 * to the downstream connection) every `tcp_reporting_duration` (default 15 s, as Istio's) while it is open and at
 * its end.
 *
 * The peer's workload: Istio learns it with an in-band exchange on mTLS connections (ALPN `istio-peer-exchange`);
 * Loom does not: on the inbound side the source is known by its principal only (the verified client certificate's
 * URI SAN; `source_workload` and the other source labels are `unknown`), on the outbound side the destination by
 * its service (from the cluster) only. The listener's `traffic_direction` decides the reporter as for HTTP.
 */
import type * as net from 'node:net'
import type { IstioStats } from '../../config/envoy.js'
import { parseDurationMs } from '../../core/duration.js'
import type { UpstreamCluster } from '../cluster/index.js'
import type { TelemetryContext } from '../http/filters/istio-stats/istio-stats.js'
import { connectionPeer } from '../identity/connection-peer.js'
import { type IstioMetrics, type LabelRow, type TcpSeries, UNKNOWN_SERVICE, UNKNOWN_WORKLOAD } from './metrics.js'
import { serviceOfCluster } from './service.js'
import { type LocalWorkload, UNKNOWN } from './workload.js'

const DEFAULT_REPORTING_MS = 15_000

/** One open connection's counts not yet added to its series. */
class OpenConnection {
  readonly socket: net.Socket
  readonly series: TcpSeries
  read = 0
  written = 0
  constructor(socket: net.Socket, series: TcpSeries) {
    this.socket = socket
    this.series = series
  }
  /** adds what the socket moved since the last report */
  report(): void {
    const s = this.socket
    const r = s.bytesRead
    const w = s.bytesWritten
    this.series.receivedBytes += r - this.read
    this.series.sentBytes += w - this.written
    this.read = r
    this.written = w
  }
}

export class TcpStatsRecorder {
  readonly inbound: boolean
  readonly workload: LocalWorkload
  readonly metrics: IstioMetrics
  readonly reportingMs: number
  /** principal → cluster name → row */
  readonly #rows = new Map<string, Map<string, LabelRow>>()
  readonly #open = new Set<OpenConnection>()
  #timer: NodeJS.Timeout | null = null

  constructor(cfg: IstioStats, t: TelemetryContext) {
    this.inbound = t.direction === 'INBOUND'
    this.workload = t.workload
    this.metrics = t.metrics
    const d = cfg.tcp_reporting_duration === undefined ? null : parseDurationMs(cfg.tcp_reporting_duration)
    this.reportingMs = d !== null && d !== undefined && d > 0 ? d : DEFAULT_REPORTING_MS
  }

  #row(principal: string, cluster: UpstreamCluster | undefined): LabelRow {
    let byCluster = this.#rows.get(principal)
    if (byCluster === undefined) this.#rows.set(principal, (byCluster = new Map()))
    const key = cluster?.name ?? ''
    let row = byCluster.get(key)
    if (row === undefined) {
      const service = (cluster === undefined ? null : serviceOfCluster(cluster)) ?? UNKNOWN_SERVICE
      row = this.metrics.peerRow(this.workload, this.inbound, UNKNOWN_WORKLOAD, principal, service)
      byCluster.set(key, row)
    }
    return row
  }

  /** A connection the TCP proxy takes on (to `cluster`); returns what to call when it is over. */
  opened(downstream: net.Socket, cluster: UpstreamCluster | undefined): OpenConnection {
    const principal = this.inbound ? (connectionPeer(downstream)?.uris[0] ?? UNKNOWN) : UNKNOWN
    const series = this.#row(principal, cluster).tcp()
    series.opened++
    const c = new OpenConnection(downstream, series)
    this.#open.add(c)
    if (this.#timer === null) {
      this.#timer = setInterval(() => this.#report(), this.reportingMs)
      this.#timer.unref()
    }
    return c
  }

  closed(c: OpenConnection): void {
    if (!this.#open.delete(c)) return
    c.report()
    c.series.closed++
    if (this.#open.size === 0 && this.#timer !== null) {
      clearInterval(this.#timer)
      this.#timer = null
    }
  }

  #report(): void {
    for (const c of this.#open) c.report()
  }
}
