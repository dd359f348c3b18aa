/**
 * HTTP/2 streams whose response is complete before their request (RFC 9113 §8.1): a backend that answers a POST
 * before reading its body, as nginx's `return` does. The downstream HTTP/2 codec must end such a stream (RST_STREAM
 * NO_ERROR once the response is out) and the upstream HTTP/2 codec must stop sending the request, so that neither
 * side keeps the stream open: left open, the streams add up in the session until node:http2 refuses new ones
 * (ENHANCE_YOUR_CALM) and every later request on the session fails. Two real proxies: A (HTTP/1.1 in, HTTP/2 out)
 * and B (HTTP/2 in, HTTP/1.1 out to the backend); B allows few concurrent streams so that a leak shows at once.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import * as http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { adminAddress, hcm, listener, type RunningProxy, startProxy, staticCluster, stat } from './helpers/proxy.js'

const H2_OPTIONS = {
  'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
    '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
    explicit_http_config: { http2_protocol_options: {} },
  },
}
/** B's limit: more streams left open than this and new ones are refused */
const MAX_STREAMS = 8
/** requests per test: several times MAX_STREAMS */
const N = 40
const EARLY = 'early\n'

function route(cluster: string): unknown {
  return {
    name: cluster,
    virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster } }] }],
  }
}

interface Server {
  port: number
  close(): Promise<void>
}

/** HTTP/1.1: every request answered at once, its body not read first. */
async function startEarlyH1(): Promise<Server> {
  const server = http.createServer((_req, res) => {
    res.setHeader('content-type', 'text/plain')
    res.end(EARLY)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

/** h2c: every stream answered at once (END_STREAM), its request left open; counts streams that close. */
async function startEarlyH2(): Promise<
  Server & { opened: () => number; closed: () => number; allClosed: () => Promise<void> }
> {
  let opened = 0
  let closed = 0
  let waiter: (() => void) | null = null
  const sessions = new Set<http2.ServerHttp2Session>()
  const server = http2.createServer()
  server.on('session', (s) => {
    sessions.add(s)
    s.on('close', () => sessions.delete(s))
  })
  server.on('stream', (stream) => {
    opened++
    stream.on('error', () => {})
    stream.on('close', () => {
      if (++closed === opened && waiter !== null) waiter()
    })
    // node:http2 would reset the stream itself once the response is out (close(NO_ERROR)); this server waits for
    // the rest of the request instead, as RFC 9113 allows, so only the client can end the stream
    stream.close = () => stream
    stream.respond({ ':status': 200, 'content-type': 'text/plain' })
    stream.end(EARLY)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as AddressInfo).port,
    opened: () => opened,
    closed: () => closed,
    allClosed: () =>
      new Promise((resolve) => {
        if (closed === opened) return resolve()
        waiter = resolve
      }),
    close: () =>
      new Promise((r) => {
        for (const s of sessions) s.destroy()
        server.close(() => r())
      }),
  }
}

function connectH2(port: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`http://127.0.0.1:${port}`)
    s.once('connect', () => resolve(s))
    s.once('error', reject)
  })
}

/**
 * A POST on an HTTP/2 session that sends part of its body, waits for the whole response, then (with `finish`) the
 * rest. Resolves with the status, body and how the stream closed.
 */
function h2EarlyPost(
  session: http2.ClientHttp2Session,
  finish: boolean,
): Promise<{ status: number; body: string; rstCode: number | undefined }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/upload', 'content-length': '32768' })
    let status = 0
    let body = ''
    req.setEncoding('utf8')
    req.on('response', (h) => {
      status = Number(h[':status'])
    })
    req.on('data', (c: string) => (body += c))
    req.on('end', () => {
      if (finish) req.end(Buffer.alloc(16384, 'b'))
    })
    req.on('error', () => {})
    req.on('close', () =>
      status === 0
        ? reject(new Error(`stream reset, code ${req.rstCode}`))
        : resolve({ status, body, rstCode: req.rstCode }),
    )
    req.write(Buffer.alloc(16384, 'a'))
  })
}

function h2get(session: http2.ClientHttp2Session): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': '/get' })
    let status = 0
    req.on('response', (h) => {
      status = Number(h[':status'])
    })
    req.resume()
    req.on('end', () => resolve(status))
    req.on('error', reject)
  })
}

/** An HTTP/1.1 POST of `size` bytes: `head` bytes first, the rest once the response is complete (or at once). */
function h1Post(
  port: number,
  agent: http.Agent,
  size: number,
  waitForResponse: boolean,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const first = waitForResponse ? 1024 : size
    const req = http.request(
      { host: '127.0.0.1', port, method: 'POST', path: '/upload', agent, headers: { 'content-length': size } },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () => {
          if (waitForResponse) req.end(Buffer.alloc(size - first, 'b'))
          resolve({ status: res.statusCode ?? 0, body })
        })
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    if (waitForResponse) req.write(Buffer.alloc(first, 'a'))
    else req.end(Buffer.alloc(size, 'a'))
  })
}

function h1get(port: number, agent: http.Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/get', agent }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
  })
}

/** Runs `n` tasks, at most `width` at a time. */
async function pool<T>(n: number, width: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n)
  let next = 0
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) {
        const i = next++
        out[i] = await task(i)
      }
    }),
  )
  return out
}

let backend: Server
let h2Backend: Awaited<ReturnType<typeof startEarlyH2>>
/** B: HTTP/2 downstream, the HTTP/1.1 backend upstream */
let b: RunningProxy
/** A: HTTP/1.1 downstream; `to_b` has HTTP/2 upstream to B, `to_h2` to the h2c backend */
let a: RunningProxy

before(async () => {
  backend = await startEarlyH1()
  h2Backend = await startEarlyH2()
  b = await startProxy({
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [
        listener('inbound', hcm(route('app'), { http2_protocol_options: { max_concurrent_streams: MAX_STREAMS } })),
      ],
      clusters: [staticCluster('app', [backend.port])],
    },
  })
  a = await startProxy({
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [listener('to_b', hcm(route('b'))), listener('to_h2', hcm(route('h2')))],
      clusters: [
        staticCluster('b', [b.ports.inbound!], { typed_extension_protocol_options: H2_OPTIONS }),
        staticCluster('h2', [h2Backend.port], { typed_extension_protocol_options: H2_OPTIONS }),
      ],
    },
  })
})
after(async () => {
  await a?.stop()
  await b?.stop()
  await backend?.close()
  await h2Backend?.close()
})

describe('HTTP/2 downstream: the response is complete before the request', { timeout: 20000 }, () => {
  test('the stream is reset with NO_ERROR once the response is out; the session goes on taking streams', async () => {
    const session = await connectH2(b.ports.inbound!)
    try {
      for (let i = 0; i < N; i++) {
        const r = await h2EarlyPost(session, false)
        assert.equal(r.status, 200)
        assert.equal(r.body, EARLY)
        assert.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR)
      }
      assert.equal(await h2get(session), 200)
    } finally {
      session.destroy()
    }
  })

  test('a request sent whole after the early response leaves no stream behind', async () => {
    const session = await connectH2(b.ports.inbound!)
    try {
      const results = await pool(N, 4, () => h2EarlyPost(session, true))
      for (const r of results) assert.equal(r.status, 200)
      assert.equal(await h2get(session), 200)
    } finally {
      session.destroy()
    }
  })
})

describe('HTTP/2 connection window', { timeout: 10000 }, () => {
  test('the downstream session raises its connection window to initial_connection_window_size (256 MiB)', async () => {
    const session = await connectH2(b.ports.inbound!)
    try {
      // the proxy's WINDOW_UPDATE is queued when the session starts, ahead of any response
      assert.equal(await h2get(session), 200)
      assert.equal(session.state.remoteWindowSize, 268435456)
    } finally {
      session.destroy()
    }
  })
})

describe('HTTP/1.1 → A → HTTP/2 → B → HTTP/1.1 backend answering early', { timeout: 30000 }, () => {
  test('POSTs answered before their body is sent: every one 200, then GETs on the same session', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
    try {
      const results = await pool(N, 8, () => h1Post(a.ports.to_b!, agent, 16384, true))
      for (const r of results) assert.deepEqual(r, { status: 200, body: EARLY })
      for (let i = 0; i < MAX_STREAMS * 2; i++) assert.equal(await h1get(a.ports.to_b!, agent), 200)
      assert.equal(await stat(a.admin, 'cluster.b.upstream_cx_total'), 1, 'one HTTP/2 session between A and B')
    } finally {
      agent.destroy()
    }
  })

  test('16 KB POSTs sent whole under concurrency (the benchmark load): no 503, GETs still fine', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 25 })
    try {
      const results = await pool(N * 10, 25, () => h1Post(a.ports.to_b!, agent, 16384, false))
      const bad = results.filter((r) => r.status !== 200)
      assert.equal(bad.length, 0, `non-200 answers: ${bad.map((r) => r.status).join(',')}`)
      for (let i = 0; i < MAX_STREAMS * 2; i++) assert.equal(await h1get(a.ports.to_b!, agent), 200)
    } finally {
      agent.destroy()
    }
  })
})

describe('HTTP/2 upstream: the response is complete before the request', { timeout: 20000 }, () => {
  test('the upstream stream is closed, not left open with the rest of the body unsent', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
    try {
      const results = await pool(N, 4, () => h1Post(a.ports.to_h2!, agent, 16384, true))
      for (const r of results) assert.deepEqual(r, { status: 200, body: EARLY })
      assert.equal(await h1get(a.ports.to_h2!, agent), 200)
      // each upstream stream is closed by A (RST_STREAM) once its response is complete: left open, this never
      // resolves and the test times out
      await h2Backend.allClosed()
      assert.equal(h2Backend.closed(), h2Backend.opened(), 'every backend stream closed')
      assert.ok(h2Backend.opened() >= N + 1)
    } finally {
      agent.destroy()
    }
  })
})
