/**
 * The downstream HTTP/1.1 codec: parses requests from a client socket, hands each to an ActiveStream, and encodes
 * the response. One request is served at a time per connection; pipelined requests wait in the input buffer (and
 * reading pauses) until the response before them is complete, so responses can never be reordered or mixed.
 */
import { Buffer } from 'node:buffer'
import type { Socket } from 'node:net'
import { STATUS_CODES } from 'node:http'
import type { Headers } from '../headers.js'
import type { HcmContext } from '../hcm.js'
import type { HasDeadline } from '../deadlines.js'
import { ActiveStream } from '../stream.js'
import type { DownstreamSink, RequestHead } from '../types.js'
import { ChunkedDecoder, findHeadEnd, HttpParseError, parseRequestHead } from './parse.js'
import { headStart, headTake, joinHeadAndBody, put, putCrlf, putField, putStatusLine } from './wire.js'
import { takeRead } from './shared-read.js'
import { type DeferredWriter, deferWrite } from './write-batch.js'

enum S {
  Head,
  Body,
  /** request fully read, response in progress */
  Wait,
  Upgraded,
  Closed,
}

const EMPTY = Buffer.alloc(0)
const CRLF = Buffer.from('\r\n')
const LAST_CHUNK = Buffer.from('0\r\n\r\n')
const CRLF_LAST_CHUNK = Buffer.from('\r\n0\r\n\r\n')
const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n')
/** Request body bytes we are willing to read and drop after an early response, to keep the connection. */
const MAX_DISCARD = 64 * 1024

/** Bytes a response may hold back for one deferred write; more is written at once. */
const COALESCE_MAX = 32 * 1024

function statusLine(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`
}

export class H1ServerConnection implements DownstreamSink, DeferredWriter, HasDeadline {
  readonly socket: Socket
  readonly hcm: HcmContext
  readonly scheme: 'http' | 'https'
  readonly sourceIp: string
  private buf: Buffer | null = null
  private searchFrom = 0
  private state = S.Head
  private stream: ActiveStream | null = null
  private bodyRemaining = 0
  private chunked = false
  private decoder: ChunkedDecoder | null = null
  private readonly pieces: Buffer[] = []
  private keepAlive = true
  private versionMinor = 1
  private isHead = false
  private requestDone = false
  private responseDone = false
  private chunkedOut = false
  private noBody = false
  private processing = false
  private pausedByStream = false
  /** response bytes waiting for the end of the event loop iteration (see write-batch.ts) */
  private pendingOut: Buffer | null = null
  private pausedByPipeline = false
  private clientEnded = false
  /** a response filled the socket's buffer: the next request waits for 'drain' */
  private awaitingDrain = false
  /** the stream gave up on the rest of the request (a timeout): close after its reply */
  private abandoned = false
  /** drain_timeout: set once the connection drains with a request in progress */
  private drainTimer: NodeJS.Timeout | null = null
  /** max_connection_duration */
  private durationTimer: NodeJS.Timeout | null = null
  /** request_headers_timeout: pending in hcm.deadlines while a head has begun but not ended (see parseHead) */
  deadline = 0
  deadlineSlot = -1

  /** `sharedRead`: the socket was made with `onread` and calls `onRead` (see shared-read.ts), not 'data'. */
  constructor(socket: Socket, hcm: HcmContext, scheme: 'http' | 'https', sharedRead = false) {
    this.socket = socket
    this.hcm = hcm
    this.scheme = scheme
    this.sourceIp = socket.remoteAddress ?? ''
    socket.setNoDelay(true)
    if (!sharedRead) socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('end', () => this.onEnd())
    socket.on('close', () => this.onClose())
    socket.on('error', () => {})
    socket.on('drain', () => this.onDrain())
    if (hcm.idleTimeoutMs > 0) {
      socket.setTimeout(hcm.idleTimeoutMs, () => {
        if (this.stream === null) socket.destroy()
      })
    }
    hcm.stats.downstream_cx_total++
    hcm.stats.downstream_cx_active++
    hcm.stats.downstream_cx_http1_total++
    if (hcm.maxConnectionDurationMs > 0) {
      this.durationTimer = setTimeout(maxDurationReached, hcm.maxConnectionDurationMs, this)
      this.durationTimer.unref()
    }
  }

  /** max_connection_duration: the connection drains (closed now if idle, else after its response or drain_timeout). */
  maxDurationReached(): void {
    this.durationTimer = null
    if (this.state === S.Closed) return
    this.hcm.stats.downstream_cx_max_duration_reached++
    this.drain()
  }

  /** Feeds bytes that were read before this codec took the socket (protocol detection). */
  feed(chunk: Buffer): void {
    if (chunk.length > 0) this.onData(chunk)
  }

  /** `n` bytes arrived in READ_BUFFER. */
  onRead(n: number): boolean {
    this.onData(takeRead(n))
    return true
  }

  private onData(chunk: Buffer): void {
    this.hcm.stats.downstream_cx_rx_bytes_total += chunk.length
    if (this.state === S.Upgraded) {
      this.stream?.onRequestData(chunk, false)
      return
    }
    if (this.state === S.Closed) return
    if (this.buf === null) this.buf = chunk
    else this.buf = Buffer.concat([this.buf, chunk])
    if (!this.processing) this.process()
  }

  private process(): void {
    this.processing = true
    try {
      while (this.buf !== null && this.state !== S.Closed && !this.awaitingDrain) {
        if (this.state === S.Head) {
          if (!this.parseHead()) break
        } else if (this.state === S.Body) {
          this.readBody()
        } else if (this.state === S.Wait) {
          // pipelined bytes: hold them until the current response is done
          if (!this.pausedByPipeline) {
            this.pausedByPipeline = true
            this.socket.pause()
          }
          break
        } else if (this.state === S.Upgraded) {
          const b = this.buf
          this.buf = null
          this.stream?.onRequestData(b, false)
        }
      }
    } catch (err) {
      if (err instanceof HttpParseError) this.protocolError(err)
      else throw err
    } finally {
      this.processing = false
    }
  }

  /** Returns false when more bytes are needed. */
  private parseHead(): boolean {
    const buf = this.buf!
    // RFC 9112 §2.2: ignore at least one empty line before a request-line
    let start = 0
    while (start + 1 < buf.length && buf[start] === 0x0d && buf[start + 1] === 0x0a && start < 8) start += 2
    const end = findHeadEnd(buf, start, this.searchFrom, this.hcm.limits)
    if (end === -1) {
      this.searchFrom = Math.max(start, buf.length - 3)
      // a head that did not come whole in one read: request_headers_timeout runs from here (a head read at
      // once, nearly every one, costs nothing); blank lines before a request-line do not start it
      if (this.deadlineSlot === -1 && this.hcm.requestHeadersTimeoutMs > 0 && start < buf.length) {
        this.hcm.deadlines.add(this, this.hcm.requestHeadersTimeoutMs)
      }
      return false
    }
    this.searchFrom = 0
    if (this.deadlineSlot !== -1) this.hcm.deadlines.delete(this)
    const h1 = parseRequestHead(buf, start, end, this.hcm.limits)
    this.buf = end === buf.length ? null : buf.subarray(end)
    if ((this.hcm.rejectUnderscores || this.hcm.dropUnderscores) && hasUnderscoreHeader(h1.headers)) {
      if (this.hcm.rejectUnderscores)
        throw new HttpParseError(400, 'underscore_in_header', 'header name with underscore')
      dropUnderscoreHeaders(h1.headers)
    }
    if (h1.method === 'CONNECT') {
      throw new HttpParseError(405, 'connect_not_supported', 'CONNECT is not supported on this listener')
    }

    this.keepAlive = h1.keepAlive
    this.versionMinor = h1.versionMinor
    this.isHead = h1.method === 'HEAD'
    this.chunked = h1.chunked
    this.bodyRemaining = Math.max(h1.contentLength, 0)
    this.requestDone = !h1.chunked && this.bodyRemaining === 0
    this.responseDone = false
    this.chunkedOut = false
    this.noBody = false
    this.abandoned = false
    if (h1.chunked) {
      if (this.decoder === null) this.decoder = new ChunkedDecoder()
      else this.decoder.reset()
    }

    const headers = h1.headers
    // the request the stream sees: hop-by-hop fields go, framing is re-derived by the upstream codec
    let upgrade = h1.upgrade
    if (upgrade === 'h2c') upgrade = null // h2c upgrade is disabled (request smuggling risk); served as HTTP/1.1
    stripRequestHopByHop(headers)
    if (h1.expectContinue) {
      headers.remove('expect')
      if (!this.requestDone) {
        this.flushDeferred()
        this.socket.write(CONTINUE)
      }
    }
    if (upgrade !== null) {
      headers.add('connection', 'upgrade')
      headers.add('upgrade', upgrade)
    }
    if (h1.contentLength >= 0) headers.add('content-length', String(h1.contentLength))
    // the authority travels beside the headers (absolute-form wins over Host); upstream codecs write it back
    headers.remove('host')

    const head: RequestHead = {
      method: h1.method,
      authority: h1.authority,
      path: h1.path,
      scheme: this.scheme,
      headers,
      upgrade,
      protocol: h1.versionMinor === 1 ? 'HTTP/1.1' : 'HTTP/1.0',
    }
    this.state = this.requestDone ? S.Wait : S.Body
    const stream = new ActiveStream(this.hcm, this, this.socket)
    this.stream = stream
    stream.onRequestHeaders(head, this.requestDone)
    return true
  }

  private readBody(): void {
    const buf = this.buf!
    const stream = this.stream!
    if (!this.chunked) {
      const n = Math.min(this.bodyRemaining, buf.length)
      this.bodyRemaining -= n
      this.buf = n === buf.length ? null : buf.subarray(n)
      const done = this.bodyRemaining === 0
      if (done) this.bodyDone()
      stream.onRequestData(n === buf.length ? buf : buf.subarray(0, n), done)
      return
    }
    const dec = this.decoder!
    const pieces = this.pieces
    const off = dec.execute(buf, 0, pieces)
    this.buf = off >= buf.length ? null : buf.subarray(off)
    for (let i = 0; i < pieces.length; i++) stream.onRequestData(pieces[i]!, false)
    pieces.length = 0
    if (dec.done) {
      this.bodyDone()
      if (dec.trailers !== null && dec.trailers.size > 0) stream.onRequestTrailers(dec.trailers)
      else stream.onRequestData(EMPTY, true)
    }
  }

  private bodyDone(): void {
    this.requestDone = true
    if (this.state === S.Body) this.state = S.Wait
    if (this.responseDone) this.nextRequest()
  }

  // === DownstreamSink ===

  sendHeaders(status: number, headers: Headers, endStream: boolean): void {
    if (this.state === S.Closed) return
    const noBody = this.isHead || (status < 200 && status !== 101) || status === 204 || status === 304
    this.noBody = noBody
    if (!this.requestDone) {
      // an early response: keep the connection only if the rest of the body is small enough to read and drop
      if (this.chunked || this.bodyRemaining > MAX_DISCARD) this.keepAlive = false
    }
    headStart()
    putStatusLine(status)
    let hasLength = false
    const l = headers.list
    for (let i = 0; i < l.length; i += 2) {
      const name = l[i]!
      if (name === 'content-length') hasLength = true
      else if (name === 'connection' && status !== 101) continue
      putField(name, l[i + 1]!)
    }
    if (status === 101) {
      this.chunkedOut = false
    } else if (!noBody && !hasLength) {
      if (endStream) put('content-length: 0\r\n')
      else if (this.versionMinor === 1) {
        put('transfer-encoding: chunked\r\n')
        this.chunkedOut = true
      } else this.keepAlive = false
    }
    if (status !== 101) {
      if (!this.keepAlive || this.clientEnded) put('connection: close\r\n')
      else if (this.versionMinor === 0) put('connection: keep-alive\r\n')
    }
    putCrlf()
    const b = headTake()
    this.hcm.stats.downstream_cx_tx_bytes_total += b.length
    // the body usually follows at once (same upstream read): both leave in one write at the end of the iteration
    const pending = this.pendingOut
    if (pending === null) {
      this.pendingOut = b
      deferWrite(this)
    } else if (pending.length + b.length <= COALESCE_MAX) {
      // a pipelined request answered in the same iteration
      this.pendingOut = Buffer.concat([pending, b])
    } else {
      this.flushDeferred()
      this.pendingOut = b
      deferWrite(this)
    }
  }

  /** Ends the socket after anything held back. */
  private end(last?: string): void {
    this.flushDeferred()
    if (last === undefined) this.socket.end()
    else this.socket.end(last, 'latin1')
  }

  /** Writes what sendHeaders and sendData held back, if anything. */
  flushDeferred(): void {
    const out = this.pendingOut
    if (out === null) return
    this.pendingOut = null
    if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.write(out)
  }

  sendData(chunk: Buffer, endStream: boolean): boolean {
    if (this.state === S.Closed) return true
    const socket = this.socket
    const withBody = !this.noBody && chunk.length > 0
    if (withBody) this.hcm.stats.downstream_cx_tx_bytes_total += chunk.length
    const pending = this.pendingOut
    if (pending !== null) {
      if (withBody && pending.length + chunk.length <= COALESCE_MAX && this.state !== S.Upgraded) {
        this.pendingOut = joinHeadAndBody(pending, chunk, this.chunkedOut, endStream && this.chunkedOut)
        return true
      }
      this.flushDeferred()
    }
    let ok = true
    if (withBody) {
      if (this.chunkedOut) {
        socket.cork()
        socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1')
        socket.write(chunk)
        ok = socket.write(endStream ? CRLF_LAST_CHUNK : CRLF)
        socket.uncork()
        return ok
      }
      ok = socket.write(chunk)
    }
    if (endStream && this.chunkedOut && !this.noBody) ok = socket.write(LAST_CHUNK)
    if (endStream && this.state === S.Upgraded) socket.end()
    return ok
  }

  sendTrailers(trailers: Headers): void {
    if (this.state === S.Closed) return
    this.flushDeferred()
    if (!this.chunkedOut || this.noBody) {
      if (this.chunkedOut) this.socket.write(LAST_CHUNK)
      return
    }
    let s = '0\r\n'
    const l = trailers.list
    for (let i = 0; i < l.length; i += 2) s += `${l[i]}: ${l[i + 1]}\r\n`
    this.socket.write(`${s}\r\n`, 'latin1')
  }

  reset(): void {
    this.state = S.Closed
    this.socket.destroy()
  }

  pauseRequest(): void {
    if (!this.pausedByStream) {
      this.pausedByStream = true
      this.socket.pause()
    }
  }

  resumeRequest(): void {
    if (this.pausedByStream) {
      this.pausedByStream = false
      if (!this.pausedByPipeline) this.socket.resume()
    }
  }

  upgraded(): void {
    this.state = S.Upgraded
    this.keepAlive = false
    if (this.pausedByPipeline) {
      // bytes sent right behind the upgrade request were held back as if pipelined: they belong to the tunnel
      this.pausedByPipeline = false
      if (!this.pausedByStream) this.socket.resume()
    }
    if (this.buf !== null && !this.processing) this.process()
  }

  onStreamComplete(): void {
    this.responseDone = true
    if (this.state === S.Upgraded) {
      this.state = S.Closed
      this.end()
      return
    }
    if (this.requestDone) this.nextRequest()
    else if (this.abandoned && this.state !== S.Closed) {
      // the rest of the request is not wanted: the reply said `connection: close`
      this.state = S.Closed
      this.buf = null
      this.end()
    }
  }

  abandonRequest(): void {
    this.abandoned = true
    this.keepAlive = false
  }

  /** request_headers_timeout expired with a head still incomplete: 408, then close (Envoy's answer). */
  timeout(): void {
    if (this.state !== S.Head || this.stream !== null) return
    this.hcm.stats.downstream_rq_header_timeout++
    this.closeWith(408, 'request_header_timeout', 'request header timeout')
  }

  // === connection lifecycle ===

  /** Graceful close: now if idle, else after the response in progress (which says `connection: close`). */
  drain(): void {
    this.keepAlive = false
    if (this.stream === null && this.state === S.Head) {
      this.state = S.Closed
      this.end()
      return
    }
    // drain_timeout: what is still going on then is cut
    const ms = this.hcm.drainTimeoutMs
    if (ms > 0 && this.drainTimer === null && this.state !== S.Closed) {
      this.drainTimer = setTimeout(drainExpired, ms, this)
      this.drainTimer.unref()
    }
  }

  /** drain_timeout expired: the request in progress is reset and the connection closed. */
  drainExpired(): void {
    this.drainTimer = null
    if (this.socket.destroyed) return
    this.hcm.stats.downstream_cx_drain_close++
    const s = this.stream
    this.reset()
    if (s !== null && !this.responseDone) s.onDownstreamReset()
  }

  private nextRequest(): void {
    this.stream = null
    if (!this.keepAlive || this.clientEnded) {
      this.state = S.Closed
      this.end()
      return
    }
    this.state = S.Head
    if (this.socket.writableNeedDrain) {
      // the client is not reading its responses: take no further request from it until it does
      this.awaitingDrain = true
      if (!this.pausedByPipeline) {
        this.pausedByPipeline = true
        this.socket.pause()
      }
      return
    }
    this.continueReading()
  }

  private continueReading(): void {
    if (this.pausedByPipeline) {
      this.pausedByPipeline = false
      if (!this.pausedByStream) this.socket.resume()
    }
    if (this.buf !== null && !this.processing) this.process()
  }

  private onDrain(): void {
    if (this.awaitingDrain) {
      this.awaitingDrain = false
      if (this.state === S.Head) this.continueReading()
    } else this.stream?.onDownstreamDrain()
  }

  private protocolError(err: HttpParseError): void {
    this.hcm.stats.downstream_cx_protocol_error++
    this.hcm.stats.flag('DPE')
    const stream = this.stream
    if (stream !== null && !this.responseDone) {
      // a framing error in the body of a request already being served: answer if we still can, then close
      this.keepAlive = false
      this.requestDone = true
      this.buf = null
      stream.onDownstreamProtocolError(err.status, err.reason, err.message)
      this.hcm.logProtocolError(this.sourceIp, err)
      if (this.state !== S.Closed) {
        this.state = S.Closed
        this.end()
      }
      return
    }
    this.closeWith(err.status, err.reason, err.message)
    this.hcm.logProtocolError(this.sourceIp, err)
  }

  /** A reply of the codec's own (no stream), then close. */
  private closeWith(status: number, reason: string, message: string): void {
    const body = `${message}\n`
    const head =
      `${statusLine(status)}content-type: text/plain\r\nx-loom-reason: ${reason}\r\n` +
      `content-length: ${body.length}\r\nconnection: close\r\n\r\n`
    this.state = S.Closed
    this.buf = null
    if (this.deadlineSlot !== -1) this.hcm.deadlines.delete(this)
    this.end(head + body)
  }

  private onEnd(): void {
    this.clientEnded = true
    if (this.state === S.Upgraded) {
      this.stream?.onRequestData(EMPTY, true)
      return
    }
    if (this.stream === null || this.state === S.Head) {
      this.state = S.Closed
      this.end()
    } else if (!this.requestDone) {
      // the client stopped mid-request
      const s = this.stream
      this.reset()
      s.onDownstreamReset()
    }
  }

  private onClose(): void {
    const wasOpen = this.state !== S.Closed || this.stream !== null
    this.state = S.Closed
    if (this.deadlineSlot !== -1) this.hcm.deadlines.delete(this)
    if (this.drainTimer !== null) {
      clearTimeout(this.drainTimer)
      this.drainTimer = null
    }
    if (this.durationTimer !== null) {
      clearTimeout(this.durationTimer)
      this.durationTimer = null
    }
    this.hcm.stats.downstream_cx_active--
    const s = this.stream
    this.stream = null
    if (wasOpen && s !== null && !this.responseDone) s.onDownstreamReset()
  }
}

function maxDurationReached(c: H1ServerConnection): void {
  c.maxDurationReached()
}

function drainExpired(c: H1ServerConnection): void {
  c.drainExpired()
}

function dropUnderscoreHeaders(h: Headers): void {
  const l = h.list
  for (let i = 0; i < l.length; i += 2) {
    if (l[i]!.includes('_')) {
      l.splice(i, 2)
      i -= 2
    }
  }
}

function hasUnderscoreHeader(h: Headers): boolean {
  const l = h.list
  for (let i = 0; i < l.length; i += 2) if (l[i]!.includes('_')) return true
  return false
}

/** Drops hop-by-hop request headers and the fields named by Connection (an upgrade is re-added by the caller). */
function stripRequestHopByHop(h: Headers): void {
  const l = h.list
  let named: string[] | null = null
  for (let i = 0; i < l.length; i += 2) {
    const n = l[i]!
    if (n === 'connection') {
      const v = l[i + 1]!
      if (v === 'keep-alive' || v === 'close' || v === 'Keep-Alive' || v === 'upgrade' || v === 'Upgrade') continue
      for (const t of v.split(',')) {
        const tok = t.trim().toLowerCase()
        if (tok !== '' && tok !== 'close' && tok !== 'keep-alive' && tok !== 'upgrade') (named ??= []).push(tok)
      }
    }
  }
  let w = 0
  for (let i = 0; i < l.length; i += 2) {
    const n = l[i]!
    if (
      n === 'connection' ||
      n === 'keep-alive' ||
      n === 'proxy-connection' ||
      n === 'transfer-encoding' ||
      n === 'content-length' ||
      n === 'http2-settings' ||
      n === 'upgrade' ||
      (n === 'te' && l[i + 1]!.toLowerCase() !== 'trailers') ||
      named?.includes(n)
    ) {
      continue
    }
    if (w !== i) {
      l[w] = n
      l[w + 1] = l[i + 1]!
    }
    w += 2
  }
  if (w !== l.length) l.length = w
}
