/**
 * Shared plumbing for the Bookinfo services: the HTTP server with one log line per request and graceful exit,
 * JSON/text replies, trace-header propagation, outbound calls (through the sidecar when `HTTP_PROXY` is set)
 * and a few Prometheus counters. Only `node:` modules.
 */
import * as http from 'node:http'
import * as https from 'node:https'
import type { AddressInfo } from 'node:net'

/** Headers every service copies from its inbound request onto each outbound call. */
export const FORWARDED_HEADERS = [
  'x-request-id',
  'x-ot-span-context',
  'x-datadog-trace-id',
  'x-datadog-parent-id',
  'x-datadog-sampling-priority',
  'traceparent',
  'tracestate',
  'x-cloud-trace-context',
  'grpc-trace-bin',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
  'x-b3-flags',
  'sw8',
  'end-user',
  'user-agent',
  'cookie',
  'authorization',
  'jwt',
] as const

/** `true` when the variable is set to `true` (any case), like the original's boolean parsing. */
export function envFlag(name: string): boolean {
  return (process.env[name] ?? '').trim().toLowerCase() === 'true'
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim()
}

/** The port to listen on: `$PORT`, default 9080. */
export function listenPort(): number {
  const raw = nonEmpty(process.env.PORT)
  if (raw === undefined) return 9080
  const port = Number(raw)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid PORT: ${raw}`)
  return port
}

/** The name reported as `podname`: `$POD_NAME`, else `$HOSTNAME`, else `<app>-<version>-<pid>`. */
export function podName(app: string, version: string): string {
  return nonEmpty(process.env.POD_NAME) ?? nonEmpty(process.env.HOSTNAME) ?? `${app}-${version}-${process.pid}`
}

// ---------------------------------------------------------------------------------------------------------------
// Replies and request bodies

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

export function sendText(
  res: http.ServerResponse,
  status: number,
  text: string,
  contentType = 'text/plain; charset=utf-8',
  extra: http.OutgoingHttpHeaders = {},
): void {
  res.writeHead(status, { ...extra, 'content-type': contentType, 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

export function redirect(res: http.ServerResponse, location: string, extra: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(302, { ...extra, location, 'content-length': 0 })
  res.end()
}

export class BodyTooLargeError extends Error {}

/** Reads the whole request body, refusing more than `limit` bytes. */
export function readBody(req: http.IncomingMessage, limit = 64 * 1024): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) {
        reject(new BodyTooLargeError(`request body over ${limit} bytes`))
        req.destroy()
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks)))
    req.on('error', reject)
  })
}

/** `/prefix/<id>` → `<id>` (decoded), or undefined when the path has another shape. */
export function pathParam(pathname: string, prefix: string): string | undefined {
  if (!pathname.startsWith(prefix)) return undefined
  const rest = pathname.slice(prefix.length)
  if (rest === '' || rest.includes('/')) return undefined
  try {
    return decodeURIComponent(rest)
  } catch {
    return undefined
  }
}

/** A product id as the services accept it: an optionally signed decimal integer. */
export function parseProductId(raw: string): number | undefined {
  if (!/^[+-]?\d{1,15}$/.test(raw)) return undefined
  return Number(raw)
}

// ---------------------------------------------------------------------------------------------------------------
// Header propagation

/**
 * The propagated headers of `req`, ready for an outbound call. With `endUser` given (productpage), the inbound
 * `end-user` is dropped and replaced by the session's user, or omitted when `endUser` is null.
 */
export function forwardHeaders(req: http.IncomingMessage, endUser?: string | null): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of FORWARDED_HEADERS) {
    if (name === 'end-user' && endUser !== undefined) continue
    const value = req.headers[name]
    if (value === undefined) continue
    out[name] = Array.isArray(value) ? value.join(', ') : value
  }
  if (endUser) out['end-user'] = endUser
  return out
}

// ---------------------------------------------------------------------------------------------------------------
// Outbound calls

export interface Endpoint {
  scheme: 'http' | 'https'
  host: string
  port: number
}

/**
 * Where a Bookinfo service is reached: `<name>[.$SERVICES_DOMAIN]:9080`, with `<NAME>_HOSTNAME` and
 * `<NAME>_SERVICE_PORT` overriding host and port (as the original does).
 */
export function serviceEndpoint(name: string): Endpoint {
  const upper = name.toUpperCase()
  const domain = nonEmpty(process.env.SERVICES_DOMAIN)
  const host = nonEmpty(process.env[`${upper}_HOSTNAME`]) ?? (domain ? `${name}.${domain}` : name)
  const rawPort = nonEmpty(process.env[`${upper}_SERVICE_PORT`])
  const port = rawPort === undefined ? 9080 : Number(rawPort)
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`invalid ${upper}_SERVICE_PORT: ${rawPort}`)
  return { scheme: 'http', host, port }
}

/** `host[:port]` as it appears in a URL and in the Host header (default ports omitted). */
export function authority(ep: Endpoint): string {
  const host = ep.host.includes(':') ? `[${ep.host}]` : ep.host
  const defaultPort = ep.scheme === 'https' ? 443 : 80
  return ep.port === defaultPort ? host : `${host}:${ep.port}`
}

interface Proxy {
  host: string
  port: number
}

function proxyFromEnv(): Proxy | undefined {
  const raw = nonEmpty(process.env.HTTP_PROXY) ?? nonEmpty(process.env.http_proxy)
  if (raw === undefined) return undefined
  const url = new URL(raw.includes('://') ? raw : `http://${raw}`)
  if (url.protocol !== 'http:') throw new Error(`HTTP_PROXY must be an http:// URL, got ${raw}`)
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port === '' ? 80 : Number(url.port) }
}

function bypassesProxy(host: string): boolean {
  const list = nonEmpty(process.env.NO_PROXY) ?? nonEmpty(process.env.no_proxy)
  if (list === undefined) return false
  const name = host.toLowerCase()
  return list.split(',').some((entry) => {
    const e = entry
      .trim()
      .toLowerCase()
      .replace(/^\*?\./, '')
    if (e === '') return false
    return e === '*' || name === e || name.endsWith(`.${e}`)
  })
}

const proxy = proxyFromEnv()
const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 128 })
const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 32 })

export interface UpstreamResponse {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

export class UpstreamError extends Error {
  constructor(
    message: string,
    readonly timedOut = false,
  ) {
    super(message)
    this.name = 'UpstreamError'
  }
}

export interface CallOptions {
  method?: string
  headers?: Record<string, string>
  body?: string | Buffer
  /** Whole-exchange deadline: connect, request, response head and body. */
  timeoutMs: number
  /** Largest response body accepted. */
  maxBody?: number
}

/**
 * One HTTP exchange with `ep`. Plain-HTTP calls go to the sidecar when `HTTP_PROXY` is set, as
 * `GET http://details:9080/details/0` with `Host: details:9080`; otherwise straight to the endpoint.
 * Rejects with UpstreamError on connection errors and on the deadline; any status code resolves.
 */
export function callUpstream(ep: Endpoint, path: string, opts: CallOptions): Promise<UpstreamResponse> {
  const hostHeader = authority(ep)
  const headers: Record<string, string> = { ...opts.headers, host: hostHeader }
  if (opts.body !== undefined) headers['content-length'] = String(Buffer.byteLength(opts.body))
  const viaProxy = ep.scheme === 'http' && proxy !== undefined && !bypassesProxy(ep.host)
  const options: http.RequestOptions = {
    method: opts.method ?? 'GET',
    headers,
    ...(viaProxy
      ? { host: proxy.host, port: proxy.port, path: `http://${hostHeader}${path}` }
      : { host: ep.host, port: ep.port, path }),
  }
  const maxBody = opts.maxBody ?? 4 * 1024 * 1024
  return new Promise((resolve, reject) => {
    let settled = false
    let current: http.ClientRequest | undefined
    const finish = (err: Error | undefined, value?: UpstreamResponse): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (err) reject(err instanceof UpstreamError ? err : new UpstreamError(err.message))
      else resolve(value!)
    }
    const timer = setTimeout(() => {
      const err = new UpstreamError(
        `${options.method} http://${hostHeader}${path} timed out after ${opts.timeoutMs} ms`,
        true,
      )
      finish(err)
      current?.destroy(err)
    }, opts.timeoutMs)

    // A pooled keep-alive connection the peer closed meanwhile fails at once with ECONNRESET: that is not an
    // attempt at the service, so the request goes out again on another connection (within the same deadline).
    const send = (staleLeft: number): void => {
      const req =
        ep.scheme === 'https' && !viaProxy
          ? https.request({ ...options, agent: httpsAgent, servername: ep.host })
          : http.request({ ...options, agent: httpAgent })
      current = req
      let answered = false
      req.on('response', (res) => {
        answered = true
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (chunk: Buffer) => {
          size += chunk.length
          if (size > maxBody) {
            finish(new UpstreamError(`response from ${hostHeader} over ${maxBody} bytes`))
            req.destroy()
            return
          }
          chunks.push(chunk)
        })
        res.on('end', () =>
          finish(undefined, {
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        )
        res.on('error', (err) => finish(err))
        res.on('aborted', () => finish(new UpstreamError(`response from ${hostHeader} aborted`)))
      })
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (!settled && !answered && req.reusedSocket && err.code === 'ECONNRESET' && staleLeft > 0) {
          send(staleLeft - 1)
          return
        }
        finish(err)
      })
      req.end(opts.body)
    }
    send(3)
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics

/** A Prometheus counter with labels. */
export class Counter {
  private readonly values = new Map<string, number>()

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
  ) {}

  inc(labels: Record<string, string> = {}, by = 1): void {
    const key = this.labelNames.map((l) => `${l}="${escapeLabel(labels[l] ?? '')}"`).join(',')
    this.values.set(key, (this.values.get(key) ?? 0) + by)
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`]
    if (this.values.size === 0 && this.labelNames.length === 0) lines.push(`${this.name} 0`)
    for (const [key, value] of this.values)
      lines.push(key === '' ? `${this.name} ${value}` : `${this.name}{${key}} ${value}`)
    return `${lines.join('\n')}\n`
  }
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

// ---------------------------------------------------------------------------------------------------------------
// Server

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void | Promise<void>

export interface ServiceOptions {
  app: string
  version: string
  handler: Handler
  /** Called for each finished request with its status (for request counters). */
  onRequest?: (req: http.IncomingMessage, url: URL, status: number) => void
}

/** How long a graceful exit waits for in-flight requests before giving up. */
const DRAIN_MS = 5000

/**
 * Listens on `127.0.0.1:$PORT`, logs one line per request (time, method, path, status, ms, then x-request-id and
 * end-user when present) and exits cleanly on SIGTERM/SIGINT. Prints `<app> <version> listening on 127.0.0.1:<port>`
 * when ready.
 */
export function startService(opts: ServiceOptions): http.Server {
  const server = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    const started = process.hrtime.bigint()
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://localhost')
    } catch {
      url = new URL('http://localhost/')
    }
    res.on('close', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6
      const status = res.writableFinished ? String(res.statusCode) : `${res.statusCode}(aborted)`
      let extra = ''
      for (const name of ['x-request-id', 'end-user']) {
        const value = req.headers[name]
        if (value !== undefined) extra += ` ${name}=${JSON.stringify(String(value))}`
      }
      console.log(`${new Date().toISOString()} ${req.method} ${req.url} ${status} ${ms.toFixed(1)}ms${extra}`)
      opts.onRequest?.(req, url, res.statusCode)
    })
    Promise.resolve()
      .then(() => opts.handler(req, res, url))
      .catch((err: unknown) => {
        console.error(`${opts.app}: ${req.method} ${req.url} failed: ${err instanceof Error ? err.stack : err}`)
        if (res.headersSent) res.destroy()
        else if (err instanceof BodyTooLargeError) sendJson(res, 413, { error: 'request body too large' })
        else sendJson(res, 500, { error: 'internal error' })
      })
  })
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
    else socket.destroy()
  })

  let stopping = false
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      console.log(`${opts.app}: second ${signal}, exiting now`)
      process.exit(1)
    }
    stopping = true
    console.log(`${opts.app} ${opts.version} received ${signal}, shutting down`)
    server.close(() => {
      httpAgent.destroy()
      httpsAgent.destroy()
      process.exit(0)
    })
    // connections busy now become idle once their response is written: close them as they do
    server.closeIdleConnections()
    setInterval(() => server.closeIdleConnections(), 50).unref()
    setTimeout(() => {
      console.log(`${opts.app}: requests still running after ${DRAIN_MS} ms, exiting`)
      process.exit(0)
    }, DRAIN_MS).unref()
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)

  server.on('error', (err) => {
    console.error(`${opts.app}: ${err.message}`)
    process.exit(1)
  })
  server.listen(listenPort(), '127.0.0.1', () => {
    const { port } = server.address() as AddressInfo
    console.log(`${opts.app} ${opts.version} listening on 127.0.0.1:${port}`)
  })
  return server
}
