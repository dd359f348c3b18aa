/**
 * One host's health check probe: the connection it keeps (when reuse_connection) and one exchange per check.
 *
 * - TCP: connect, write `send`, wait until every `receive` block has been seen in order (fuzzy match, as Envoy);
 *   with neither, a connection that opens (or is still open, when reused) passes.
 * - HTTP/1.1 (node:http) and HTTP/2 (node:http2): a request to `path`; the status decides (expected, retriable or
 *   anything else).
 * - gRPC: `grpc.health.v1.Health/Check` over HTTP/2; a response with status SERVING passes.
 *
 * A probe reports each check once through its callback, unless the checker aborted the check first (its timeout),
 * which also closes the connection. Health check connections are not the data path's: they count in no cluster
 * connection stats and take nothing from its pools or circuit breakers.
 */
import * as http from 'node:http'
import type * as H2T from 'node:http2'
import * as net from 'node:net'
import type { ConnectionOptions } from 'node:tls'
import { http2, tls } from '../../../core/lazy.js'
import { type GrpcCheckSettings, type HttpCheckSettings, inRanges, type TcpCheckSettings } from './settings.js'

/**
 * `success`; `active`: the host answered that it is unhealthy (unhealthy at once, as Envoy); `retriable`: an answer
 * that counts towards unhealthy_threshold; `network`: no usable answer (connect failure, reset, bad response).
 */
export type ProbeResult = 'success' | 'active' | 'retriable' | 'network'
export type ProbeDone = (result: ProbeResult, detail: string) => void

export interface Probe {
  /** Starts one check; `done` is called once, unless abort() or close() comes first. */
  run(done: ProbeDone): void
  /** Ends the check in flight without a callback and closes the connection. */
  abort(): void
  /** Closes everything; the probe is not used again. */
  close(): void
}

export interface ProbeTarget {
  address: string
  port: number
  /** The cluster's upstream TLS options, or null for plain TCP. */
  tls: ConnectionOptions | null
}

/** At most this much of a response is kept for matching. */
const MAX_RESPONSE_BYTES = 64 * 1024

export function tcpProbe(t: ProbeTarget, s: TcpCheckSettings, reuse: boolean): Probe {
  return new TcpProbe(t, s, reuse)
}

/** The header a service_name_matcher checks (Envoy's cluster verification). */
const CHECKED_CLUSTER = 'x-envoy-upstream-healthchecked-cluster'

/** `verified` is called each time an answer's cluster name is verified (the verify_cluster stat). */
export function httpProbe(t: ProbeTarget, s: HttpCheckSettings, reuse: boolean, verified: () => void): Probe {
  const classify = (status: number, checked: string | string[] | undefined): ProbeResult => {
    if (!inRanges(status, s.expected)) return inRanges(status, s.retriable) ? 'retriable' : 'active'
    if (s.serviceName === null) return 'success'
    verified()
    return s.serviceName(typeof checked === 'string' ? checked : '') ? 'success' : 'active'
  }
  const headers = requestHeaders(s)
  if (!s.http2) return new Http1Probe(t, s, headers, reuse, classify)
  const h2headers: H2T.OutgoingHttpHeaders = {
    ':method': s.method,
    ':path': s.path,
    ':authority': s.host,
    ':scheme': t.tls === null ? 'http' : 'https',
  }
  for (const [k, val] of Object.entries(headers)) if (k !== 'host') h2headers[k] = val
  return new H2Probe(t, reuse, h2headers, null, (status, h) => classify(status, h[CHECKED_CLUSTER]))
}

export function grpcProbe(t: ProbeTarget, s: GrpcCheckSettings, reuse: boolean): Probe {
  const headers: H2T.OutgoingHttpHeaders = {
    ':method': 'POST',
    ':path': '/grpc.health.v1.Health/Check',
    ':authority': s.authority,
    ':scheme': t.tls === null ? 'http' : 'https',
    'content-type': 'application/grpc',
    te: 'trailers',
    'user-agent': USER_AGENT,
  }
  return new H2Probe(t, reuse, headers, grpcRequest(s.serviceName), grpcVerdict)
}

/** Envoy's health checker user agent, which backends use to tell checks from traffic. */
const USER_AGENT = 'Envoy/HC'

function requestHeaders(s: HttpCheckSettings): Record<string, string> {
  const h: Record<string, string> = { host: s.host, 'user-agent': USER_AGENT }
  for (const name of s.headersToRemove) if (name !== 'host') delete h[name]
  for (const o of s.headersToAdd) {
    const name = o.header.key.toLowerCase()
    const value = o.header.value
    if (value === '' && !o.keep_empty_value) continue
    const present = h[name] !== undefined
    const action = o.append_action ?? (o.append === false ? 'OVERWRITE_IF_EXISTS_OR_ADD' : 'APPEND_IF_EXISTS_OR_ADD')
    if (action === 'ADD_IF_ABSENT' && present) continue
    if (action === 'OVERWRITE_IF_EXISTS' && !present) continue
    h[name] = action === 'APPEND_IF_EXISTS_OR_ADD' && present ? `${h[name]},${value}` : value
  }
  return h
}

function connectSocket(t: ProbeTarget, alpn: string[]): net.Socket {
  const opts = { host: t.address, port: t.port }
  return t.tls === null ? net.connect(opts) : tls().connect({ ...t.tls, ALPNProtocols: alpn, ...opts })
}

class TcpProbe implements Probe {
  readonly #t: ProbeTarget
  readonly #s: TcpCheckSettings
  readonly #reuse: boolean
  #socket: net.Socket | null = null
  #connected = false
  #done: ProbeDone | null = null
  #received: Buffer = Buffer.alloc(0)

  constructor(t: ProbeTarget, s: TcpCheckSettings, reuse: boolean) {
    this.#t = t
    this.#s = s
    this.#reuse = reuse
  }

  run(done: ProbeDone): void {
    this.#done = done
    this.#received = Buffer.alloc(0)
    const s = this.#socket
    if (s !== null && this.#connected && !s.destroyed) this.#exchange()
    else this.#connect()
  }

  #connect(): void {
    this.#drop()
    const sock = connectSocket(this.#t, [])
    this.#socket = sock
    this.#connected = false
    sock.once(this.#t.tls === null ? 'connect' : 'secureConnect', () => {
      if (this.#socket !== sock) return
      this.#connected = true
      this.#exchange()
    })
    sock.on('data', (d: Buffer) => {
      if (this.#socket === sock) this.#onData(d)
    })
    sock.on('error', () => {})
    sock.on('close', () => {
      if (this.#socket !== sock) return
      const was = this.#connected
      this.#socket = null
      this.#connected = false
      this.#finish('network', was ? 'connection closed' : 'connection failed')
    })
  }

  #exchange(): void {
    const s = this.#s
    if (s.send.length > 0) this.#socket!.write(s.send)
    if (s.receive.length === 0) this.#finish('success', '')
  }

  #onData(d: Buffer): void {
    if (this.#done === null) return
    if (this.#received.length < MAX_RESPONSE_BYTES) this.#received = Buffer.concat([this.#received, d])
    if (containsInOrder(this.#received, this.#s.receive)) this.#finish('success', '')
  }

  #finish(result: ProbeResult, detail: string): void {
    const done = this.#done
    if (done === null) return
    this.#done = null
    // a failed exchange leaves the connection in an unknown state: the next check starts afresh
    if (!this.#reuse || result !== 'success') this.#drop()
    done(result, detail)
  }

  #drop(): void {
    const s = this.#socket
    this.#socket = null
    this.#connected = false
    s?.destroy()
  }

  abort(): void {
    this.#done = null
    this.#drop()
  }

  close(): void {
    this.abort()
  }
}

/** Whether every block appears in `data`, in order, not necessarily adjacent. */
export function containsInOrder(data: Buffer, blocks: readonly Buffer[]): boolean {
  let from = 0
  for (const b of blocks) {
    const i = data.indexOf(b, from)
    if (i < 0) return false
    from = i + b.length
  }
  return true
}

class Http1Probe implements Probe {
  readonly #t: ProbeTarget
  readonly #s: HttpCheckSettings
  readonly #headers: Record<string, string>
  readonly #classify: (status: number, checked: string | string[] | undefined) => ProbeResult
  readonly #agent: http.Agent
  #req: http.ClientRequest | null = null

  constructor(
    t: ProbeTarget,
    s: HttpCheckSettings,
    headers: Record<string, string>,
    reuse: boolean,
    classify: (status: number, checked: string | string[] | undefined) => ProbeResult,
  ) {
    this.#t = t
    this.#s = s
    this.#headers = headers
    this.#classify = classify
    this.#agent = new http.Agent({ keepAlive: reuse, maxSockets: 1 })
    if (t.tls !== null) {
      const agent = this.#agent as unknown as { createConnection: () => net.Socket }
      agent.createConnection = () => connectSocket(t, ['http/1.1'])
    }
  }

  run(done: ProbeDone): void {
    let finished = false
    const finish = (result: ProbeResult, detail: string) => {
      if (finished || this.#req !== req) return
      finished = true
      this.#req = null
      done(result, detail)
    }
    const req = http.request({
      host: this.#t.address,
      port: this.#t.port,
      method: this.#s.method,
      path: this.#s.path,
      headers: this.#headers,
      setHost: false,
      agent: this.#agent,
    })
    this.#req = req
    req.on('response', (res) => {
      const status = res.statusCode ?? 0
      res.on('error', () => finish('network', 'response aborted'))
      res.on('aborted', () => finish('network', 'response aborted'))
      res.on('end', () => finish(this.#classify(status, res.headers[CHECKED_CLUSTER]), `status ${status}`))
      res.resume()
    })
    req.on('error', (err) => finish('network', err.message))
    req.end()
  }

  abort(): void {
    const req = this.#req
    this.#req = null
    req?.destroy()
  }

  close(): void {
    this.abort()
    this.#agent.destroy()
  }
}

type Verdict = (
  status: number,
  headers: H2T.IncomingHttpHeaders,
  trailers: H2T.IncomingHttpHeaders | null,
  body: Buffer,
) => ProbeResult

class H2Probe implements Probe {
  readonly #t: ProbeTarget
  readonly #reuse: boolean
  readonly #headers: H2T.OutgoingHttpHeaders
  readonly #body: Buffer | null
  readonly #verdict: Verdict
  #session: H2T.ClientHttp2Session | null = null
  #stream: H2T.ClientHttp2Stream | null = null

  constructor(t: ProbeTarget, reuse: boolean, headers: H2T.OutgoingHttpHeaders, body: Buffer | null, verdict: Verdict) {
    this.#t = t
    this.#reuse = reuse
    this.#headers = headers
    this.#body = body
    this.#verdict = verdict
  }

  #connect(): H2T.ClientHttp2Session {
    const t = this.#t
    const host = t.address.includes(':') ? `[${t.address}]` : t.address
    const session = http2().connect(`${t.tls === null ? 'http' : 'https'}://${host}:${t.port}`, {
      settings: { enablePush: false },
      createConnection: () => connectSocket(t, ['h2']),
    })
    session.on('error', () => {})
    const forget = () => {
      if (this.#session === session) this.#session = null
    }
    session.once('close', forget)
    session.on('goaway', forget)
    this.#session = session
    return session
  }

  run(done: ProbeDone): void {
    let session = this.#session
    if (session === null || session.closed || session.destroyed) session = this.#connect()
    let stream: H2T.ClientHttp2Stream
    try {
      stream = session.request(this.#headers, { endStream: this.#body === null })
    } catch (err) {
      this.#dropSession()
      done('network', (err as Error).message)
      return
    }
    this.#stream = stream
    let finished = false
    const finish = (result: ProbeResult, detail: string) => {
      if (finished || this.#stream !== stream) return
      finished = true
      this.#stream = null
      if (!this.#reuse) this.#dropSession()
      done(result, detail)
    }
    let status = 0
    let headers: H2T.IncomingHttpHeaders = {}
    let trailers: H2T.IncomingHttpHeaders | null = null
    const chunks: Buffer[] = []
    let size = 0
    stream.on('response', (h) => {
      status = Number(h[':status'])
      headers = h
    })
    stream.on('trailers', (h) => {
      trailers = h
    })
    stream.on('data', (c: Buffer) => {
      if (size < MAX_RESPONSE_BYTES) chunks.push(c)
      size += c.length
    })
    stream.on('end', () => {
      const result = this.#verdict(status, headers, trailers, Buffer.concat(chunks))
      finish(result, `status ${status}`)
    })
    stream.on('error', (err) => finish('network', err.message))
    stream.on('close', () => finish('network', `stream closed (code ${stream.rstCode})`))
    if (this.#body !== null) stream.end(this.#body)
  }

  #dropSession(): void {
    const s = this.#session
    this.#session = null
    s?.destroy()
  }

  abort(): void {
    const stream = this.#stream
    this.#stream = null
    stream?.close()
    this.#dropSession()
  }

  close(): void {
    this.abort()
  }
}

/** A length-prefixed grpc.health.v1.HealthCheckRequest { string service = 1 }. */
export function grpcRequest(service: string): Buffer {
  const name = Buffer.from(service, 'utf8')
  const field = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name])
  const prefix = Buffer.alloc(5)
  prefix.writeUInt32BE(field.length, 1)
  return Buffer.concat([prefix, field])
}

function varint(n: number): Buffer {
  const out: number[] = []
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  out.push(n)
  return Buffer.from(out)
}

/** grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING */
const SERVING = 1

/** SERVING with grpc-status 0 passes; any other answer is the host saying it is not healthy. */
export const grpcVerdict: Verdict = (status, headers, trailers, body) => {
  if (status !== 200) return 'active'
  const grpcStatus = (trailers ?? headers)['grpc-status']
  if (grpcStatus !== '0') return 'active'
  return grpcServingStatus(body) === SERVING ? 'success' : 'active'
}

/** The `status` field (1) of the first length-prefixed HealthCheckResponse in `body`; -1 when it cannot be read. */
export function grpcServingStatus(body: Buffer): number {
  if (body.length < 5 || body[0] !== 0) return -1
  const len = body.readUInt32BE(1)
  if (body.length < 5 + len) return -1
  const msg = body.subarray(5, 5 + len)
  let i = 0
  let status = 0 // proto3 default: UNKNOWN
  while (i < msg.length) {
    const [tag, next] = readVarint(msg, i)
    if (next < 0) return -1
    i = next
    const wire = tag & 7
    if (wire === 0) {
      const [value, after] = readVarint(msg, i)
      if (after < 0) return -1
      if (tag >>> 3 === 1) status = value
      i = after
    } else if (wire === 2) {
      const [n, after] = readVarint(msg, i)
      if (after < 0) return -1
      i = after + n
    } else if (wire === 1) i += 8
    else if (wire === 5) i += 4
    else return -1
  }
  return status
}

function readVarint(b: Buffer, i: number): [number, number] {
  let value = 0
  let shift = 0
  while (i < b.length && shift < 35) {
    const byte = b[i++]!
    value += (byte & 0x7f) * 2 ** shift
    if ((byte & 0x80) === 0) return [value, i]
    shift += 7
  }
  return [0, -1]
}
