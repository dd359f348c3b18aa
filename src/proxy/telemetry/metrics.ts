/**
 * Istio's standard metrics (https://istio.io/latest/docs/reference/config/metrics/): the series a proxy's
 * `istio.stats` filters record, kept for the life of the process (across config versions, like Envoy's stats) and
 * rendered by the admin endpoint in Prometheus text (`/stats/prometheus`) and as `name{labels}: value` lines
 * (`/stats`).
 *
 * Labels are Istio's, always all present, in Istio's order (LABEL_NAMES). A series' label string is built once,
 * when the series is first seen: requests with the same labels bump fields of the same object. The fixed part of
 * the labels (reporter, both workloads, the service: everything before `request_protocol`) is a `LabelRow`; a row
 * keeps its series by response code (and gRPC status, flags) in small maps. The `istio.stats` filter caches rows
 * by the peer's metadata object and the destination service, so a request looks up a row and a series and builds
 * no string.
 *
 * Histograms are the proxy's own (stats.ts: Envoy's default buckets, milliseconds for durations, bytes for sizes;
 * what Istio's `istio_request_duration_milliseconds`,
 * `istio_request_bytes` and `istio_response_bytes` have unless configured otherwise).
 */
import { BUCKETS_MS, Histogram } from '../stats/stats.js'
import { type LocalWorkload, UNKNOWN, type WorkloadMetadata } from './workload.js'

export const LABEL_NAMES = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_cluster',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
] as const

export type Reporter = 'source' | 'destination'
export type SecurityPolicy = 'mutual_tls' | 'none' | 'unknown'

/** A workload nobody has told us about: every label `unknown`. */
export const UNKNOWN_WORKLOAD: WorkloadMetadata = Object.freeze({
  workload: UNKNOWN,
  namespace: UNKNOWN,
  app: UNKNOWN,
  version: UNKNOWN,
  canonicalService: UNKNOWN,
  canonicalRevision: UNKNOWN,
  cluster: UNKNOWN,
  pod: UNKNOWN,
  labels: Object.freeze({}),
})

/** The destination service's labels: its FQDN, short name and namespace. */
export interface ServiceLabels {
  readonly host: string
  readonly name: string
  readonly namespace: string
}

export const UNKNOWN_SERVICE: ServiceLabels = Object.freeze({ host: UNKNOWN, name: UNKNOWN, namespace: UNKNOWN })

/** A service from its hostname: `<name>.<namespace>.svc.<domain>` gives both, any other host is its own name. */
export function serviceOfHost(host: string): ServiceLabels {
  if (host === '' || host === UNKNOWN) return UNKNOWN_SERVICE
  const parts = host.split('.')
  if (parts.length >= 3 && parts[2] === 'svc') return { host, name: parts[0]!, namespace: parts[1]! }
  return { host, name: host, namespace: UNKNOWN }
}

/** One label set of the HTTP metrics. */
export class HttpSeries {
  /** every label, rendered: `reporter="source",...` */
  readonly labels: string
  requests = 0
  readonly duration = new Histogram()
  readonly requestBytes = new Histogram()
  readonly responseBytes = new Histogram()
  /** gRPC messages (streams with request_protocol grpc only) */
  readonly grpc: boolean
  requestMessages = 0
  responseMessages = 0
  constructor(labels: string, grpc: boolean) {
    this.labels = labels
    this.grpc = grpc
  }
}

/** One label set of the TCP metrics. */
export class TcpSeries {
  readonly labels: string
  sentBytes = 0
  receivedBytes = 0
  opened = 0
  closed = 0
  constructor(labels: string) {
    this.labels = labels
  }
}

function esc(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

function label(name: string, value: string): string {
  return `${name}="${esc(value)}"`
}

/**
 * The labels of one (reporter, source, destination, service) combination, up to `destination_cluster`, with its
 * series by protocol, response code, gRPC status and flags.
 */
export class LabelRow {
  readonly prefix: string
  readonly security: string
  readonly #metrics: IstioMetrics
  /** plain HTTP series without response flags, by status code */
  readonly #http = new Map<number, HttpSeries>()
  /** the last of them asked for: a run of streams with one status skips the map */
  #lastCode = -1
  #lastSeries: HttpSeries | null = null
  /** the last gRPC series and what it was found by: a run of alike gRPC streams builds no key */
  #lastGrpc: HttpSeries | null = null
  #lastGrpcCode = -1
  #lastGrpcStatus = ''
  #lastGrpcFlags = ''
  /** everything else, by `protocol|code|grpc|flags` */
  readonly #other = new Map<string, HttpSeries>()
  #tcp: TcpSeries | null = null

  constructor(metrics: IstioMetrics, prefix: string, security: SecurityPolicy) {
    this.#metrics = metrics
    this.prefix = prefix
    this.security = label('connection_security_policy', security)
  }

  /** A plain HTTP stream's series: its response code (0: none) and flags ('' for none). */
  http(code: number, flags: string): HttpSeries {
    if (flags === '') {
      if (code === this.#lastCode) return this.#lastSeries!
      let s = this.#http.get(code)
      if (s === undefined) {
        s = this.#make(false, code, '', '')
        this.#http.set(code, s)
      }
      this.#lastCode = code
      this.#lastSeries = s
      return s
    }
    const key = `http|${code}||${flags}`
    let s = this.#other.get(key)
    if (s === undefined) {
      s = this.#make(false, code, '', flags)
      this.#other.set(key, s)
    }
    return s
  }

  /** A gRPC stream's series: `grpcStatus` may be '' when the stream ended without one. */
  grpc(code: number, grpcStatus: string, flags: string): HttpSeries {
    if (code === this.#lastGrpcCode && grpcStatus === this.#lastGrpcStatus && flags === this.#lastGrpcFlags)
      return this.#lastGrpc!
    const key = `grpc|${code}|${grpcStatus}|${flags}`
    let s = this.#other.get(key)
    if (s === undefined) {
      s = this.#make(true, code, grpcStatus, flags)
      this.#other.set(key, s)
    }
    this.#lastGrpc = s
    this.#lastGrpcCode = code
    this.#lastGrpcStatus = grpcStatus
    this.#lastGrpcFlags = flags
    return s
  }

  #make(grpc: boolean, code: number, grpcStatus: string, flags: string): HttpSeries {
    const labels = `${this.prefix},${label('request_protocol', grpc ? 'grpc' : 'http')},${label('response_code', String(code))},${label('grpc_response_status', grpcStatus)},${label('response_flags', flags === '' ? '-' : flags)},${this.security}`
    const s = new HttpSeries(labels, grpc)
    this.#metrics.http.push(s)
    return s
  }

  /** The TCP series (one per row: TCP has no response code). */
  tcp(): TcpSeries {
    if (this.#tcp === null) {
      const labels = `${this.prefix},${label('request_protocol', 'tcp')},${label('response_code', '0')},${label('grpc_response_status', '')},${label('response_flags', '-')},${this.security}`
      this.#tcp = new TcpSeries(labels)
      this.#metrics.tcp.push(this.#tcp)
    }
    return this.#tcp
  }
}

/** What a row is made of. */
export interface RowSpec {
  reporter: Reporter
  source: WorkloadMetadata
  sourcePrincipal: string
  destination: WorkloadMetadata
  destinationPrincipal: string
  service: ServiceLabels
  security: SecurityPolicy
}

/** Every Istio series of the process. */
export class IstioMetrics {
  readonly http: HttpSeries[] = []
  readonly tcp: TcpSeries[] = []
  readonly #rows = new Map<string, LabelRow>()

  /**
   * The row of a peer as one side of `own` sees it: inbound, the peer is the source (`mutual_tls` when it showed a
   * certificate); outbound, the destination (whose security policy is the server's to report).
   */
  peerRow(
    own: LocalWorkload,
    inbound: boolean,
    peer: WorkloadMetadata,
    principal: string,
    service: ServiceLabels,
  ): LabelRow {
    return inbound
      ? this.row({
          reporter: 'destination',
          source: peer,
          sourcePrincipal: principal,
          destination: own.meta,
          destinationPrincipal: own.principal,
          service,
          security: principal === UNKNOWN ? 'none' : 'mutual_tls',
        })
      : this.row({
          reporter: 'source',
          source: own.meta,
          sourcePrincipal: own.principal,
          destination: peer,
          destinationPrincipal: principal,
          service,
          security: 'unknown',
        })
  }

  /** The row of these labels (the same object for the same labels, whichever filter asks). */
  row(r: RowSpec): LabelRow {
    const s = r.source
    const d = r.destination
    const prefix = [
      label('reporter', r.reporter),
      label('source_workload', s.workload),
      label('source_canonical_service', s.canonicalService),
      label('source_canonical_revision', s.canonicalRevision),
      label('source_workload_namespace', s.namespace),
      label('source_principal', r.sourcePrincipal),
      label('source_app', s.app),
      label('source_version', s.version),
      label('source_cluster', s.cluster),
      label('destination_workload', d.workload),
      label('destination_workload_namespace', d.namespace),
      label('destination_principal', r.destinationPrincipal),
      label('destination_app', d.app),
      label('destination_version', d.version),
      label('destination_service', r.service.host),
      label('destination_service_name', r.service.name),
      label('destination_service_namespace', r.service.namespace),
      label('destination_canonical_service', d.canonicalService),
      label('destination_canonical_revision', d.canonicalRevision),
      label('destination_cluster', d.cluster),
    ].join(',')
    const key = `${prefix}|${r.security}`
    let row = this.#rows.get(key)
    if (row === undefined) this.#rows.set(key, (row = new LabelRow(this, prefix, r.security)))
    return row
  }

  get empty(): boolean {
    return this.http.length === 0 && this.tcp.length === 0
  }

  /** Prometheus text exposition lines (`# TYPE` once per metric), appended to `out`. */
  renderPrometheus(out: string[]): void {
    const http = this.http
    if (http.length > 0) {
      counter(out, 'istio_requests_total', http, (s) => s.requests)
      histogram(out, 'istio_request_duration_milliseconds', http, (s) => s.duration)
      histogram(out, 'istio_request_bytes', http, (s) => s.requestBytes)
      histogram(out, 'istio_response_bytes', http, (s) => s.responseBytes)
      const grpc = http.filter((s) => s.grpc)
      if (grpc.length > 0) {
        counter(out, 'istio_request_messages_total', grpc, (s) => s.requestMessages)
        counter(out, 'istio_response_messages_total', grpc, (s) => s.responseMessages)
      }
    }
    const tcp = this.tcp
    if (tcp.length > 0) {
      counter(out, 'istio_tcp_sent_bytes_total', tcp, (s) => s.sentBytes)
      counter(out, 'istio_tcp_received_bytes_total', tcp, (s) => s.receivedBytes)
      counter(out, 'istio_tcp_connections_opened_total', tcp, (s) => s.opened)
      counter(out, 'istio_tcp_connections_closed_total', tcp, (s) => s.closed)
    }
  }

  /** `/stats` lines: `istio_requests_total{labels}: 3`, histograms as their count and sum. */
  *entries(): Generator<[string, number]> {
    for (const s of this.http) {
      const l = `{${s.labels}}`
      yield [`istio_requests_total${l}`, s.requests]
      yield [`istio_request_duration_milliseconds_count${l}`, s.duration.count]
      yield [`istio_request_duration_milliseconds_sum${l}`, s.duration.sum]
      yield [`istio_request_bytes_sum${l}`, s.requestBytes.sum]
      yield [`istio_response_bytes_sum${l}`, s.responseBytes.sum]
      if (s.grpc) {
        yield [`istio_request_messages_total${l}`, s.requestMessages]
        yield [`istio_response_messages_total${l}`, s.responseMessages]
      }
    }
    for (const s of this.tcp) {
      const l = `{${s.labels}}`
      yield [`istio_tcp_sent_bytes_total${l}`, s.sentBytes]
      yield [`istio_tcp_received_bytes_total${l}`, s.receivedBytes]
      yield [`istio_tcp_connections_opened_total${l}`, s.opened]
      yield [`istio_tcp_connections_closed_total${l}`, s.closed]
    }
  }
}

function counter<T extends { labels: string }>(out: string[], name: string, list: T[], v: (s: T) => number): void {
  out.push(`# TYPE ${name} counter`)
  for (const s of list) out.push(`${name}{${s.labels}} ${v(s)}`)
}

function histogram<T extends { labels: string }>(out: string[], name: string, list: T[], h: (s: T) => Histogram): void {
  out.push(`# TYPE ${name} histogram`)
  for (const s of list) {
    const x = h(s)
    let acc = 0
    for (let i = 0; i < BUCKETS_MS.length; i++) {
      acc += x.counts[i]!
      out.push(`${name}_bucket{${s.labels},le="${BUCKETS_MS[i]}"} ${acc}`)
    }
    out.push(`${name}_bucket{${s.labels},le="+Inf"} ${x.count}`)
    out.push(`${name}_sum{${s.labels}} ${x.sum}`)
    out.push(`${name}_count{${s.labels}} ${x.count}`)
  }
}
