/**
 * A small httpbin (https://httpbin.org) for Istio's tasks: the endpoints they call, answering as httpbin does.
 *
 *   GET  /                 → a short HTML page listing the endpoints
 *   GET  /headers          → {"headers": {"Host": "...", "User-Agent": "...", ...}} (httpbin's capitalised names)
 *   GET  /ip               → {"origin": "<client address>"}
 *   GET  /user-agent       → {"user-agent": "..."}
 *   GET  /get              → {"args", "headers", "origin", "url"}
 *   ANY  /anything[/...]   → {"args", "data", "files", "form", "headers", "json", "method", "origin", "url"}
 *   ANY  /status/<codes>   → that status, empty body (`/status/200,503`: one of them at random)
 *   ANY  /delay/<seconds>  → /get's body after that long (at most 10 s)
 *
 * Env: PORT (8080; `loom up` sets it).
 */
import * as http from 'node:http'

const MAX_BODY = 1024 * 1024
const MAX_DELAY_S = 10

/** `x-b3-traceid` → `X-B3-Traceid`, as httpbin spells header names. */
export function httpbinName(name: string): string {
  return name
    .split('-')
    .map((w) => (w === '' ? w : w[0]!.toUpperCase() + w.slice(1).toLowerCase()))
    .join('-')
}

/** The request's headers under httpbin's names; repeated headers joined with `,`. */
export function httpbinHeaders(req: http.IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {}
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = httpbinName(req.rawHeaders[i]!)
    const value = req.rawHeaders[i + 1]!
    out[name] = name in out ? `${out[name]},${value}` : value
  }
  return out
}

function origin(req: http.IncomingMessage): string {
  const xff = req.headers['x-forwarded-for']
  const first = (Array.isArray(xff) ? xff[0] : xff)?.split(',')[0]?.trim()
  return first !== undefined && first !== '' ? first : (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '')
}

function args(url: URL): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const key of new Set(url.searchParams.keys())) {
    const all = url.searchParams.getAll(key)
    out[key] = all.length === 1 ? all[0]! : all
  }
  return out
}

function fullUrl(req: http.IncomingMessage): string {
  return `http://${req.headers.host ?? 'localhost'}${req.url ?? '/'}`
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

function readBody(req: http.IncomingMessage): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (d: Buffer) => {
      size += d.length
      if (size > MAX_BODY) {
        req.removeAllListeners('data')
        req.resume()
        resolve(null)
      } else chunks.push(d)
    })
    req.on('end', () => resolve(Buffer.concat(chunks)))
    req.on('error', reject)
  })
}

function getBody(req: http.IncomingMessage, url: URL): Record<string, unknown> {
  return { args: args(url), headers: httpbinHeaders(req), origin: origin(req), url: fullUrl(req) }
}

async function anything(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
  const body = await readBody(req)
  if (body === null) return sendJson(res, 413, { error: 'request body too large' })
  const data = body.toString('utf8')
  const type = String(req.headers['content-type'] ?? '')
  let json: unknown = null
  if (type.includes('json')) {
    try {
      json = JSON.parse(data)
    } catch {
      json = null
    }
  }
  const form: Record<string, string | string[]> = {}
  if (type.startsWith('application/x-www-form-urlencoded')) Object.assign(form, args(new URL(`http://x/?${data}`)))
  sendJson(res, 200, {
    args: args(url),
    data: Object.keys(form).length > 0 ? '' : data,
    files: {},
    form,
    headers: httpbinHeaders(req),
    json,
    method: req.method,
    origin: origin(req),
    url: fullUrl(req),
  })
}

const INDEX = `<!DOCTYPE html>
<html><head><title>httpbin</title></head><body>
<h1>httpbin</h1>
<p>A small HTTP request and response service.</p>
<ul>
<li><a href="/headers">/headers</a></li><li><a href="/ip">/ip</a></li><li><a href="/user-agent">/user-agent</a></li>
<li><a href="/get">/get</a></li><li><a href="/anything">/anything</a></li><li>/status/:code</li><li>/delay/:seconds</li>
</ul>
</body></html>
`

export async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  let url: URL
  try {
    url = new URL(req.url ?? '/', 'http://localhost')
  } catch {
    url = new URL('http://localhost/')
  }
  const path = url.pathname
  if (path === '/anything' || path.startsWith('/anything/')) return anything(req, res, url)
  const status = /^\/status\/([0-9,]+)$/.exec(path)
  if (status !== null) {
    const codes = status[1]!
      .split(',')
      .filter((c) => c !== '')
      .map(Number)
    const code = codes[Math.floor(Math.random() * codes.length)]
    if (code === undefined || code < 100 || code > 599) return sendJson(res, 400, { error: 'invalid status code' })
    res.writeHead(code, { 'content-length': 0 })
    res.end()
    return
  }
  const delay = /^\/delay\/(\d+(?:\.\d+)?)$/.exec(path)
  if (delay !== null) {
    const s = Math.min(Number(delay[1]), MAX_DELAY_S)
    await new Promise((r) => setTimeout(r, s * 1000))
    return sendJson(res, 200, getBody(req, url))
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: 'method not allowed' })
  switch (path) {
    case '/':
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(INDEX) })
      res.end(INDEX)
      return
    case '/headers':
      return sendJson(res, 200, { headers: httpbinHeaders(req) })
    case '/ip':
      return sendJson(res, 200, { origin: origin(req) })
    case '/user-agent':
      return sendJson(res, 200, { 'user-agent': req.headers['user-agent'] ?? '' })
    case '/get':
      return sendJson(res, 200, getBody(req, url))
    default:
      return sendJson(res, 404, { error: 'not found' })
  }
}

export function startHttpbin(port: number, host = '127.0.0.1'): http.Server {
  const server = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      console.error(`httpbin: ${req.method} ${req.url} failed: ${err instanceof Error ? err.stack : err}`)
      if (res.headersSent) res.destroy()
      else sendJson(res, 500, { error: 'internal error' })
    })
  })
  server.listen(port, host)
  return server
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const port = Number(process.env.PORT ?? 8080)
  const server = startHttpbin(port)
  server.on('listening', () => console.log(`httpbin listening on 127.0.0.1:${port}`))
  const stop = () => server.close(() => process.exit(0))
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}
