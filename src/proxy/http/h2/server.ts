/**
 * The downstream HTTP/2 codec on node:http2 (nghttp2): h2c by prior knowledge and h2 over TLS with ALPN.
 * nghttp2 enforces the frame-level rules and its flood limits; this file adds the request checks RFC 9113 §8
 * asks of an intermediary before a request is turned into HTTP/1.1 upstream.
 */
import type * as H2T from 'node:http2'
import { H2, http2 } from '../../../core/lazy.js'
import type { Headers } from '../headers.js'
import type { HcmContext } from '../hcm.js'
import { ActiveStream } from '../stream.js'
import type { DownstreamSink, RequestHead } from '../types.js'
import { fromH2, toH2 } from './convert.js'
import { keepalive } from './keepalive.js'
import { headersTimeout } from './headers-timeout.js'

const EMPTY = Buffer.alloc(0)
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** streams the proxy itself reset (an upstream failure after the response started): not the client's doing */
const localResets = new WeakSet<H2T.ServerHttp2Stream>()

class H2DownstreamSink implements DownstreamSink {
  private readonly stream: H2T.ServerHttp2Stream
  private trailers: Headers | null = null
  private waitForTrailers = false
  /** the client's END_STREAM (or trailers) has been read */
  requestEnded: boolean

  constructor(stream: H2T.ServerHttp2Stream, requestEnded: boolean) {
    this.stream = stream
    this.requestEnded = requestEnded
  }

  sendHeaders(status: number, headers: Headers, endStream: boolean): void {
    const s = this.stream
    if (s.destroyed || s.headersSent) return
    const ct = headers.get('content-type')
    this.waitForTrailers = !endStream && (ct?.startsWith('application/grpc') === true || headers.has('trailer'))
    s.respond(toH2(headers, { ':status': status }), { endStream, waitForTrailers: this.waitForTrailers })
  }

  sendData(chunk: Buffer, endStream: boolean): boolean {
    const s = this.stream
    if (s.destroyed) return true
    if (endStream) {
      s.end(chunk.length > 0 ? chunk : undefined)
      return true
    }
    return s.write(chunk)
  }

  sendTrailers(trailers: Headers): void {
    this.trailers = trailers
    if (!this.stream.destroyed) this.stream.end()
  }

  onWantTrailers(): void {
    const t = this.trailers
    this.stream.sendTrailers(t === null ? {} : toH2(t, {}))
  }

  reset(): void {
    if (this.stream.destroyed) return
    localResets.add(this.stream)
    this.stream.close(H2.INTERNAL_ERROR)
  }

  pauseRequest(): void {
    this.stream.pause()
  }

  resumeRequest(): void {
    this.stream.resume()
  }

  onStreamComplete(): void {
    const s = this.stream
    if (this.requestEnded || s.destroyed) return
    // The response is complete before the request (the upstream answered early, a local reply, a timeout).
    // RFC 9113 §8.1: RST_STREAM NO_ERROR asks the client to stop sending; node:http2 sends it once the response has
    // been handed to nghttp2. The stream may be paused (the upstream was not reading): what is buffered or still
    // arrives is read and dropped, else node:http2 never ends the stream and it stays in the session (counted against
    // max_concurrent_streams and maxSessionMemory) until new streams are refused with ENHANCE_YOUR_CALM.
    s.resume()
    s.close(H2.NO_ERROR)
  }

  upgraded(): void {}
}

function reject(stream: H2T.ServerHttp2Stream, status: number, reason: string): void {
  if (stream.destroyed) return
  const body = `${reason.replace(/_/g, ' ')}\n`
  stream.respond({
    ':status': status,
    'content-type': 'text/plain',
    'x-loom-reason': reason,
    'content-length': body.length,
  })
  stream.end(body)
}

/** The connection manager of each downstream session (for drainSession). */
const sessionHcm = new WeakMap<H2T.Http2Session, HcmContext>()

/**
 * Drains a downstream session: GOAWAY now (streams in progress go on, new ones are refused), and after the
 * connection manager's drain_timeout whatever is still open is closed.
 */
export function drainSession(session: H2T.Http2Session): void {
  if (session.destroyed) return
  session.close()
  const hcm = sessionHcm.get(session)
  const ms = hcm?.drainTimeoutMs ?? 0
  if (ms <= 0 || session.destroyed) return
  const t = setTimeout(() => {
    if (session.destroyed) return
    hcm!.stats.downstream_cx_drain_close++
    session.destroy()
  }, ms)
  t.unref()
  session.once('close', () => clearTimeout(t))
}

/** An http2 server that never listens: connections are handed to it by the listener (`emit('connection')`). */
export function createH2Server(hcm: HcmContext, scheme: 'http' | 'https'): H2T.Http2Server {
  const server = http2().createServer({
    settings: {
      maxConcurrentStreams: Math.min(hcm.http2.maxConcurrentStreams, 2 ** 31 - 1),
      initialWindowSize: Math.min(hcm.http2.initialWindowSize, 2 ** 31 - 1),
      maxHeaderListSize: hcm.limits.maxHeadBytes,
    },
    // nghttp2's own protections, set here on purpose (these are Node's defaults; docs/proxy.md lists what each
    // case gets): a header list of more pairs than this gets RST_STREAM ENHANCE_YOUR_CALM (the 4 are pseudo-headers)
    maxHeaderListPairs: hcm.limits.maxHeaders + 4,
    // more invalid frames than this (e.g. empty DATA frames) and the session is closed
    maxSessionInvalidFrames: 1000,
    // more streams refused at creation than this and the session is closed
    maxSessionRejectedStreams: 100,
    // at most this many entries in one SETTINGS frame
    maxSettings: 32,
    // at most this many PINGs sent by the proxy and not yet answered
    maxOutstandingPings: 10,
    // outbound queue, header compression tables and stream state per session, in MB: over it new streams are refused
    maxSessionMemory: 10,
  })
  server.on('session', (session) => {
    hcm.stats.downstream_cx_total++
    hcm.stats.downstream_cx_active++
    hcm.stats.downstream_cx_http2_total++
    sessionHcm.set(session, hcm)
    // initial_connection_window_size: nghttp2 starts every connection at 65,535 bytes and node:http2 never raises
    // it. Left there, a few concurrent request bodies fill it, the client's sends queue up in its session until
    // node:http2 counts it over maxSessionMemory and the session starts refusing and resetting streams.
    session.setLocalWindowSize(Math.min(hcm.http2.initialConnectionWindowSize, 2 ** 31 - 1))
    session.once('close', () => hcm.stats.downstream_cx_active--)
    session.on('error', () => {})
    // The listener's sockets are half-open (HTTP/1.1 needs it), and node:http2 never looks at a FIN: without this,
    // a client that closes its side without GOAWAY would leave the session (and its socket) open for good. HTTP/2
    // has no half-closed connection; answer the streams already received (GOAWAY), then close.
    session.socket.once('end', () => {
      if (!session.closed && !session.destroyed) session.close()
    })
    keepalive(session, hcm.http2.keepalive)
    headersTimeout(session, hcm.requestHeadersTimeoutMs, hcm.stats)
    if (hcm.maxConnectionDurationMs > 0) {
      // max_connection_duration: GOAWAY, then closed when its streams are done or drain_timeout has passed
      const t = setTimeout(() => {
        if (session.closed || session.destroyed) return
        hcm.stats.downstream_cx_max_duration_reached++
        drainSession(session)
      }, hcm.maxConnectionDurationMs)
      t.unref()
      session.once('close', () => clearTimeout(t))
    }
    if (hcm.idleTimeoutMs > 0) session.setTimeout(hcm.idleTimeoutMs, () => session.close())
  })
  server.on('stream', (stream, h, flags) => {
    stream.on('error', () => {})
    const session = stream.session
    if (session === undefined) return
    const guard = guardOf(session)
    const born = performance.now()
    stream.once('close', () => guard.onStreamClose(session, stream, born))
    // 'trailers' is an event, not buffered like the body: keep the ones that arrive before the request starts
    const early: EarlyTrailers = { trailers: null, deliver: null }
    stream.on('trailers', (t) => {
      if (early.deliver !== null) early.deliver(t)
      else early.trailers = t
    })
    // A request starts in the next turn of the event loop, after every frame of this read has been handled: a
    // stream reset in the same read as its HEADERS (rapid reset) then costs no route, no upstream connection.
    setImmediate(startStream, hcm, scheme, stream, h, flags, early)
  })
  return server
}

/** Envoy's premature reset rule (CVE-2023-44487): after this many streams on a connection... */
const PREMATURE_RESET_MIN_STREAMS = 500
/** ...more than half of them reset within this long of their start closes the connection. */
const PREMATURE_RESET_MS = 1000

interface EarlyTrailers {
  trailers: H2T.IncomingHttpHeaders | null
  deliver: ((t: H2T.IncomingHttpHeaders) => void) | null
}

/** Per-connection counts for the rapid reset check. */
class SessionGuard {
  closed = 0
  premature = 0

  onStreamClose(session: H2T.Http2Session, stream: H2T.ServerHttp2Stream, born: number): void {
    this.closed++
    // reset by the client (or by nghttp2 for it), not by the proxy after an upstream failure
    const reset = (stream.rstCode ?? 0) !== 0 && !localResets.has(stream)
    if (reset && performance.now() - born < PREMATURE_RESET_MS) this.premature++
    if (this.closed >= PREMATURE_RESET_MIN_STREAMS && this.premature * 2 > this.closed && !session.destroyed) {
      session.destroy(new Error('premature stream resets'), H2.ENHANCE_YOUR_CALM)
    }
  }
}

const guards = new WeakMap<H2T.Http2Session, SessionGuard>()

function guardOf(session: H2T.Http2Session): SessionGuard {
  let g = guards.get(session)
  if (g === undefined) {
    g = new SessionGuard()
    guards.set(session, g)
  }
  return g
}

function startStream(
  hcm: HcmContext,
  scheme: 'http' | 'https',
  stream: H2T.ServerHttp2Stream,
  h: H2T.IncomingHttpHeaders,
  flags: number,
  early: EarlyTrailers,
): void {
  if (stream.destroyed || stream.closed) return
  const method = h[':method'] ?? ''
  const path = h[':path'] ?? ''
  if (method === 'CONNECT') return reject(stream, 405, 'connect_not_supported')
  if (!TOKEN.test(method)) return reject(stream, 400, 'invalid_method')
  if (path.charCodeAt(0) !== 0x2f && !(method === 'OPTIONS' && path === '*')) return reject(stream, 400, 'invalid_path')
  // a fragment is the client's own (RFC 9110 §7.1): refused as the HTTP/1.1 parser refuses it, and as Envoy does
  if (path.includes('#')) return reject(stream, 400, 'fragment_in_path')
  const authority = (h[':authority'] ?? (h.host as string | undefined) ?? '').toLowerCase()
  const headers = fromH2(h)
  headers.remove('host')
  if ((hcm.rejectUnderscores || hcm.dropUnderscores) && headers.list.some((n, i) => i % 2 === 0 && n.includes('_'))) {
    if (hcm.rejectUnderscores) return reject(stream, 400, 'underscore_in_header')
    headers.list = headers.list.filter((_, i, l) => !l[i - (i % 2)]!.includes('_'))
  }
  const endStream = (flags & H2.FLAG_END_STREAM) !== 0
  const head: RequestHead = { method, authority, path, scheme, headers, upgrade: null, protocol: 'HTTP/2' }
  const sink = new H2DownstreamSink(stream, endStream)
  const socket = stream.session?.socket
  const active = new ActiveStream(hcm, sink, socket ?? null)
  stream.on('wantTrailers', () => sink.onWantTrailers())
  stream.on('drain', () => active.onDownstreamDrain())
  stream.on('data', (c: Buffer) => {
    hcm.stats.downstream_cx_rx_bytes_total += c.length
    active.onRequestData(c, false)
  })
  early.deliver = (t) => {
    sink.requestEnded = true
    active.onRequestTrailers(fromH2(t))
  }
  stream.on('end', () => {
    if (sink.requestEnded) return
    sink.requestEnded = true
    // trailers that came in the same read as the headers wait for the body bytes buffered before them
    if (early.trailers !== null) active.onRequestTrailers(fromH2(early.trailers))
    else active.onRequestData(EMPTY, true)
  })
  stream.on('close', () => {
    if (!active.done) active.onDownstreamReset()
  })
  active.onRequestHeaders(head, endStream)
}
