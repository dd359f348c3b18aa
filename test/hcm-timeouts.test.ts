/**
 * The HTTP connection manager's timeouts through a real `loom proxy`: request_headers_timeout (a slowloris head),
 * request_timeout (a slow body), stream_idle_timeout and a route's idle_timeout (a stalled request, a stalled
 * upstream), drain_timeout (connections still busy when the drain is over). Each case measures when the proxy
 * acted; the stats and response flags it counted are checked against Envoy's names.
 */
import assert from 'node:assert/strict'
import * as http2 from 'node:http2'
import * as net from 'node:net'
import { after, before, describe, test } from 'node:test'
import { F, frame, hpack, headersFrame, RawH2, requestHeaders, T } from './helpers/h2raw.js'
import { adminAddress, hcm, listener, type RunningProxy, startProxy, stat, staticCluster } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

let proxy: RunningProxy
let backend: Backend

function routes(extra: unknown[] = []): unknown {
  return {
    name: 'local',
    virtual_hosts: [
      {
        name: 'all',
        domains: ['*'],
        routes: [...extra, { match: { prefix: '/' }, route: { cluster: 'backend', timeout: '0s' } }],
      },
    ],
  }
}

before(async () => {
  backend = await startBackend((req, res, body) => {
    if (req.url?.startsWith('/hang')) return // never answered
    if (req.url?.startsWith('/stall')) {
      // the response starts, then nothing more
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first part\n')
      return
    }
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ url: req.url, bytes: body.length }))
  })
  const h = (prefix: string, extra: Record<string, unknown>, routeExtra: unknown[] = []) =>
    hcm(routes(routeExtra), { stat_prefix: prefix, ...extra })
  proxy = await startProxy({
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [
        listener('hdr', h('hdr', { request_headers_timeout: '0.5s' })),
        listener('req', h('req', { request_timeout: '1s' })),
        listener(
          'idle',
          h('idle', { stream_idle_timeout: '0.5s' }, [
            {
              match: { prefix: '/hang-route-idle' },
              route: { cluster: 'backend', timeout: '0s', idle_timeout: '1.2s' },
            },
            { match: { prefix: '/hang-no-idle' }, route: { cluster: 'backend', timeout: '3s', idle_timeout: '0s' } },
          ]),
        ),
        listener('drain', h('drain', { drain_timeout: '0.5s' })),
        listener(
          'maxdur',
          h('maxdur', { common_http_protocol_options: { max_connection_duration: '0.5s' }, drain_timeout: '0.5s' }),
        ),
      ],
      clusters: [staticCluster('backend', [backend.port])],
    },
  })
})

after(async () => {
  await proxy?.stop()
  await backend?.close()
})

/** A raw HTTP/1.1 connection: what the proxy sent, and when it closed the connection. */
interface Raw {
  socket: net.Socket
  text(): string
  /** resolves with the time the proxy closed the connection */
  closed: Promise<number>
}

async function connect(name: string): Promise<Raw> {
  const socket = net.connect(proxy.ports[name]!, '127.0.0.1')
  let text = ''
  socket.on('data', (d) => (text += d.toString('latin1')))
  socket.on('error', () => {})
  const closed = new Promise<number>((r) => socket.once('close', () => r(performance.now())))
  await new Promise((r) => socket.once('connect', r))
  return { socket, text: () => text, closed }
}

/** Writes `parts` one every `everyMs` until the connection closes; returns the number written. */
function trickle(s: net.Socket, parts: string[], everyMs: number): { stop(): number } {
  let i = 0
  const t = setInterval(() => {
    if (s.destroyed || i >= parts.length) return
    s.write(parts[i++]!)
  }, everyMs)
  return {
    stop() {
      clearInterval(t)
      return i
    },
  }
}

function h2connect(name: string): http2.ClientHttp2Session {
  const s = http2.connect(`http://127.0.0.1:${proxy.ports[name]}`)
  s.on('error', () => {})
  return s
}

/** An HTTP/2 request: status, body, the stream's RST code, and when the response headers came. */
function h2request(
  s: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: (req: http2.ClientHttp2Stream) => void,
): Promise<{ status: number; body: string; rstCode: number; at: number; headers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve) => {
    const req = s.request(headers, { endStream: body === undefined })
    let status = 0
    let at = 0
    let text = ''
    let h: http2.IncomingHttpHeaders = {}
    req.setEncoding('latin1')
    req.on('response', (r) => {
      status = Number(r[':status'])
      h = r
      at = performance.now()
    })
    req.on('data', (c: string) => (text += c))
    req.on('error', () => {})
    req.on('close', () => resolve({ status, body: text, rstCode: req.rstCode ?? 0, at, headers: h }))
    body?.(req)
  })
}

const figures: string[] = []

describe('HTTP connection manager timeouts', () => {
  after(() => {
    if (figures.length > 0) console.log(`  measured: ${figures.join('; ')}`)
  })

  test('request_headers_timeout: an HTTP/1.1 head trickled one header line every 200 ms gets 408 at the timeout, and the connection is closed', async () => {
    const c = await connect('hdr')
    const t0 = performance.now()
    c.socket.write('GET /slow-head HTTP/1.1\r\nHost: a\r\n')
    const lines = Array.from({ length: 50 }, (_, i) => `X-Slow-${i}: v\r\n`)
    const w = trickle(c.socket, lines, 200)
    const closedAt = await c.closed
    const sent = w.stop()
    const took = closedAt - t0
    figures.push(`slowloris head cut after ${Math.round(took)} ms (${sent} header lines)`)
    assert.match(c.text(), /^HTTP\/1\.1 408 /)
    assert.match(c.text(), /x-loom-reason: request_header_timeout/)
    assert.match(c.text(), /connection: close/)
    assert.ok(took >= 450 && took < 1500, `took ${took} ms`)
    assert.equal(backend.requests.filter((r) => r.url === '/slow-head').length, 0, 'nothing reached the upstream')
    assert.equal(await stat(proxy.admin, 'http.hdr.downstream_rq_header_timeout'), 1)
  })

  test('request_headers_timeout: heads that arrive whole, and keep-alive time between requests, are not cut', async () => {
    const c = await connect('hdr')
    c.socket.write('GET /a HTTP/1.1\r\nHost: a\r\n\r\n')
    while (!c.text().includes('"url":"/a"')) await new Promise((r) => c.socket.once('data', r))
    // idle on the kept-alive connection for longer than the timeout: that is idle_timeout's business
    await new Promise((r) => setTimeout(r, 700))
    // a head in two reads within the timeout
    c.socket.write('GET /b HTTP/1.1\r\n')
    await new Promise((r) => setTimeout(r, 100))
    c.socket.write('Host: a\r\n\r\n')
    while (!c.text().includes('"url":"/b"')) await new Promise((r) => c.socket.once('data', r))
    assert.ok(!c.socket.destroyed, 'the connection stays')
    c.socket.destroy()
    assert.equal(await stat(proxy.admin, 'http.hdr.downstream_rq_header_timeout'), 1, 'only the slowloris case')
  })

  test('request_headers_timeout on HTTP/2: HEADERS, then one CONTINUATION every 200 ms; the unanswerable PING probe closes the connection at the timeout', async () => {
    const c = await RawH2.connect(proxy.ports.hdr!)
    assert.ok(await c.until(() => c.frames.some((f) => f.type === T.SETTINGS)), 'no SETTINGS from the proxy')
    // a client inside a header block may send nothing but CONTINUATION: it cannot answer a PING
    c.autoAck = false
    const before = await stat(proxy.admin, 'http.hdr.downstream_rq_header_timeout')
    const t0 = performance.now()
    c.write(headersFrame(1, requestHeaders('/slow-head-h2'), { endHeaders: false }))
    let sent = 0
    const t = setInterval(() => {
      if (sent < 7) c.write(frame(T.CONTINUATION, 0, 1, hpack([[`x-slow-${sent++}`, 'v']])))
    }, 200)
    assert.ok(await c.until(() => c.closed, 5000), 'not closed')
    clearInterval(t)
    const took = performance.now() - t0
    figures.push(`HTTP/2 slowloris head closed after ${Math.round(took)} ms (${sent} CONTINUATION frames)`)
    // before nghttp2's own limit (the ninth CONTINUATION frame, which this client never sends)
    assert.ok(took >= 450 && took < 1300, `took ${took} ms`)
    assert.ok(
      c.frames.some((f) => f.type === T.PING && (f.flags & F.ACK) === 0),
      'the proxy sent a PING',
    )
    assert.equal(c.goawayCode ?? 0, 0, 'GOAWAY NO_ERROR (or none)')
    assert.equal(await stat(proxy.admin, 'http.hdr.downstream_rq_header_timeout'), before + 1)
    assert.equal(backend.requests.filter((r) => r.url === '/slow-head-h2').length, 0, 'nothing reached the upstream')
  })

  test('request_headers_timeout on HTTP/2: a client that answers PINGs keeps its connection through requests spread over 3 timeouts', async () => {
    const s = h2connect('hdr')
    for (let i = 0; i < 6; i++) {
      const r = await h2request(s, { ':path': `/spread/${i}` })
      assert.equal(r.status, 200)
      await new Promise((res) => setTimeout(res, 250))
    }
    assert.ok(!s.closed && !s.destroyed, 'the session is still open')
    s.close()
  })

  test('request_timeout: an HTTP/1.1 body trickled one byte every 100 ms gets 408 at the timeout, and the connection is closed', async () => {
    const c = await connect('req')
    const t0 = performance.now()
    c.socket.write('POST /slow-body HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n')
    const w = trickle(
      c.socket,
      Array.from({ length: 1000 }, () => 'x'),
      100,
    )
    const closedAt = await c.closed
    w.stop()
    const took = closedAt - t0
    figures.push(`slow HTTP/1.1 body cut after ${Math.round(took)} ms`)
    assert.match(c.text(), /^HTTP\/1\.1 408 /)
    assert.match(c.text(), /x-loom-reason: request_overall_timeout/)
    assert.match(c.text(), /connection: close/)
    assert.ok(took >= 950 && took < 2000, `took ${took} ms`)
    assert.equal(await stat(proxy.admin, 'http.req.downstream_rq_timeout'), 1)
  })

  test('request_timeout: an HTTP/2 body trickled every 100 ms gets 408, then RST_STREAM NO_ERROR; the connection stays', async () => {
    const s = h2connect('req')
    const t0 = performance.now()
    let timer: NodeJS.Timeout | undefined
    const r = await h2request(s, { ':method': 'POST', ':path': '/slow-body-h2' }, (req) => {
      timer = setInterval(() => {
        if (!req.destroyed && !req.closed) req.write('x')
      }, 100)
    })
    clearInterval(timer)
    figures.push(`slow HTTP/2 body: 408 after ${Math.round(r.at - t0)} ms`)
    assert.equal(r.status, 408)
    assert.equal(r.headers['x-loom-reason'], 'request_overall_timeout')
    assert.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR)
    assert.ok(r.at - t0 >= 950 && r.at - t0 < 2000, `took ${r.at - t0} ms`)
    // the session is still usable
    const ok = await h2request(s, { ':path': '/after' })
    assert.equal(ok.status, 200)
    s.close()
    assert.equal(await stat(proxy.admin, 'http.req.downstream_rq_timeout'), 2)
  })

  test('request_timeout does not apply once the request is in: a fast POST to a slow-enough upstream is answered', async () => {
    const c = await connect('req')
    c.socket.write('POST /fast HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc')
    while (!c.text().includes('"bytes":3')) await new Promise((r) => c.socket.once('data', r))
    assert.match(c.text(), /^HTTP\/1\.1 200 /)
    c.socket.destroy()
  })

  test('stream_idle_timeout: a request body that stops gets 408 SI and the connection is closed', async () => {
    const c = await connect('idle')
    const t0 = performance.now()
    c.socket.write('POST /stalled HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc')
    const closedAt = await c.closed
    const took = closedAt - t0
    figures.push(`stalled request body: 408 after ${Math.round(took)} ms`)
    assert.match(c.text(), /^HTTP\/1\.1 408 /)
    assert.match(c.text(), /x-loom-reason: stream_idle_timeout/)
    assert.ok(took >= 450 && took < 1500, `took ${took} ms`)
  })

  test('stream_idle_timeout: an upstream that never answers a complete request gets 504 SI (Envoy: 504 once the request is in), HTTP/1.1 and HTTP/2', async () => {
    const c = await connect('idle')
    const t0 = performance.now()
    c.socket.write('GET /hang-1 HTTP/1.1\r\nHost: a\r\n\r\n')
    while (!c.text().includes('\r\n\r\n')) await new Promise((r) => c.socket.once('data', r))
    const took = performance.now() - t0
    assert.match(c.text(), /^HTTP\/1\.1 504 /)
    assert.match(c.text(), /x-loom-reason: stream_idle_timeout/)
    assert.ok(took >= 450 && took < 1500, `took ${took} ms`)
    c.socket.destroy()
    const s = h2connect('idle')
    const r = await h2request(s, { ':path': '/hang-2' })
    s.close()
    assert.equal(r.status, 504)
    assert.equal(r.headers['x-loom-reason'], 'stream_idle_timeout')
  })

  test('stream_idle_timeout: a response that stops after its first bytes is reset (HTTP/1.1: the connection is closed mid-body)', async () => {
    const c = await connect('idle')
    c.socket.write('GET /stall HTTP/1.1\r\nHost: a\r\n\r\n')
    await c.closed
    assert.match(c.text(), /^HTTP\/1\.1 200 /)
    assert.match(c.text(), /first part/)
    assert.ok(!c.text().includes('\r\n0\r\n\r\n'), 'the chunked body was not ended')
  })

  test("a route's idle_timeout overrides stream_idle_timeout (1.2 s instead of 0.5 s; 0 disables it)", async () => {
    const c = await connect('idle')
    const t0 = performance.now()
    c.socket.write('GET /hang-route-idle HTTP/1.1\r\nHost: a\r\n\r\n')
    while (!c.text().includes('\r\n\r\n')) await new Promise((r) => c.socket.once('data', r))
    const took = performance.now() - t0
    figures.push(`route idle_timeout 1.2 s fired after ${Math.round(took)} ms`)
    assert.match(c.text(), /^HTTP\/1\.1 504 /)
    assert.match(c.text(), /stream_idle_timeout/)
    assert.ok(took >= 1150 && took < 2200, `took ${took} ms`)
    c.socket.destroy()
    // idle_timeout 0: only the route timeout (3 s) ends it
    const d = await connect('idle')
    const t1 = performance.now()
    d.socket.write('GET /hang-no-idle HTTP/1.1\r\nHost: a\r\n\r\n')
    while (!d.text().includes('\r\n\r\n')) await new Promise((r) => d.socket.once('data', r))
    assert.match(d.text(), /x-loom-reason: upstream_timeout/)
    assert.ok(performance.now() - t1 >= 2900)
    d.socket.destroy()
    // /hang-1, /hang-2, /hang-route-idle (504), /stalled (408), /stall (reset)
    assert.equal(await stat(proxy.admin, 'http.idle.downstream_rq_idle_timeout'), 5)
    assert.equal(await stat(proxy.admin, 'http.idle.response_flag.SI'), 5)
  })

  test('max_connection_duration: an idle HTTP/1.1 connection is closed at 0.5 s; a busy one drains and is closed drain_timeout later; HTTP/2 gets GOAWAY', async () => {
    const t0 = performance.now()
    // kept alive after one request (a connection that has sent nothing yet is the listener's, under idle_timeout)
    const idle = await connect('maxdur')
    idle.socket.write('GET /one HTTP/1.1\r\nHost: a\r\n\r\n')
    const busy = await connect('maxdur')
    busy.socket.write('GET /hang-maxdur HTTP/1.1\r\nHost: a\r\n\r\n')
    const s = h2connect('maxdur')
    // an idle session is closed at once; node:http2 sends its GOAWAY as it closes
    let sawGoaway = false
    s.once('goaway', () => (sawGoaway = true))
    const goaway = new Promise<number>((r) => s.once('close', () => r(performance.now())))
    const [idleAt, busyAt, goawayAt] = await Promise.all([idle.closed, busy.closed, goaway])
    assert.match(idle.text(), /"url":"\/one"/)
    assert.ok(sawGoaway, 'the HTTP/2 client saw a GOAWAY')
    figures.push(
      `max_connection_duration 0.5 s: idle closed at ${Math.round(idleAt - t0)} ms, busy at ${Math.round(busyAt - t0)} ms, GOAWAY at ${Math.round(goawayAt - t0)} ms`,
    )
    assert.ok(idleAt - t0 >= 450 && idleAt - t0 < 1200, `idle closed after ${idleAt - t0} ms`)
    assert.ok(goawayAt - t0 >= 450 && goawayAt - t0 < 1200, `GOAWAY after ${goawayAt - t0} ms`)
    assert.ok(busyAt - t0 >= 950 && busyAt - t0 < 2000, `busy closed after ${busyAt - t0} ms`)
    assert.equal(await stat(proxy.admin, 'http.maxdur.downstream_cx_max_duration_reached'), 3)
  })

  // last: a drain stops every listener of the proxy
  test('drain_timeout: on /drain_listeners a busy HTTP/1.1 connection is closed 0.5 s later, an HTTP/2 one gets GOAWAY then is closed', async () => {
    const c = await connect('drain')
    c.socket.write('GET /hang-drain HTTP/1.1\r\nHost: a\r\n\r\n')
    const s = h2connect('drain')
    let goaway = 0
    s.once('goaway', () => (goaway = performance.now()))
    const h2closed = new Promise<number>((r) => s.once('close', () => r(performance.now())))
    const pending = h2request(s, { ':path': '/hang-drain-h2' })
    while (backend.requests.length === 0 || !backend.requests.some((r) => r.url === '/hang-drain-h2')) {
      await new Promise((r) => setTimeout(r, 20))
    }
    assert.ok(backend.requests.some((r) => r.url === '/hang-drain'))
    const t0 = performance.now()
    assert.equal((await fetch(`http://${proxy.admin}/drain_listeners`, { method: 'POST' })).status, 200)
    const [h1At, h2At] = await Promise.all([c.closed, h2closed])
    const r = await pending
    figures.push(`drain: HTTP/1.1 closed after ${Math.round(h1At - t0)} ms, HTTP/2 after ${Math.round(h2At - t0)} ms`)
    assert.ok(goaway > 0 && goaway - t0 < 400, 'GOAWAY at once')
    assert.equal(r.status, 0, 'the hanging request got no response')
    for (const at of [h1At, h2At]) assert.ok(at - t0 >= 450 && at - t0 < 1500, `closed after ${at - t0} ms`)
    assert.equal(await stat(proxy.admin, 'http.drain.downstream_cx_drain_close'), 2)
  })
})
