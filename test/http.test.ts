/**
 * The HTTP/1.1 data path end to end: a real `loom proxy` process between real clients and real backends.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import * as http from 'node:http'
import * as net from 'node:net'
import { after, before, describe, test } from 'node:test'
import {
  adminAddress,
  hcm,
  listener,
  type RunningProxy,
  settledStat,
  startProxy,
  stat,
  staticCluster,
} from './helpers/proxy.js'
import { type Backend, startBackend, startRawServer } from './helpers/servers.js'

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })

function request(
  port: number,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: Buffer | string } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, agent },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(opts.body)
  })
}

describe('routing and local replies', () => {
  let a: Backend
  let b: Backend
  let slow: Backend
  let proxy: RunningProxy
  let port: number
  let closedPort: number

  before(async () => {
    a = await startBackend((req, res) => res.end(`a ${req.url}`))
    b = await startBackend((req, res) => res.end(`b ${req.url}`))
    slow = await startBackend((_req, res) => setTimeout(() => res.end('late'), 2000))
    // a port with nothing listening: bind then close
    const tmp = await startRawServer(() => {})
    closedPort = tmp.port
    await tmp.close()
    const routes = [
      { match: { prefix: '/direct' }, direct_response: { status: 418, body: { inline_string: 'teapot' } } },
      { match: { path: '/old' }, redirect: { path_redirect: '/new', response_code: 'FOUND' } },
      { match: { prefix: '/api/' }, route: { cluster: 'b', prefix_rewrite: '/v2/' } },
      {
        match: { prefix: '/hdr', headers: [{ name: 'x-user', string_match: { exact: 'jason' } }] },
        route: { cluster: 'b' },
      },
      { match: { prefix: '/hdr' }, route: { cluster: 'a' } },
      { match: { prefix: '/slow' }, route: { cluster: 'slow', timeout: '0.2s' } },
      { match: { prefix: '/down' }, route: { cluster: 'down' } },
      { match: { prefix: '/empty' }, route: { cluster: 'empty' } },
      {
        match: { prefix: '/mut' },
        route: { cluster: 'a' },
        request_headers_to_add: [{ header: { key: 'x-added', value: 'yes' } }],
        response_headers_to_add: [{ header: { key: 'x-resp', value: 'r' } }],
        response_headers_to_remove: ['x-powered-by'],
      },
      { match: { prefix: '/' }, route: { cluster: 'a' } },
    ]
    proxy = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        listeners: [
          listener(
            'http',
            hcm({
              name: 'local',
              virtual_hosts: [
                {
                  name: 'only-b',
                  domains: ['b.example', 'b.example:*'],
                  routes: [{ match: { prefix: '/' }, route: { cluster: 'b' } }],
                },
                { name: 'main', domains: ['*'], routes },
              ],
            }),
          ),
        ],
        clusters: [
          staticCluster('a', [a.port]),
          staticCluster('b', [b.port]),
          staticCluster('slow', [slow.port]),
          staticCluster('down', [closedPort]),
          {
            name: 'empty',
            type: 'STATIC',
            connect_timeout: '1s',
            load_assignment: { cluster_name: 'empty', endpoints: [] },
          },
        ],
      },
    })
    port = proxy.ports.http!
  })
  after(async () => {
    await proxy.stop()
    await Promise.all([a.close(), b.close(), slow.close()])
  })

  test('routes by path prefix', async () => {
    const r = await request(port, '/hello')
    assert.equal(r.status, 200)
    assert.equal(r.body.toString(), 'a /hello')
  })

  test('routes by virtual host domain', async () => {
    const r = await request(port, '/x', { headers: { host: 'B.example:8080' } })
    assert.equal(r.body.toString(), 'b /x')
  })

  test('prefix_rewrite keeps the query', async () => {
    const r = await request(port, '/api/items?id=3')
    assert.equal(r.body.toString(), 'b /v2/items?id=3')
  })

  test('header match selects a route', async () => {
    assert.equal((await request(port, '/hdr', { headers: { 'x-user': 'jason' } })).body.toString(), 'b /hdr')
    assert.equal((await request(port, '/hdr', { headers: { 'x-user': 'other' } })).body.toString(), 'a /hdr')
  })

  test('direct_response', async () => {
    const r = await request(port, '/direct')
    assert.equal(r.status, 418)
    assert.equal(r.body.toString(), 'teapot')
  })

  test('redirect', async () => {
    const r = await request(port, '/old?q=1', { headers: { host: 'c.example' } })
    assert.equal(r.status, 302)
    assert.equal(r.headers.location, 'http://c.example/new?q=1')
  })

  test('request and response header mutations', async () => {
    const seen = a.requests.length
    const r = await request(port, '/mut')
    assert.equal(r.headers['x-resp'], 'r')
    assert.equal(a.requests[seen]?.headers['x-added'], 'yes')
    assert.ok(a.requests[seen]?.headers['x-request-id'], 'x-request-id is generated')
    assert.equal(a.requests[seen]?.headers['x-forwarded-proto'], 'http')
  })

  /** The count of a response flag on this listener's connection manager (0 before its first use). */
  const flag = async (f: string) => (await stat(proxy.admin, `http.ingress.response_flag.${f}`)) || 0

  test('no healthy upstream: 503 UH', async () => {
    const uh = await flag('UH')
    const r = await request(port, '/empty')
    assert.equal(r.status, 503)
    assert.equal(await flag('UH'), uh + 1)
    assert.equal(r.headers['x-loom-reason'], 'no_healthy_upstream')
    assert.match(r.body.toString(), /no healthy upstream/)
  })

  test('connect failure: 503 UF', async () => {
    const uf = await flag('UF')
    const r = await request(port, '/down')
    assert.equal(r.status, 503)
    assert.equal(await flag('UF'), uf + 1)
    assert.equal(r.headers['x-loom-reason'], 'upstream_connect_failure')
  })

  test('route timeout: 504 UT', async () => {
    const ut = await flag('UT')
    const t0 = Date.now()
    const r = await request(port, '/slow')
    assert.equal(r.status, 504)
    assert.equal(await flag('UT'), ut + 1)
    assert.equal(r.headers['x-loom-reason'], 'upstream_timeout')
    assert.ok(Date.now() - t0 < 1500, 'the timeout fired before the upstream answered')
  })

  test('response flags are counted in stats', async () => {
    assert.ok((await stat(proxy.admin, 'http.ingress.response_flag.UF')) >= 1)
    assert.ok((await stat(proxy.admin, 'http.ingress.response_flag.UT')) >= 1)
    assert.ok((await stat(proxy.admin, 'http.ingress.response_flag.UH')) >= 1)
  })
})

describe('no route at all', () => {
  test('404 NR with x-loom-reason', async () => {
    const be = await startBackend()
    const proxy = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        listeners: [
          listener(
            'http',
            hcm({
              virtual_hosts: [
                { name: 'x', domains: ['x.example'], routes: [{ match: { prefix: '/' }, route: { cluster: 'a' } }] },
              ],
            }),
          ),
        ],
        clusters: [staticCluster('a', [be.port])],
      },
    })
    try {
      const r = await request(proxy.ports.http!, '/nothing')
      assert.equal(r.status, 404)
      assert.equal(r.headers['x-loom-reason'], 'route_not_found')
      assert.equal(await stat(proxy.admin, 'http.ingress.response_flag.NR'), 1)
    } finally {
      await proxy.stop()
      await be.close()
    }
  })
})

describe('upstream connections', () => {
  let be: Backend
  let proxy: RunningProxy
  let port: number
  const connections = { count: 0 }

  before(async () => {
    be = await startBackend((req, res, body) => {
      if (req.url === '/big') {
        const n = Number(req.headers['x-size'] ?? 0)
        const data = Buffer.alloc(n, 'z')
        res.setHeader('content-length', n)
        res.end(data)
        return
      }
      if (req.url === '/echo') {
        res.setHeader('x-sha', createHash('sha256').update(body, 'latin1').digest('hex'))
        res.end(body.length.toString())
        return
      }
      if (req.url?.startsWith('/c')) {
        // each concurrent request's answer names the request it answers (path, a header and the body's hash)
        res.end(`${req.url} ${req.headers['x-i']} ${createHash('sha256').update(body, 'latin1').digest('hex')}`)
        return
      }
      res.end('ok')
    })
    proxy = await proxyTo('be', be.port)
    port = proxy.ports.http!
    void connections
  })
  after(async () => {
    await proxy.stop()
    await be.close()
  })

  test('keep-alive: sequential requests reuse one upstream connection', async () => {
    const before = await stat(proxy.admin, 'cluster.be.upstream_cx_total')
    for (let i = 0; i < 20; i++) assert.equal((await rawExchangeKeep(port)).status, 200)
    const after = await stat(proxy.admin, 'cluster.be.upstream_cx_total')
    assert.ok(after - before <= 1, `opened ${after - before} upstream connections for 20 sequential requests`)
  })

  test('a 2 MB request body arrives intact (backpressure)', async () => {
    const body = randomBytes(2 * 1024 * 1024)
    const r = await request(port, '/echo', { method: 'POST', body })
    assert.equal(r.status, 200)
    assert.equal(r.body.toString(), String(body.length))
    assert.equal(r.headers['x-sha'], createHash('sha256').update(body).digest('hex'))
  })

  test('a 4 MB response body arrives intact', async () => {
    const r = await request(port, '/big', { headers: { 'x-size': String(4 * 1024 * 1024) } })
    assert.equal(r.body.length, 4 * 1024 * 1024)
  })

  test('a client that does not read a 64 MB response holds the upstream back, then gets all of it', async () => {
    const size = 64 * 1024 * 1024
    const counter = 'cluster.be.upstream_cx_rx_bytes_total'
    const start = await stat(proxy.admin, counter)
    const sock = net.connect(port, '127.0.0.1')
    sock.pause()
    sock.write(`GET /big HTTP/1.1\r\nhost: x\r\nx-size: ${size}\r\n\r\n`)
    // the proxy reads from the upstream only as fast as the client takes bytes: with the client not reading, what it
    // has read stops growing at about the socket buffers on the way (a few MB), far below the response
    const held = (await settledStat(proxy.admin, counter)) - start
    assert.ok(held > 0, 'the response started')
    assert.ok(held < size / 3, `the proxy read ${held} bytes of the upstream response while the client read none`)
    let got = 0
    await new Promise<void>((resolve, reject) => {
      sock.on('data', (c: Buffer) => {
        got += c.length
        if (got >= size) resolve()
      })
      sock.on('error', reject)
      sock.resume()
    })
    sock.destroy()
    assert.ok(got >= size && got < size + 1024, `received ${got} bytes`)
  })

  test('a client that half-closes right after its request still gets the whole response', async () => {
    const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    const chunks: Buffer[] = []
    const ended = new Promise<void>((resolve, reject) => {
      sock.on('data', (c: Buffer) => chunks.push(c))
      sock.on('end', () => resolve())
      sock.on('error', reject)
    })
    sock.end(`GET /big HTTP/1.1\r\nhost: x\r\nx-size: 100000\r\n\r\n`)
    await ended
    sock.destroy()
    const text = Buffer.concat(chunks).toString('latin1')
    const head = text.slice(0, text.indexOf('\r\n\r\n'))
    assert.match(head, /^HTTP\/1\.1 200 /)
    assert.match(head, /\r\nconnection: close/i)
    assert.equal(text.length - head.length - 4, 100000)
  })

  test('listener gauges count each plain HTTP/1 connection once', async () => {
    const name = `listener.127.0.0.1_${port}.downstream_cx_active`
    const settle = async (want: number) => {
      for (let i = 0; i < 150 && (await stat(proxy.admin, name)) !== want; i++)
        await new Promise((r) => setTimeout(r, 20))
      return stat(proxy.admin, name)
    }
    const base = await settle(0)
    const socks = await Promise.all(
      Array.from(
        { length: 3 },
        () =>
          new Promise<net.Socket>((resolve, reject) => {
            const s = net.connect(port, '127.0.0.1')
            s.once('data', () => resolve(s))
            s.on('error', reject)
            s.write('GET /x HTTP/1.1\r\nhost: x\r\n\r\n')
          }),
      ),
    )
    assert.equal(await stat(proxy.admin, name), base + 3)
    for (const s of socks) s.destroy()
    assert.equal(await settle(base), base)
  })

  test('chunked request body is forwarded', async () => {
    const r = await new Promise<string>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/echo', method: 'POST' }, (res) => {
        let s = ''
        res.on('data', (c) => (s += c))
        res.on('end', () => resolve(s))
      })
      req.on('error', reject)
      req.write('abc')
      req.write('defg')
      req.end()
    })
    assert.equal(r, '7')
  })

  test('50 concurrent requests each get their own answer', async () => {
    const sha = (s: string) => createHash('sha256').update(s).digest('hex')
    const rs = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        request(port, `/c${i}`, { method: 'POST', headers: { 'x-i': String(i) }, body: `body-${i}` }),
      ),
    )
    rs.forEach((r, i) => {
      assert.equal(r.status, 200)
      assert.equal(r.body.toString(), `/c${i} ${i} ${sha(`body-${i}`)}`)
    })
  })
})

/** A proxy whose every request goes to one cluster with one endpoint. */
function proxyTo(cluster: string, port: number): Promise<RunningProxy> {
  return startProxy({
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [
        listener(
          'http',
          hcm({
            virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster } }] }],
          }),
        ),
      ],
      clusters: [staticCluster(cluster, [port])],
    },
  })
}

/** One GET on a fresh keep-alive client connection helper (Node's agent keeps the downstream side warm). */
async function rawExchangeKeep(port: number): Promise<{ status: number }> {
  return request(port, '/ka')
}

describe('hostile upstreams', () => {
  const cases: [string, string, number][] = [
    ['CL and TE together', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 502],
    ['two different Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!', 502],
    ['malformed status line', 'HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n', 502],
    ['bare LF in headers', 'HTTP/1.1 200 OK\nContent-Length: 0\n\n', 502],
    ['not HTTP at all', 'SSH-2.0-OpenSSH_9.2\r\n\r\n', 502],
    ['body framing on a 204', 'HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc', 502],
    ['closes before responding', '', 503],
  ]
  for (const [name, response, status] of cases) {
    test(`${name} → ${status}`, async () => {
      const up = await startRawServer((s) => {
        s.once('data', () => {
          if (response === '') s.destroy()
          else s.write(response)
        })
      })
      const proxy = await proxyTo('up', up.port)
      try {
        const r = await request(proxy.ports.http!, '/')
        assert.equal(r.status, status)
        assert.ok(r.headers['x-loom-reason'])
      } finally {
        await proxy.stop()
        await up.close()
      }
    })
  }

  test('extra bytes after a response: that upstream connection is never reused', async () => {
    let conns = 0
    const up = await startRawServer((s) => {
      conns++
      s.on('data', () =>
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil'),
      )
    })
    const proxy = await proxyTo('up', up.port)
    try {
      const r1 = await request(proxy.ports.http!, '/1')
      const r2 = await request(proxy.ports.http!, '/2')
      assert.equal(r1.body.toString(), 'ok')
      assert.equal(r2.body.toString(), 'ok', 'the stray response must not be served to the next request')
      assert.equal(conns, 2)
    } finally {
      await proxy.stop()
      await up.close()
    }
  })

  test('upstream closes mid-body: the client connection is cut, not given a short body as complete', async () => {
    const up = await startRawServer((s) => {
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial')
        setTimeout(() => s.destroy(), 50)
      })
    })
    const proxy = await proxyTo('up', up.port)
    try {
      await assert.rejects(request(proxy.ports.http!, '/'))
    } finally {
      await proxy.stop()
      await up.close()
    }
  })

  test('a request sent on a pooled connection the upstream just closed is retried once on a new one', async () => {
    // The upstream answers the first request on each connection, then drops the connection when the next request
    // arrives on it, as a server whose keep-alive timeout fires at that moment would.
    let conns = 0
    const up = await startRawServer((s) => {
      conns++
      let n = 0
      s.on('data', () => {
        if (n++ === 0) s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh')
        else s.destroy()
      })
    })
    const proxy = await proxyTo('up', up.port)
    try {
      assert.equal((await request(proxy.ports.http!, '/1')).body.toString(), 'fresh')
      const r = await request(proxy.ports.http!, '/2')
      assert.equal(r.status, 200)
      assert.equal(r.body.toString(), 'fresh')
      assert.equal(conns, 2)
      assert.equal(await stat(proxy.admin, 'cluster.up.upstream_rq_retry'), 1)
    } finally {
      await proxy.stop()
      await up.close()
    }
  })
})

describe('request body backpressure', () => {
  test('an upstream that does not read a 64 MB upload stops the proxy reading from the client', async () => {
    // the upstream takes the connection and never reads: its socket buffers fill, then the proxy's, and the proxy
    // must stop reading the client instead of holding the rest of the body in memory
    const stalled = await startRawServer((s) => s.pause())
    const proxy = await proxyTo('stalled', stalled.port)
    const size = 64 * 1024 * 1024
    const sock = net.connect(proxy.ports.http!, '127.0.0.1')
    sock.on('error', () => {})
    try {
      sock.write(`POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: ${size}\r\n\r\n`)
      sock.write(Buffer.alloc(size, 'u'))
      const now = await settledStat(proxy.admin, 'http.ingress.downstream_cx_rx_bytes_total')
      assert.ok(now > 0, 'the upload started')
      assert.ok(now < size / 3, `the proxy read ${now} bytes of the body while the upstream read none`)
    } finally {
      sock.destroy()
      await proxy.stop()
      await stalled.close()
    }
  })
})
