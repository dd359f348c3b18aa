/**
 * HTTP/2 through a real `loom proxy`: h2c with prior knowledge downstream (node:http2 client) to an HTTP/1.1
 * backend, and HTTP/2 upstream (typed_extension_protocol_options) to an h2c backend from both HTTP/1.1 and HTTP/2
 * clients, with every request multiplexed on one upstream session.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import * as http from 'node:http'
import * as http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { adminAddress, hcm, listener, type RunningProxy, startProxy, staticCluster } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const H2_OPTIONS = {
  'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
    '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
    explicit_http_config: { http2_protocol_options: {} },
  },
}

interface H2Response {
  status: number
  headers: http2.IncomingHttpHeaders
  body: Buffer
}

/** One request on an HTTP/2 session; resolves with the whole response. */
function h2request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer | string,
): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, { endStream: body === undefined })
    const chunks: Buffer[] = []
    let status = 0
    let resHeaders: http2.IncomingHttpHeaders = {}
    req.on('response', (h) => {
      status = Number(h[':status'])
      resHeaders = h
    })
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => resolve({ status, headers: resHeaders, body: Buffer.concat(chunks) }))
    req.on('error', reject)
    if (body !== undefined) req.end(body)
  })
}

function connectH2(port: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`http://127.0.0.1:${port}`)
    s.once('connect', () => resolve(s))
    s.once('error', reject)
  })
}

function closeSession(s: http2.ClientHttp2Session): Promise<void> {
  return new Promise((resolve) => {
    if (s.closed || s.destroyed) return resolve()
    s.close(() => resolve())
  })
}

/** An HTTP/1.1 request with node:http; resolves with status, headers and body. */
function h1request(
  port: number,
  opts: http.RequestOptions,
  body?: Buffer | string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, ...opts }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex')

interface H2Backend {
  port: number
  /** sessions ever opened to this backend */
  sessions: () => number
  /** streams ever received */
  streams: () => number
  /** most streams open at once on one session */
  maxConcurrent: () => number
  /** resolves once `n` /slow streams are being held */
  held: (n: number) => Promise<void>
  /** answers every held /slow stream */
  release: () => void
  close(): Promise<void>
}

/**
 * An h2c backend: answers every stream with a JSON echo of what it saw (method, path, authority, headers, body
 * length and sha256). A path starting with /slow holds the answer until `release()` runs, so streams overlap.
 */
async function startH2Backend(): Promise<H2Backend> {
  const server = http2.createServer()
  const open = new Set<http2.ServerHttp2Session>()
  let sessions = 0
  let streams = 0
  let active = 0
  let maxConcurrent = 0
  let held: (() => void)[] = []
  let waiter: { n: number; resolve: () => void } | null = null
  server.on('session', (s) => {
    sessions++
    open.add(s)
    s.on('close', () => open.delete(s))
  })
  server.on('stream', (stream, headers) => {
    streams++
    active++
    maxConcurrent = Math.max(maxConcurrent, active)
    stream.on('close', () => active--)
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      const body = Buffer.concat(chunks)
      const answer = () => {
        if (stream.destroyed) return
        const plain: Record<string, unknown> = {}
        for (const [k, v] of Object.entries(headers)) if (!k.startsWith(':')) plain[k] = v
        stream.respond({ ':status': 200, 'content-type': 'application/json', 'x-backend': 'h2c' })
        stream.end(
          JSON.stringify({
            method: headers[':method'],
            path: headers[':path'],
            scheme: headers[':scheme'],
            authority: headers[':authority'],
            headers: plain,
            bodyLength: body.length,
            bodySha: sha256(body),
          }),
        )
      }
      if (!String(headers[':path']).startsWith('/slow')) return answer()
      held.push(answer)
      if (waiter !== null && held.length >= waiter.n) waiter.resolve()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as AddressInfo).port,
    sessions: () => sessions,
    streams: () => streams,
    maxConcurrent: () => maxConcurrent,
    held: (n) =>
      new Promise((resolve) => {
        if (held.length >= n) return resolve()
        waiter = { n, resolve }
      }),
    release: () => {
      waiter = null
      const h = held
      held = []
      for (const f of h) f()
    },
    close: () =>
      new Promise((r) => {
        for (const s of open) s.destroy()
        server.close(() => r())
      }),
  }
}

function route(cluster: string): unknown {
  return {
    name: cluster,
    virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster } }] }],
  }
}

let h1Backend: Backend
let h2Backend: H2Backend
let proxy: RunningProxy

before(async () => {
  h1Backend = await startBackend((req, res, body) => {
    res.setHeader('content-type', 'application/json')
    res.setHeader('x-backend', 'h1')
    res.setHeader('set-cookie', ['a=1', 'b=2'])
    res.setHeader('cache-control', 'no-store')
    res.end(
      JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        bodyLength: body.length,
        bodySha: sha256(body),
      }),
    )
  })
  h2Backend = await startH2Backend()
  proxy = await startProxy({
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [listener('to_h1', hcm(route('h1'))), listener('to_h2', hcm(route('h2')))],
      clusters: [
        staticCluster('h1', [h1Backend.port]),
        staticCluster('h2', [h2Backend.port], { typed_extension_protocol_options: H2_OPTIONS }),
      ],
    },
  })
})
after(async () => {
  await proxy?.stop()
  await h1Backend?.close()
  await h2Backend?.close()
})

describe('HTTP/2 downstream (h2c, prior knowledge) to an HTTP/1.1 backend', { timeout: 8000 }, () => {
  let session: http2.ClientHttp2Session
  before(async () => {
    session = await connectH2(proxy.ports.to_h1!)
  })
  after(() => closeSession(session))

  test('GET is translated to HTTP/1.1 with Host from :authority', async () => {
    const before = h1Backend.requests.length
    const r = await h2request(session, { ':method': 'GET', ':path': '/get?x=1&y=%20', 'x-custom': 'v1' })
    assert.equal(r.status, 200)
    const seen = JSON.parse(r.body.toString()) as { method: string; url: string; headers: http.IncomingHttpHeaders }
    assert.equal(seen.method, 'GET')
    assert.equal(seen.url, '/get?x=1&y=%20')
    assert.equal(seen.headers.host, `127.0.0.1:${proxy.ports.to_h1}`)
    assert.equal(seen.headers['x-custom'], 'v1')
    assert.equal(seen.headers['x-forwarded-proto'], 'http')
    assert.ok(seen.headers['x-request-id'], 'x-request-id is generated')
    assert.equal(h1Backend.requests.length, before + 1)
  })

  test('response headers come back as HTTP/2 fields, repeated ones intact, hop-by-hop ones dropped', async () => {
    const r = await h2request(session, { ':method': 'GET', ':path': '/headers' })
    assert.equal(r.status, 200)
    assert.equal(r.headers['content-type'], 'application/json')
    assert.equal(r.headers['x-backend'], 'h1')
    assert.equal(r.headers['cache-control'], 'no-store')
    assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2'])
    // HTTP/1.1 backends answer with keep-alive fields, which HTTP/2 forbids (nghttp2 would refuse the stream)
    assert.equal(r.headers.connection, undefined)
    assert.equal(r.headers['keep-alive'], undefined)
    assert.equal(r.headers['transfer-encoding'], undefined)
  })

  test('POST with a 256 KiB body arrives whole', async () => {
    // text: the HTTP/1.1 test backend hands bodies over as UTF-8 strings
    const body = Buffer.from(randomBytes(192 * 1024).toString('base64'))
    const r = await h2request(
      session,
      { ':method': 'POST', ':path': '/upload', 'content-type': 'application/octet-stream' },
      body,
    )
    assert.equal(r.status, 200)
    const seen = JSON.parse(r.body.toString()) as { method: string; bodyLength: number; bodySha: string }
    assert.equal(seen.method, 'POST')
    assert.equal(seen.bodyLength, body.length)
    assert.equal(seen.bodySha, sha256(body))
  })

  test('POST with content-length keeps it', async () => {
    const r = await h2request(session, { ':method': 'POST', ':path': '/cl', 'content-length': '5' }, 'hello')
    const seen = JSON.parse(r.body.toString()) as { headers: http.IncomingHttpHeaders; bodyLength: number }
    assert.equal(seen.bodyLength, 5)
    assert.equal(seen.headers['content-length'], '5')
  })

  test('50 concurrent streams on one connection all get their own answer', async () => {
    const n = 50
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        h2request(session, { ':method': 'POST', ':path': `/c/${i}`, 'x-i': String(i) }, `body-${i}`),
      ),
    )
    for (let i = 0; i < n; i++) {
      const r = results[i]!
      assert.equal(r.status, 200)
      const seen = JSON.parse(r.body.toString()) as { url: string; headers: http.IncomingHttpHeaders; bodySha: string }
      assert.equal(seen.url, `/c/${i}`)
      assert.equal(seen.headers['x-i'], String(i))
      assert.equal(seen.bodySha, sha256(`body-${i}`))
    }
  })

  test('a :path that is not origin-form is refused on its stream; the session stays usable', async () => {
    const before = h1Backend.requests.length
    const bad = await h2request(session, { ':method': 'GET', ':path': 'no-slash' }).catch((e: Error) => e)
    // nghttp2 resets such a stream with PROTOCOL_ERROR before the proxy sees it; the proxy's own check answers 400
    if (bad instanceof Error) assert.match(bad.message, /NGHTTP2_PROTOCOL_ERROR/)
    else assert.equal(bad.status, 400)
    assert.equal(h1Backend.requests.length, before, 'nothing reached the backend')
    const ok = await h2request(session, { ':method': 'GET', ':path': '/after' })
    assert.equal(ok.status, 200)
  })
})

describe('HTTP/2 upstream (explicit_http_config.http2_protocol_options) to an h2c backend', { timeout: 8000 }, () => {
  test('HTTP/1.1 → HTTP/2: GET and POST, pseudo-headers from the HTTP/1.1 request', async () => {
    const agent = new http.Agent({ keepAlive: true })
    try {
      const port = proxy.ports.to_h2!
      const g = await h1request(port, { path: '/h1/get?q=1', headers: { 'x-custom': 'v', host: 'svc.example' }, agent })
      assert.equal(g.status, 200)
      assert.equal(g.headers['x-backend'], 'h2c')
      const gs = JSON.parse(g.body.toString()) as Record<string, unknown> & { headers: Record<string, unknown> }
      assert.equal(gs.method, 'GET')
      assert.equal(gs.path, '/h1/get?q=1')
      assert.equal(gs.authority, 'svc.example')
      assert.equal(gs.scheme, 'http')
      assert.equal(gs.headers['x-custom'], 'v')
      assert.equal(gs.headers.connection, undefined)

      const body = randomBytes(100_000)
      const p = await h1request(port, { method: 'POST', path: '/h1/post', agent }, body)
      const ps = JSON.parse(p.body.toString()) as { method: string; bodyLength: number; bodySha: string }
      assert.equal(ps.method, 'POST')
      assert.equal(ps.bodyLength, body.length)
      assert.equal(ps.bodySha, sha256(body))
    } finally {
      agent.destroy()
    }
  })

  test('HTTP/1.1 → HTTP/2: 20 concurrent client connections share one upstream session', async () => {
    const agent = new http.Agent({ keepAlive: false, maxSockets: 20 })
    try {
      const sessionsBefore = h2Backend.sessions()
      const all = Promise.all(
        Array.from({ length: 20 }, (_, i) => h1request(proxy.ports.to_h2!, { path: `/slow/h1/${i}`, agent })),
      )
      // all 20 are held open at the backend at the same time, before any is answered
      await h2Backend.held(20)
      assert.ok(h2Backend.maxConcurrent() >= 20, `streams were concurrent (max ${h2Backend.maxConcurrent()})`)
      h2Backend.release()
      const results = await all
      results.forEach((r, i) => {
        assert.equal(r.status, 200)
        assert.equal((JSON.parse(r.body.toString()) as { path: string }).path, `/slow/h1/${i}`)
      })
      assert.equal(h2Backend.sessions(), Math.max(sessionsBefore, 1), 'one upstream session carried all 20')
    } finally {
      agent.destroy()
    }
  })

  test('HTTP/2 → HTTP/2: 50 concurrent streams, one upstream session', async () => {
    const session = await connectH2(proxy.ports.to_h2!)
    try {
      const n = 50
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          h2request(session, { ':method': 'POST', ':path': `/h2/${i}`, 'x-i': String(i) }, `payload-${i}`),
        ),
      )
      results.forEach((r, i) => {
        assert.equal(r.status, 200)
        assert.equal(r.headers['x-backend'], 'h2c')
        const seen = JSON.parse(r.body.toString()) as { path: string; headers: Record<string, string>; bodySha: string }
        assert.equal(seen.path, `/h2/${i}`)
        assert.equal(seen.headers['x-i'], String(i))
        assert.equal(seen.bodySha, sha256(`payload-${i}`))
      })
      assert.equal(h2Backend.sessions(), 1, 'every request of this file went over a single upstream HTTP/2 session')
    } finally {
      await closeSession(session)
    }
  })
})
