/**
 * Istio's stats filter (`istio.stats`, `type.googleapis.com/stats.PluginConfig`) on an HTTP connection manager:
 * Istio's standard request metrics (telemetry/metrics.ts) and, in the same filter, Istio's HTTP metadata exchange
 * (telemetry/exchange.ts), which tells each side which workload the other is.
 *
 * The listener's `traffic_direction` decides the role, as in Istio:
 *
 * - OUTBOUND (a sidecar's outbound, a gateway), reporter `source`: the request leaves with this proxy's
 *   `x-envoy-peer-metadata` / `-id` (whatever the client sent under those names is replaced, so a gateway passes
 *   nothing from outside on); the response's are read (the destination's workload) and removed before the client
 *   sees them. The destination service comes from the cluster (its `istio` metadata or its Istio name), else the
 *   authority (unless `disable_host_header_fallback`). `connection_security_policy` is `unknown`, as Istio's.
 * - INBOUND (a sidecar's inbound), reporter `destination`: the request's headers are read (the source's workload)
 *   and removed before the application sees them; the response leaves with this proxy's. The source principal is
 *   the URI SAN of the connection's verified client certificate, never a header; `connection_security_policy` is
 *   `mutual_tls` when there is one, else `none`.
 * - UNSPECIFIED: as OUTBOUND.
 *
 * Per stream: one small object, one scan of the header list each way (the exchange's names found by length first;
 * this proxy's own pair appended in one push, and written into HTTP/1 heads as bytes encoded once per config), and at
 * the end a row lookup (cached by the peer's decoded metadata object, the principal and the service; the last row
 * and the last response code's series are kept, so a run of alike streams compares and looks nothing up) and three
 * histogram counts with the stream's own duration (no clock read of its own); no label string is built unless the
 * combination is new. gRPC streams (`content-type: application/grpc*`) get a subclass that also counts messages each
 * way (the 5-byte length prefixes) and reads `grpc-status`.
 *
 * Config: `disable_host_header_fallback` (default false). Other PluginConfig fields are not accepted.
 */
import type { Buffer } from 'node:buffer'
import type { IstioStats } from '../../../../config/envoy.js'
import type { UpstreamCluster } from '../../../cluster/index.js'
import { connectionPeer } from '../../../identity/connection-peer.js'
import { preencodeField } from '../../h1/wire.js'
import {
  encodeOwnMetadata,
  type OwnPeerHeaders,
  PEER_METADATA_HEADER,
  PEER_METADATA_ID_HEADER,
  peerFromHeader,
} from '../../../telemetry/exchange.js'
import {
  type HttpSeries,
  type IstioMetrics,
  type LabelRow,
  type Reporter,
  type ServiceLabels,
  serviceOfHost,
  UNKNOWN_SERVICE,
  UNKNOWN_WORKLOAD,
} from '../../../telemetry/metrics.js'
import {
  hostOfClusterName,
  principalOfCluster,
  serviceOfAuthority,
  serviceOfCluster,
} from '../../../telemetry/service.js'
import { UNKNOWN, type LocalWorkload, type WorkloadMetadata } from '../../../telemetry/workload.js'
import type { Headers } from '../../headers.js'
import type { RequestHead } from '../../types.js'
import {
  CONTINUE,
  type FilterCallbacks,
  type FilterStatus,
  type HttpFilterFactory,
  type StreamFilter,
  type StreamInfo,
} from '../filter.js'

/** The stream as this filter reads it: the connection manager's stream is both. */
type Stream = FilterCallbacks & StreamInfo

/** Envoy's listener traffic_direction. */
export type TrafficDirection = 'INBOUND' | 'OUTBOUND' | 'UNSPECIFIED'

/** What the stats filters of a connection manager need from the proxy. */
export interface TelemetryContext {
  readonly workload: LocalWorkload
  readonly direction: TrafficDirection
  readonly metrics: IstioMetrics
}

type RowCache = Map<WorkloadMetadata, Map<string, Map<string, LabelRow>>>

export class IstioStatsFilterFactory implements HttpFilterFactory {
  readonly name: string
  readonly inbound: boolean
  readonly reporter: Reporter
  readonly workload: LocalWorkload
  readonly own: OwnPeerHeaders
  readonly hostFallback: boolean
  readonly metrics: IstioMetrics
  /** peer → principal → service host → row */
  readonly #rows: RowCache = new Map()
  /** the last row found and what it was found by: consecutive streams of one peer and service skip the maps */
  #lastPeer: WorkloadMetadata | null = null
  #lastPrincipal = ''
  #lastService: ServiceLabels | null = null
  #lastRow: LabelRow | null = null
  /** the last cluster asked about and its service (serviceOfCluster): consecutive streams skip its WeakMap */
  #lastCluster: UpstreamCluster | null = null
  #lastClusterService: ServiceLabels | null = null

  constructor(name: string, cfg: IstioStats, t: TelemetryContext) {
    this.name = name
    this.inbound = t.direction === 'INBOUND'
    this.reporter = this.inbound ? 'destination' : 'source'
    this.workload = t.workload
    this.own = encodeOwnMetadata(t.workload)
    // every request (outbound) or response (inbound) carries them: HTTP/1 heads copy them in as bytes
    preencodeField(PEER_METADATA_HEADER, this.own.metadata)
    preencodeField(PEER_METADATA_ID_HEADER, this.own.id)
    this.hostFallback = cfg.disable_host_header_fallback !== true
    this.metrics = t.metrics
  }

  create(cb: Stream): StreamFilter | null {
    const ct = cb.head?.headers.get('content-type')
    if (ct?.startsWith('application/grpc')) return new GrpcStatsStream(this, cb)
    return new HttpStatsStream(this, cb)
  }

  /** The destination service of a stream: its cluster's, else (fallback allowed) its authority's. */
  service(cb: Stream): ServiceLabels {
    const c: UpstreamCluster | null = cb.cluster
    let s: ServiceLabels | null = null
    if (c !== null) {
      if (c !== this.#lastCluster) {
        this.#lastCluster = c
        this.#lastClusterService = serviceOfCluster(c)
      }
      s = this.#lastClusterService
    }
    if (s !== null) return s
    if (c === null) {
      // answered before a cluster was picked (a fault's abort, a filter's refusal): the route's cluster names the
      // service, as Istio's report does (rare path: the name is parsed here)
      const route = cb.route
      const name = route !== null && route.kind === 'cluster' ? route.clusterNames()[0] : undefined
      const host = name === undefined ? null : hostOfClusterName(name)
      if (host !== null) return serviceOfHost(host)
    }
    const authority = cb.head?.authority
    if (!this.hostFallback || authority === undefined) return UNKNOWN_SERVICE
    return serviceOfAuthority(authority, this.inbound ? this.workload.meta.namespace : UNKNOWN)
  }

  /**
   * The row for a stream: `peer` is the other side's workload, `principal` the other side's verified identity (the
   * client certificate's inbound; outbound, what the cluster's TLS settings prove of a TLS upstream).
   */
  row(peer: WorkloadMetadata, principal: string, service: ServiceLabels): LabelRow {
    if (peer === this.#lastPeer && principal === this.#lastPrincipal && service === this.#lastService)
      return this.#lastRow!
    const row = this.#findRow(peer, principal, service)
    this.#lastPeer = peer
    this.#lastPrincipal = principal
    this.#lastService = service
    this.#lastRow = row
    return row
  }

  #findRow(peer: WorkloadMetadata, principal: string, service: ServiceLabels): LabelRow {
    let byPrincipal = this.#rows.get(peer)
    if (byPrincipal === undefined) this.#rows.set(peer, (byPrincipal = new Map()))
    let byService = byPrincipal.get(principal)
    if (byService === undefined) byPrincipal.set(principal, (byService = new Map()))
    let row = byService.get(service.host)
    if (row === undefined) {
      row = this.metrics.peerRow(this.workload, this.inbound, peer, principal, service)
      byService.set(service.host, row)
    }
    return row
  }
}

const META_LENGTH = PEER_METADATA_HEADER.length
const ID_LENGTH = PEER_METADATA_ID_HEADER.length

/** Whether a (lower-case) header name is one of the exchange's: the length first, which rules out nearly all. */
function exchangeName(name: string): boolean {
  const n = name.length
  return (n === META_LENGTH && name === PEER_METADATA_HEADER) || (n === ID_LENGTH && name === PEER_METADATA_ID_HEADER)
}

/**
 * Sets this proxy's exchange headers, as `headers.set` of each would: when the list has neither (a sidecar's
 * requests, an application's responses), both are appended at once.
 */
function setOwn(headers: Headers, own: OwnPeerHeaders): void {
  const l = headers.list
  for (let i = 0; i < l.length; i += 2)
    if (exchangeName(l[i]!)) {
      headers.set(PEER_METADATA_HEADER, own.metadata)
      headers.set(PEER_METADATA_ID_HEADER, own.id)
      return
    }
  l.push(PEER_METADATA_HEADER, own.metadata, PEER_METADATA_ID_HEADER, own.id)
}

class HttpStatsStream implements StreamFilter {
  readonly f: IstioStatsFilterFactory
  readonly cb: Stream
  /** the peer's exchange headers, once read */
  peerValue: string | undefined = undefined
  peerId: string | undefined = undefined
  /** whether decodeHeaders ran (an earlier filter's local reply skips it) */
  decoded = false

  constructor(f: IstioStatsFilterFactory, cb: Stream) {
    this.f = f
    this.cb = cb
  }

  decodeHeaders(head: RequestHead): FilterStatus {
    const h = head.headers
    this.decoded = true
    if (this.f.inbound) this.takePeer(h)
    else setOwn(h, this.f.own)
    return CONTINUE
  }

  encodeHeaders(_status: number, headers: Headers, _endStream: boolean): void {
    if (this.f.inbound) setOwn(headers, this.f.own)
    else this.takePeer(headers)
  }

  /** Reads the peer's exchange headers and removes them, in one pass over the list. */
  private takePeer(headers: Headers): void {
    const l = headers.list
    let w = 0
    for (let i = 0; i < l.length; i += 2) {
      const name = l[i]!
      if (exchangeName(name)) {
        if (name === PEER_METADATA_HEADER) this.peerValue ??= l[i + 1]
        else this.peerId ??= l[i + 1]
        continue
      }
      if (w !== i) {
        l[w] = name
        l[w + 1] = l[i + 1]!
      }
      w += 2
    }
    if (w !== l.length) l.length = w
  }

  /** The row of this stream's labels. */
  protected labelRow(): LabelRow {
    const f = this.f
    const cb = this.cb
    let v = this.peerValue
    // inbound, refused before this filter's turn: the request still says who sent it
    if (v === undefined && f.inbound && !this.decoded) {
      const h = cb.head?.headers
      v = h?.get(PEER_METADATA_HEADER)
      if (v !== undefined) this.peerId = h!.get(PEER_METADATA_ID_HEADER)
    }
    const peer = v === undefined ? UNKNOWN_WORKLOAD : (peerFromHeader(v, this.peerId) ?? UNKNOWN_WORKLOAD)
    let principal = UNKNOWN
    if (f.inbound) principal = connectionPeer(cb.downstreamSocket)?.uris[0] ?? UNKNOWN
    else if (cb.host !== null && cb.host.transport.tls !== null) principal = principalOfCluster(cb.cluster!) ?? UNKNOWN
    return f.row(peer, principal, f.service(cb))
  }

  protected count(s: HttpSeries): void {
    const cb = this.cb
    s.requests++
    s.duration.record(cb.durationMs)
    s.requestBytes.record(cb.bytesReceived)
    s.responseBytes.record(cb.bytesSent)
  }

  onDestroy(): void {
    this.count(this.labelRow().http(this.cb.status, this.cb.flag))
  }
}

/** Counts the messages of a gRPC stream's body (5-byte prefix: flag, 32-bit length) across chunks. */
export class GrpcFrameCounter {
  messages = 0
  /** bytes of the current message still to skip */
  #skip = 0
  /** bytes of the next prefix seen so far (0..4), and its length bytes */
  #prefix = 0
  #len = 0

  push(chunk: Buffer): void {
    let i = 0
    const n = chunk.length
    while (i < n) {
      if (this.#skip > 0) {
        const take = Math.min(this.#skip, n - i)
        this.#skip -= take
        i += take
        continue
      }
      // a prefix byte: the flag (0), then four length bytes, big-endian
      if (this.#prefix > 0) this.#len = this.#len * 256 + chunk[i]!
      i++
      if (++this.#prefix === 5) {
        this.messages++
        this.#skip = this.#len
        this.#prefix = 0
        this.#len = 0
      }
    }
  }
}

/** Envoy's gRPC status for an HTTP status, when a gRPC response carries none (grpc/doc/http-grpc-status-mapping). */
function grpcStatusOfHttp(status: number): string {
  switch (status) {
    case 400:
      return '13'
    case 401:
      return '16'
    case 403:
      return '7'
    case 404:
      return '12'
    case 429:
    case 502:
    case 503:
    case 504:
      return '14'
    default:
      return '2'
  }
}

class GrpcStatsStream extends HttpStatsStream {
  readonly requests = new GrpcFrameCounter()
  readonly responses = new GrpcFrameCounter()
  grpcStatus = ''

  decodeData(chunk: Buffer): void {
    this.requests.push(chunk)
  }

  override encodeHeaders(status: number, headers: Headers, endStream: boolean): void {
    super.encodeHeaders(status, headers, endStream)
    if (endStream) this.grpcStatus = headers.get('grpc-status') ?? ''
  }

  encodeData(chunk: Buffer): void {
    this.responses.push(chunk)
  }

  encodeTrailers(trailers: Headers): void {
    this.grpcStatus = trailers.get('grpc-status') ?? ''
  }

  override onDestroy(): void {
    const cb = this.cb
    const code = cb.status
    const grpc = this.grpcStatus !== '' ? this.grpcStatus : code === 0 ? '' : grpcStatusOfHttp(code)
    const s = this.labelRow().grpc(code, grpc, cb.flag)
    this.count(s)
    s.requestMessages += this.requests.messages
    s.responseMessages += this.responses.messages
  }
}
