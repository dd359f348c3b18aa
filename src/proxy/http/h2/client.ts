/**
 * The upstream HTTP/2 codec: one multiplexed session per host (re-opened when it closes), one node:http2 stream per
 * request. Used when the cluster sets `http2_protocol_options` (or the equivalent typed extension options).
 */
import type * as H2T from 'node:http2'
import { H2, http2, tls } from '../../../core/lazy.js'
import { connectFailureDetail } from '../../cluster/tls.js'
import * as net from 'node:net'
import type { Host, HostPool, UpstreamCluster } from '../../cluster/index.js'
import type { ClusterStats } from '../../stats/stats.js'
import type { Headers } from '../headers.js'
import type { RequestHead, UpstreamCallbacks, UpstreamRequest } from '../types.js'
import { fromH2, toH2 } from './convert.js'
import { keepalive, keepaliveOptions } from './keepalive.js'
import { OverflowRequest } from '../overflow.js'

const EMPTY = Buffer.alloc(0)

export class H2UpstreamRequest implements UpstreamRequest {
  readonly hostKey: string
  private readonly cb: UpstreamCallbacks
  readonly stream: H2T.ClientHttp2Stream
  private done = false
  private gotHeaders = false
  private ended = false
  /**
   * DATA that node:http2 delivered before the response head: it emits 'response' on the next tick but 'data' at
   * once, so when HEADERS and DATA come in one read (usual over TLS) the body would overtake the head. Held here
   * until the head has been passed on.
   */
  private early: Buffer[] | null = null

  socket(): net.Socket | null {
    return (this.stream.session?.socket as net.Socket | undefined) ?? null
  }

  constructor(
    pool: H2Pool,
    session: H2T.ClientHttp2Session,
    cb: UpstreamCallbacks,
    head: RequestHead,
    endStream: boolean,
  ) {
    this.hostKey = pool.host.key
    this.cb = cb
    this.ended = endStream
    const obj = toH2(head.headers, {
      ':method': head.method,
      ':path': head.path,
      ':scheme': head.scheme,
      ':authority': head.authority,
    })
    const stream = session.request(obj, { endStream })
    this.stream = stream
    stream.on('response', (h, flags) => this.onResponse(h, flags))
    stream.on('data', (c: Buffer) => {
      pool.stats.upstream_cx_rx_bytes_total += c.length
      if (this.done) return
      if (this.gotHeaders) this.cb.onUpstreamData(c, false)
      else (this.early ??= []).push(c)
    })
    stream.on('trailers', (h) => {
      if (this.done) return
      this.done = true
      this.cb.onUpstreamTrailers(fromH2(h))
      if (!this.ended) this.responseFirst()
    })
    stream.on('end', () => {
      if (this.done || !this.gotHeaders) return
      this.done = true
      this.cb.onUpstreamData(EMPTY, true)
      if (!this.ended) this.responseFirst()
    })
    stream.on('drain', () => this.cb.onUpstreamDrain())
    let error: NodeJS.ErrnoException | null = null
    stream.on('error', (err: NodeJS.ErrnoException) => {
      error = err
    })
    stream.on('close', () => {
      if (this.done) return
      this.done = true
      const code = stream.rstCode
      // the TLS handshake refused the server (or a secret is missing): a connect failure naming why
      if (error !== null) {
        const detail = connectFailureDetail(error)
        if (detail.startsWith('tls_')) return this.cb.onUpstreamReset('connect_failure', detail)
      }
      const detail = code === undefined || code === 0 ? '' : `HTTP/2 stream reset, code ${code}`
      const reason =
        code === H2.REFUSED_STREAM
          ? 'refused_stream'
          : session.destroyed && !this.gotHeaders
            ? 'connection_termination'
            : 'remote_reset'
      this.cb.onUpstreamReset(reason, detail)
    })
  }

  private onResponse(h: H2T.IncomingHttpHeaders & H2T.IncomingHttpStatusHeader, flags: number): void {
    if (this.done) return
    const status = Number(h[':status'])
    if (status < 200) return
    this.gotHeaders = true
    const end = (flags & H2.FLAG_END_STREAM) !== 0
    if (end) this.done = true
    this.cb.onUpstreamHeaders(status, fromH2(h), end)
    if (end && !this.ended) this.responseFirst()
    const early = this.early
    if (early === null) return
    this.early = null
    for (const c of early) if (!this.done) this.cb.onUpstreamData(c, false)
  }

  /**
   * The response is complete and the request is not (the upstream answered early): the rest of the request is not
   * wanted and the stream is closed with RST_STREAM NO_ERROR, dropping what it still had queued, as RFC 9113 §8.1
   * has the server ask. Left open, its write side would never end (the stream above stops forwarding the body once
   * the response is over) and the stream would stay in the session for good, on both proxies. A client paused
   * because this stream's window was full is let go on: the rest of its body is read and dropped.
   */
  private responseFirst(): void {
    this.ended = true
    const s = this.stream
    const blocked = s.writableNeedDrain
    s.close(H2.NO_ERROR)
    if (blocked) this.cb.onUpstreamDrain()
  }

  sendData(chunk: Buffer, endStream: boolean): boolean {
    if (this.ended) return true
    if (endStream) {
      this.ended = true
      this.stream.end(chunk)
      return true
    }
    return this.stream.write(chunk)
  }

  sendTrailers(_trailers: Headers): void {
    // request trailers are not forwarded upstream over HTTP/2 (gRPC clients send none); the stream just ends
    if (!this.ended) {
      this.ended = true
      this.stream.end()
    }
  }

  reset(): void {
    if (this.done) return
    this.done = true
    this.stream.close(H2.CANCEL)
  }

  pauseResponse(): void {
    this.stream.pause()
  }

  resumeResponse(): void {
    this.stream.resume()
  }
}

export class H2Pool implements HostPool {
  readonly host: Host
  readonly cluster: UpstreamCluster
  readonly stats: ClusterStats
  private session: H2T.ClientHttp2Session | null = null
  /** streams opened on `session` (for max_requests_per_connection) */
  private streams = 0

  constructor(host: Host, cluster: UpstreamCluster, stats: ClusterStats) {
    this.host = host
    this.cluster = cluster
    this.stats = stats
  }

  private connect(): H2T.ClientHttp2Session {
    const { host, cluster, stats } = this
    // the host's transport socket (the cluster's, or the transport_socket_matches entry its metadata matches)
    const tlsOptions = host.transport.tls
    const secure = tlsOptions !== null
    const authority = `${secure ? 'https' : 'http'}://${host.address.includes(':') ? `[${host.address}]` : host.address}:${host.port}`
    const o = cluster.http2Options
    const settings: H2T.Settings = { enablePush: false }
    if (o.maxConcurrentStreams !== undefined) settings.maxConcurrentStreams = o.maxConcurrentStreams
    if (o.initialStreamWindowSize !== undefined) settings.initialWindowSize = o.initialStreamWindowSize
    const session = http2().connect(authority, {
      settings,
      createConnection: () => {
        const opts = { host: host.address, port: host.port }
        const pending = tlsOptions?.pending
        if (pending !== undefined) {
          // a secret the TLS context needs has not arrived: a connect failure naming it, without connecting
          const s = new net.Socket()
          process.nextTick(() => s.destroy(pending))
          return s
        }
        // the cluster's TLS options offer h2 (with Istio's istio-peer-exchange / istio before it, when configured)
        const s = secure ? tls().connect({ ...tlsOptions, ...opts }) : net.connect(opts)
        s.setNoDelay(true)
        const t = setTimeout(() => {
          stats.upstream_cx_connect_timeout++
          s.destroy(new Error('connect timeout'))
        }, cluster.connectTimeoutMs)
        s.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(t))
        s.once('close', () => clearTimeout(t))
        return s
      },
    })
    stats.upstream_cx_total++
    stats.upstream_cx_active++
    host.activeConnections++
    const breakers = cluster.circuitBreakers
    if (breakers !== null) breakers.connections++
    let connected = false
    session.once('connect', () => {
      connected = true
      // initial_connection_window_size (Envoy's default 256 MiB): nghttp2 starts the connection at 65,535 bytes,
      // which a few concurrent response bodies fill
      if (!session.destroyed)
        session.setLocalWindowSize(Math.min(o.initialConnectionWindowSize ?? 268435456, 2 ** 31 - 1))
    })
    session.on('error', () => {
      if (!connected) stats.upstream_cx_connect_fail++
    })
    session.once('close', () => {
      stats.upstream_cx_active--
      host.activeConnections--
      if (breakers !== null) breakers.connections--
      if (this.session === session) this.session = null
    })
    session.on('goaway', () => {
      if (this.session === session) this.session = null
    })
    keepalive(session, keepaliveOptions(o.connectionKeepalive))
    if (this.cluster.idleTimeoutMs > 0) session.setTimeout(this.cluster.idleTimeoutMs, () => session.close())
    return session
  }

  newStream(cb: UpstreamCallbacks, head: RequestHead, endStream: boolean): UpstreamRequest {
    let s = this.session
    if (s === null || s.destroyed || s.closed) {
      const breakers = this.cluster.circuitBreakers
      if (breakers !== null && !breakers.canConnect()) {
        this.stats.upstream_cx_overflow++
        this.stats.upstream_rq_pending_overflow++
        return new OverflowRequest(this.host.key, cb, 'too many upstream connections (max_connections)')
      }
      s = this.session = this.connect()
      this.streams = 0
    }
    const req = new H2UpstreamRequest(this, s, cb, head, endStream)
    const max = this.cluster.maxRequestsPerConnection
    if (max > 0 && ++this.streams >= max) {
      // the session takes no more streams; it closes (GOAWAY) once this last one is over, the others finishing first
      this.session = null
      req.stream.once('close', () => s.close())
    }
    return req
  }

  drain(): void {
    this.session?.close()
    this.session = null
  }

  close(): void {
    this.session?.destroy()
    this.session = null
  }
}
