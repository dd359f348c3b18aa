/** Real backends on loopback for tests: an HTTP/1.1 server that records what reaches it, and raw TCP servers. */
import * as http from 'node:http'
import * as net from 'node:net'
import type { AddressInfo } from 'node:net'

export interface Backend {
  port: number
  /** requests that reached the backend: method, url, headers */
  requests: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[]
  /** raw bytes received on all connections */
  bytes: () => number
  close(): Promise<void>
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void

const defaultHandler: Handler = (req, res, body) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }))
}

export async function startBackend(handler: Handler = defaultHandler): Promise<Backend> {
  const requests: Backend['requests'] = []
  let bytes = 0
  const sockets = new Set<net.Socket>()
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('latin1')
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      handler(req, res, body)
    })
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('data', (d) => (bytes += d.length))
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    bytes: () => bytes,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  }
}

/** A TCP server whose every connection is handled by `onConn` (for hostile upstreams and TCP proxy tests). */
export async function startRawServer(
  onConn: (s: net.Socket) => void,
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    onConn(s)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  }
}

/** Sends raw bytes and collects everything the server sends until it closes (or `timeoutMs`). */
export function rawExchange(
  port: number,
  data: string | Buffer,
  timeoutMs = 3000,
): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let done = false
    const finish = (closed: boolean) => {
      if (done) return
      done = true
      clearTimeout(t)
      s.destroy()
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed })
    }
    const t = setTimeout(() => finish(false), timeoutMs)
    s.on('data', (d) => chunks.push(d))
    s.on('close', () => finish(true))
    s.on('error', () => finish(true))
    s.write(data)
  })
}

/** A port the OS says is free right now (bind 0, read, close). */
export async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as AddressInfo).port
  await new Promise((r) => s.close(r))
  return port
}

/**
 * A GET on 127.0.0.1:port with the given Host (a sidecar's outbound port routes by it); resolves with the status
 * and body, rejects on a connection error or after 10 s.
 */
export function getWithHost(port: number, host: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}
