/**
 * The upstream HTTP/1.1 codec and its per-host connection pool.
 *
 * A pool keeps idle keep-alive connections (last in, first out, so a few stay warm) and opens a new one when none
 * is idle. A connection is reused only when its last exchange ended cleanly: the request fully sent, the response
 * fully read, no stray bytes after it, and neither side asked to close. Anything else destroys it. A request sent on
 * a reused connection that the upstream had already closed is retried once on a fresh connection, if it had no body.
 */
import { Buffer } from 'node:buffer'
import * as net from 'node:net'
import type { ConnectionOptions } from 'node:tls'
import { tls } from '../../../core/lazy.js'
import { connectFailureDetail } from '../../cluster/tls.js'
import type { Host, HostPool, UpstreamCluster } from '../../cluster/index.js'
import type { ClusterStats } from '../../stats/stats.js'
import type { Headers } from '../headers.js'
import type { RequestHead, UpstreamCallbacks, UpstreamRequest, UpstreamResetReason } from '../types.js'
import { ChunkedDecoder, findHeadEnd, HttpParseError, type Limits, parseResponseHead } from './parse.js'
import { headStart, headTake, joinHeadAndBody, put, putCrlf, putField } from './wire.js'
import { READ_BUFFER, takeRead } from './shared-read.js'
import { type DeferredWriter, deferWrite } from './write-batch.js'

const EMPTY = Buffer.alloc(0)
const CRLF = Buffer.from('\r\n')
const LAST_CHUNK = Buffer.from('0\r\n\r\n')
const RESPONSE_LIMITS: Limits = { maxHeadBytes: 96 * 1024, maxHeaders: 200 }
/** Request bytes queued while a connection is being opened, before sendData asks the caller to pause. */
const QUEUE_HIGH_WATER = 64 * 1024

enum C {
  Connecting,
  Idle,
  Head,
  Body,
  Upgraded,
  Closed,
}

/** Bytes a request may hold back for one deferred write; more is written at once. */
const COALESCE_MAX = 32 * 1024

function resetLater(req: H1UpstreamRequest, reason: UpstreamResetReason, detail: string): void {
  req.fail(reason, detail)
}

function onConnectTimeout(conn: H1ClientConnection): void {
  conn.connectTimedOut()
}

/** One request on an HTTP/1.1 upstream connection. */
export class H1UpstreamRequest implements UpstreamRequest, DeferredWriter {
  readonly pool: H1Pool
  readonly cb: UpstreamCallbacks
  readonly hostKey: string
  readonly head: Buffer
  readonly expectBody: boolean
  readonly upgrade: boolean
  conn: H1ClientConnection | null = null
  /** bytes to write once connected */
  queue: Buffer[] | null = null
  queued = 0
  chunkedOut: boolean
  requestComplete: boolean
  responseStarted = false
  retried = false
  done = false
  /** waiting in the pool's pending queue for a connection (circuit_breakers.max_pending_requests) */
  pending = false
  pausedResponse = false
  /** request bytes waiting for the end of the event loop iteration (see write-batch.ts) */
  pendingOut: Buffer | null = null

  constructor(pool: H1Pool, cb: UpstreamCallbacks, head: RequestHead, endStream: boolean) {
    this.pool = pool
    this.cb = cb
    this.hostKey = pool.host.key
    this.expectBody = head.method !== 'HEAD'
    this.upgrade = head.upgrade !== null
    this.requestComplete = endStream
    const { buf, chunked } = encodeRequestHead(head, endStream)
    this.head = buf
    this.chunkedOut = chunked
  }

  socket(): net.Socket | null {
    return this.conn?.socket ?? null
  }

  /** Writes, or queues while the connection opens. */
  private write(b: Buffer): boolean {
    const conn = this.conn
    if (conn !== null && conn.state !== C.Connecting) {
      conn.stats.upstream_cx_tx_bytes_total += b.length
      return conn.socket.write(b)
    }
    ;(this.queue ??= []).push(b)
    this.queued += b.length
    return this.queued < QUEUE_HIGH_WATER
  }

  /** Called by the connection once it is open: flushes the head and anything queued. */
  flush(conn: H1ClientConnection): void {
    const socket = conn.socket
    conn.stats.upstream_cx_tx_bytes_total += this.head.length
    if (this.queue === null) {
      // written at the end of the event loop iteration, with the body if it comes by then (see write-batch.ts)
      this.pendingOut = this.head
      deferWrite(this)
      return
    }
    socket.cork()
    socket.write(this.head)
    for (const b of this.queue) {
      conn.stats.upstream_cx_tx_bytes_total += b.length
      socket.write(b)
    }
    this.queue = null
    this.queued = 0
    socket.uncork()
  }

  /** Writes what flush and sendData held back, if anything. */
  flushDeferred(): void {
    const out = this.pendingOut
    if (out === null) return
    this.pendingOut = null
    const conn = this.conn
    if (conn !== null && !conn.socket.destroyed) conn.socket.write(out)
  }

  sendData(chunk: Buffer, endStream: boolean): boolean {
    if (this.done) return true
    if (endStream) this.requestComplete = true
    const pending = this.pendingOut
    if (pending !== null) {
      if (chunk.length > 0 && pending.length + chunk.length <= COALESCE_MAX && !this.upgrade) {
        this.conn!.stats.upstream_cx_tx_bytes_total += chunk.length
        this.pendingOut = joinHeadAndBody(pending, chunk, this.chunkedOut, endStream && this.chunkedOut)
        return true
      }
      this.flushDeferred()
    }
    let ok = true
    if (this.upgrade && this.conn !== null && this.conn.state === C.Upgraded) {
      if (chunk.length > 0) ok = this.write(chunk)
      if (endStream) this.conn.socket.end()
      return ok
    }
    if (this.chunkedOut) {
      if (chunk.length > 0) {
        this.write(Buffer.from(`${chunk.length.toString(16)}\r\n`, 'latin1'))
        this.write(chunk)
        ok = this.write(CRLF)
      }
      if (endStream) ok = this.write(LAST_CHUNK)
    } else if (chunk.length > 0) {
      ok = this.write(chunk)
    }
    return ok
  }

  sendTrailers(trailers: Headers): void {
    if (this.done) return
    this.flushDeferred()
    this.requestComplete = true
    if (!this.chunkedOut) return
    let s = '0\r\n'
    const l = trailers.list
    for (let i = 0; i < l.length; i += 2) s += `${l[i]}: ${l[i + 1]}\r\n`
    this.write(Buffer.from(`${s}\r\n`, 'latin1'))
  }

  reset(): void {
    if (this.done) return
    this.done = true
    if (this.pending) this.pool.unpend(this)
    const conn = this.conn
    this.conn = null
    if (conn !== null) conn.destroy()
  }

  pauseResponse(): void {
    this.pausedResponse = true
    this.conn?.socket.pause()
  }

  resumeResponse(): void {
    this.pausedResponse = false
    this.conn?.socket.resume()
  }

  fail(reason: UpstreamResetReason, detail: string): void {
    if (this.done) return
    this.done = true
    if (this.pending) this.pool.unpend(this)
    this.conn = null
    this.cb.onUpstreamReset(reason, detail)
  }
}

/** One TCP (or TLS) connection to an upstream host, carrying one request at a time. */
export class H1ClientConnection {
  readonly pool: H1Pool
  readonly socket: net.Socket
  readonly stats: ClusterStats
  state = C.Connecting
  req: H1UpstreamRequest | null = null
  private buf: Buffer | null = null
  private searchFrom = 0
  private bodyRemaining = 0
  private chunked = false
  private closeDelimited = false
  private keepAlive = true
  private decoder: ChunkedDecoder | null = null
  private readonly pieces: Buffer[] = []
  private connectTimer: NodeJS.Timeout | null = null
  requests = 0
  reused = false

  constructor(pool: H1Pool) {
    this.pool = pool
    this.stats = pool.stats
    const host = pool.host
    const cluster = pool.cluster
    const opts = { host: host.address, port: host.port }
    // the host's transport socket (the cluster's, or the transport_socket_matches entry its metadata matches)
    const tlsOptions = host.transport.tls
    // reads (TCP, or the decrypted records of TLS) land in the buffer shared by the HTTP/1 codecs, not in a fresh
    // allocation per read
    const onread = { buffer: READ_BUFFER, callback: (n: number) => this.onRead(n) }
    if (tlsOptions === null) this.socket = net.connect({ ...opts, onread })
    else {
      const pending = tlsOptions.pending
      // tls.connect documents `onread` (used when it makes the TCP socket itself); its type does not list it
      if (pending === undefined) this.socket = tls().connect({ ...tlsOptions, ...opts, onread } as ConnectionOptions)
      else {
        // a secret the TLS context needs has not arrived: a connect failure naming it, without connecting
        const s = new net.Socket()
        this.socket = s
        process.nextTick(() => s.destroy(pending))
      }
    }
    const socket = this.socket
    socket.setNoDelay(true)
    socket.on(tlsOptions === null ? 'connect' : 'secureConnect', () => this.onConnect())
    socket.on('end', () => this.onEnd())
    socket.on('close', () => this.onClose())
    socket.on('error', (err: Error) => this.onError(err))
    socket.on('drain', () => this.req?.cb.onUpstreamDrain())
    this.connectTimer = setTimeout(onConnectTimeout, cluster.connectTimeoutMs, this)
    this.stats.upstream_cx_total++
    this.stats.upstream_cx_active++
    host.activeConnections++
    if (cluster.circuitBreakers !== null) cluster.circuitBreakers.connections++
  }

  assign(req: H1UpstreamRequest): void {
    this.req = req
    req.conn = this
    this.requests++
    if (this.state !== C.Connecting) {
      this.state = C.Head
      req.flush(this)
      if (req.pausedResponse) this.socket.pause()
    }
  }

  private onConnect(): void {
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer)
      this.connectTimer = null
    }
    if (this.state !== C.Connecting) return
    const req = this.req
    if (req === null) {
      this.state = C.Idle
      this.pool.release(this)
      return
    }
    this.state = C.Head
    req.flush(this)
    if (req.queued === 0) req.cb.onUpstreamDrain()
  }

  connectTimedOut(): void {
    this.connectTimer = null
    if (this.state !== C.Connecting) return
    this.stats.upstream_cx_connect_timeout++
    this.stats.upstream_cx_connect_fail++
    const req = this.req
    this.req = null
    this.destroy()
    req?.fail('connect_timeout', '')
  }

  /** `n` bytes arrived in READ_BUFFER (see shared-read.ts). */
  private onRead(n: number): boolean {
    this.onData(takeRead(n))
    return true
  }

  private onData(chunk: Buffer): void {
    this.stats.upstream_cx_rx_bytes_total += chunk.length
    const req = this.req
    if (this.state === C.Upgraded) {
      if (req !== null) req.cb.onUpstreamData(chunk, false)
      return
    }
    if (req === null || this.state === C.Idle) {
      // bytes nobody asked for: this connection cannot be trusted any more
      this.stats.upstream_cx_protocol_error++
      this.destroy()
      return
    }
    if (this.buf === null) this.buf = chunk
    else this.buf = Buffer.concat([this.buf, chunk])
    try {
      this.process(req)
    } catch (err) {
      if (!(err instanceof HttpParseError)) throw err
      this.stats.upstream_cx_protocol_error++
      this.req = null
      this.destroy()
      if (req.responseStarted) {
        req.done = true
        req.cb.onUpstreamReset('protocol_error', err.message)
      } else req.fail('protocol_error', err.message)
    }
  }

  private process(req: H1UpstreamRequest): void {
    while (this.buf !== null) {
      if (this.state === C.Head) {
        const buf = this.buf
        const end = findHeadEnd(buf, 0, this.searchFrom, RESPONSE_LIMITS)
        if (end === -1) {
          this.searchFrom = Math.max(0, buf.length - 3)
          return
        }
        this.searchFrom = 0
        const h = parseResponseHead(buf, 0, end, RESPONSE_LIMITS)
        this.buf = end === buf.length ? null : buf.subarray(end)
        if (h.status < 200) {
          if (h.status === 101 && req.upgrade) {
            this.state = C.Upgraded
            req.responseStarted = true
            req.cb.onUpstreamHeaders(101, h.headers, false)
            if (this.buf !== null) {
              const rest = this.buf
              this.buf = null
              req.cb.onUpstreamData(rest, false)
            }
            return
          }
          if (h.status === 101) throw new HttpParseError(502, 'unexpected_101', 'upstream switched protocols unasked')
          continue // 100 Continue (the proxy sent its own) and other interim responses are dropped
        }
        this.keepAlive = h.keepAlive
        const noBody = !req.expectBody || h.status === 204 || h.status === 304
        if (noBody && (h.status === 204 || h.status === 304) && (h.chunked || h.contentLength > 0)) {
          throw new HttpParseError(502, 'body_on_bodiless', `body framing on a ${h.status} response`)
        }
        req.responseStarted = true
        const headers = h.headers
        if (noBody || (!h.chunked && h.contentLength === 0)) {
          this.complete(req, h.status, headers)
          return
        }
        this.chunked = h.chunked
        this.closeDelimited = !h.chunked && h.contentLength === -1
        this.bodyRemaining = h.contentLength
        if (this.chunked) {
          if (this.decoder === null) this.decoder = new ChunkedDecoder()
          else this.decoder.reset()
          headers.remove('transfer-encoding')
        }
        if (this.closeDelimited) this.keepAlive = false
        this.state = C.Body
        req.cb.onUpstreamHeaders(h.status, headers, false)
        if (req.done || this.req !== req) return
      } else if (this.state === C.Body) {
        const buf = this.buf
        if (this.closeDelimited) {
          this.buf = null
          req.cb.onUpstreamData(buf, false)
          return
        }
        if (!this.chunked) {
          const n = Math.min(this.bodyRemaining, buf.length)
          this.bodyRemaining -= n
          const piece = n === buf.length ? buf : buf.subarray(0, n)
          this.buf = n === buf.length ? null : buf.subarray(n)
          if (this.bodyRemaining === 0) {
            this.finishBody(req, piece, null)
            return
          }
          req.cb.onUpstreamData(piece, false)
          return
        }
        const dec = this.decoder!
        const pieces = this.pieces
        const off = dec.execute(buf, 0, pieces)
        this.buf = off >= buf.length ? null : buf.subarray(off)
        if (dec.done) {
          const last = pieces.pop() ?? EMPTY
          for (let i = 0; i < pieces.length; i++) req.cb.onUpstreamData(pieces[i]!, false)
          pieces.length = 0
          this.finishBody(req, last, dec.trailers)
          return
        }
        for (let i = 0; i < pieces.length; i++) req.cb.onUpstreamData(pieces[i]!, false)
        pieces.length = 0
        return
      } else return
    }
  }

  /** A response with no body. */
  private complete(req: H1UpstreamRequest, status: number, headers: Headers): void {
    const clean = this.detach(req)
    req.cb.onUpstreamHeaders(status, headers, true)
    this.afterDetach(clean)
  }

  private finishBody(req: H1UpstreamRequest, last: Buffer, trailers: Headers | null): void {
    const clean = this.detach(req)
    if (trailers !== null && trailers.size > 0) {
      if (last.length > 0) req.cb.onUpstreamData(last, false)
      req.cb.onUpstreamTrailers(trailers)
    } else req.cb.onUpstreamData(last, true)
    this.afterDetach(clean)
  }

  /** Ends the exchange before telling the stream, so a pipelined next request can reuse this connection. */
  private detach(req: H1UpstreamRequest): boolean {
    req.done = true
    req.conn = null
    this.req = null
    const clean =
      this.keepAlive &&
      req.requestComplete &&
      this.buf === null &&
      !this.pool.draining &&
      (this.pool.cluster.maxRequestsPerConnection === 0 || this.requests < this.pool.cluster.maxRequestsPerConnection)
    if (clean) {
      this.state = C.Idle
      this.reused = true
      if (req.pausedResponse) this.socket.resume()
      this.pool.release(this)
    } else {
      this.state = C.Closed
    }
    return clean
  }

  private afterDetach(clean: boolean): void {
    if (!clean) this.destroy()
  }

  private onEnd(): void {
    // upstream closed its side: a close-delimited body ends here
    const req = this.req
    if (req !== null && this.state === C.Body && this.closeDelimited) {
      this.req = null
      req.done = true
      req.conn = null
      this.state = C.Closed
      req.cb.onUpstreamData(EMPTY, true)
    } else if (req !== null && this.state === C.Upgraded) {
      this.req = null
      req.done = true
      req.conn = null
      req.cb.onUpstreamData(EMPTY, true)
    }
    this.destroy()
  }

  private onError(err: NodeJS.ErrnoException): void {
    if (this.state === C.Connecting) {
      this.stats.upstream_cx_connect_fail++
      const req = this.req
      this.req = null
      this.destroy()
      req?.fail('connect_failure', connectFailureDetail(err))
    }
  }

  private onClose(): void {
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer)
      this.connectTimer = null
    }
    const wasConnecting = this.state === C.Connecting
    this.state = C.Closed
    this.stats.upstream_cx_active--
    this.pool.host.activeConnections--
    const breakers = this.pool.cluster.circuitBreakers
    if (breakers !== null) breakers.connections--
    this.pool.forget(this)
    const req = this.req
    this.req = null
    if (req === null || req.done) return
    req.conn = null
    if (req.responseStarted) {
      this.stats.upstream_cx_destroy_with_active_rq++
      req.done = true
      req.cb.onUpstreamReset('connection_termination', '')
      return
    }
    if (wasConnecting) {
      this.stats.upstream_cx_connect_fail++
      req.fail('connect_failure', '')
      return
    }
    // closed before any response byte: on a reused connection this is the keep-alive race; retry once if safe
    if (this.reused && !req.retried && req.requestComplete && req.queue === null && isSafeToRetry(req)) {
      req.retried = true
      this.stats.upstream_rq_retry++
      this.pool.attach(req)
      return
    }
    this.stats.upstream_cx_destroy_with_active_rq++
    req.fail('connection_termination', '')
  }

  destroy(): void {
    if (this.state !== C.Closed || !this.socket.destroyed) {
      this.state = C.Closed
      this.socket.destroy()
    }
  }
}

/** Only requests that carried no body are replayed (their head is all there is to send again). */
function isSafeToRetry(req: H1UpstreamRequest): boolean {
  return !req.chunkedOut && !req.upgrade && req.head.length > 0 && req.requestComplete && !req.responseStarted
}

export class H1Pool implements HostPool {
  readonly host: Host
  readonly cluster: UpstreamCluster
  readonly stats: ClusterStats
  private readonly idle: H1ClientConnection[] = []
  private readonly all = new Set<H1ClientConnection>()
  /** requests waiting for a connection (only with circuit breakers: max_connections reached) */
  private pendingQueue: H1UpstreamRequest[] | null = null
  draining = false

  constructor(host: Host, cluster: UpstreamCluster, stats: ClusterStats) {
    this.host = host
    this.cluster = cluster
    this.stats = stats
  }

  newStream(cb: UpstreamCallbacks, head: RequestHead, endStream: boolean): H1UpstreamRequest {
    const req = new H1UpstreamRequest(this, cb, head, endStream)
    this.attach(req)
    return req
  }

  attach(req: H1UpstreamRequest): void {
    let conn = this.idle.pop()
    while (conn?.socket.destroyed) conn = this.idle.pop()
    if (conn !== undefined) {
      conn.assign(req)
      return
    }
    const breakers = this.cluster.circuitBreakers
    if (breakers !== null) {
      if (!breakers.canConnect()) {
        this.stats.upstream_cx_overflow++
        if (!breakers.tryPend()) {
          process.nextTick(resetLater, req, 'overflow', 'too many pending requests (max_pending_requests)')
          return
        }
        this.stats.upstream_rq_pending_total++
        req.pending = true
        ;(this.pendingQueue ??= []).push(req)
        return
      }
    } else if (this.all.size >= this.cluster.hostConnectionLimit) {
      this.stats.upstream_rq_pending_total++
      process.nextTick(resetLater, req, 'overflow', 'too many upstream connections')
      return
    }
    conn = new H1ClientConnection(this)
    this.all.add(conn)
    conn.assign(req)
  }

  release(conn: H1ClientConnection): void {
    if (this.draining) return conn.destroy()
    const next = this.nextPending()
    if (next !== null) conn.assign(next)
    else this.idle.push(conn)
  }

  forget(conn: H1ClientConnection): void {
    this.all.delete(conn)
    const i = this.idle.indexOf(conn)
    if (i !== -1) this.idle.splice(i, 1)
    // a connection slot is free: the first pending request gets a new connection
    if (this.pendingQueue !== null && this.pendingQueue.length > 0 && this.cluster.circuitBreakers!.canConnect()) {
      const next = this.nextPending()
      if (next !== null) {
        const c = new H1ClientConnection(this)
        this.all.add(c)
        c.assign(next)
      }
    }
  }

  /** Takes the first pending request off the queue (null when none waits). */
  private nextPending(): H1UpstreamRequest | null {
    const q = this.pendingQueue
    if (q === null || q.length === 0) return null
    const req = q.shift()!
    req.pending = false
    this.cluster.circuitBreakers!.pending--
    return req
  }

  /** A pending request was given up (reset by the stream, or failed): it leaves the queue. */
  unpend(req: H1UpstreamRequest): void {
    req.pending = false
    const q = this.pendingQueue
    const i = q === null ? -1 : q.indexOf(req)
    if (i !== -1) {
      q!.splice(i, 1)
      this.cluster.circuitBreakers!.pending--
    }
  }

  /** Closes idle connections now; busy ones close when their request ends. */
  drain(): void {
    this.draining = true
    for (const c of this.idle.splice(0)) c.destroy()
  }

  close(): void {
    this.draining = true
    for (const c of [...this.all]) c.destroy()
  }
}

/** `METHOD path HTTP/1.1`, Host, the headers, and the framing this request needs. */
function encodeRequestHead(head: RequestHead, endStream: boolean): { buf: Buffer; chunked: boolean } {
  headStart()
  put(head.method)
  put(' ')
  put(head.path)
  put(' HTTP/1.1\r\n')
  putField('host', head.authority)
  const l = head.headers.list
  let hasLength = false
  for (let i = 0; i < l.length; i += 2) {
    const n = l[i]!
    if (n === 'content-length') hasLength = true
    else if (n === 'host' || n === 'te') continue
    putField(n, l[i + 1]!)
  }
  let chunked = false
  if (!hasLength && head.upgrade === null) {
    if (!endStream) {
      put('transfer-encoding: chunked\r\n')
      chunked = true
    } else if (head.method === 'POST' || head.method === 'PUT' || head.method === 'PATCH') {
      put('content-length: 0\r\n')
    }
  }
  putCrlf()
  return { buf: headTake(), chunked }
}
