// The "undici floor": about the least a Node reverse proxy can do. node:http accepts, an undici Pool
// forwards over kept-alive upstream connections, bodies stream both ways with backpressure.
// Usage: node dist/bench/floor.js <listenPort> <backendPort>
import http, { type IncomingHttpHeaders } from 'node:http'
import { Pool } from 'undici'

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade'])
const strip = (h: IncomingHttpHeaders): IncomingHttpHeaders => {
  const out: IncomingHttpHeaders = {}
  for (const k in h) if (!HOP.has(k)) out[k] = h[k]
  return out
}
const pool = new Pool(`http://127.0.0.1:${process.argv[3]}`, { connections: 128, keepAliveTimeout: 60_000 })

const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
  const opts = {
    path: req.url ?? '/',
    method: req.method ?? 'GET',
    headers: strip(req.headers),
    body: hasBody ? req : null,
  }
  pool.dispatch(opts, {
    onRequestStart: (ctl) => res.once('close', () => res.writableFinished || ctl.abort(new Error('client gone'))),
    onResponseStart: (ctl, status, headers) => {
      res.writeHead(status, strip(headers))
      res.on('drain', () => ctl.resume())
    },
    onResponseData: (ctl, chunk) => res.write(chunk) || ctl.pause(),
    onResponseEnd: () => res.end(),
    onResponseError: (_ctl, err) => (res.headersSent ? res.destroy(err) : res.writeHead(502).end()),
  })
})
server.listen(Number(process.argv[2]), '127.0.0.1')
