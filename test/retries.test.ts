/**
 * The router's upstream attempts through a real `loom proxy`: Envoy's retry_policy (retry_on conditions,
 * num_retries, per_try_timeout inside the route timeout, back-off, previous_hosts), the request body kept for a
 * retry up to its bound, x-envoy-attempt-count, the retry stats and the URX flag. The backends misbehave on purpose:
 * what each does is chosen by the request path, and each counts the attempts it saw per path.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import * as http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { adminAddress, hcm, listener, type RunningProxy, stat, startProxy, staticCluster } from './helpers/proxy.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })

interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
  ms: number
  error?: string
}

/** `chunked`: the body goes as one chunk of a chunked request, which the upstream codec never resends on its own. */
function request(port: number, path: string, body?: string | Buffer, chunked = false): Promise<Answer> {
  const t0 = performance.now()
  return new Promise((resolve) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: body === undefined ? 'GET' : 'POST', agent },
      (res) => {
        let text = ''
        res.setEncoding('latin1')
        res.on('data', (c: string) => (text += c))
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, ms: performance.now() - t0 }),
        )
        res.on('error', (e) =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, ms: 0, error: e.message }),
        )
      },
    )
    req.on('error', (e) => resolve({ status: 0, headers: {}, body: '', ms: performance.now() - t0, error: e.message }))
    if (chunked && body !== undefined) {
      req.write(body)
      req.end()
    } else req.end(body)
  })
}

/** How many times a path reached a backend, and the attempt-count headers it carried. */
const seen = new Map<string, { n: number; attempts: string[]; bodies: number[] }>()
function saw(url: string): { n: number; attempts: string[]; bodies: number[] } {
  let e = seen.get(url)
  if (e === undefined) seen.set(url, (e = { n: 0, attempts: [], bodies: [] }))
  return e
}

/** The first path segment says how to misbehave; the count so far says whether to misbehave this time. */
function misbehave(req: http.IncomingMessage, res: http.ServerResponse, body: string): void {
  const url = req.url ?? ''
  const e = saw(url)
  e.n++
  e.attempts.push(String(req.headers['x-envoy-attempt-count'] ?? ''))
  e.bodies.push(body.length)
  const kind = url.split('/')[1]
  switch (kind) {
    case 'always503':
      res.writeHead(503, { 'x-try': String(e.n) }).end(`503 number ${e.n}`)
      return
    case 'once503':
    case 'post':
      if (e.n === 1) res.writeHead(503).end('try again')
      else res.writeHead(200).end(`ok after ${e.n}`)
      return
    case 'reset':
    case 'noreset':
      if (e.n === 1) req.socket.destroy()
      else res.writeHead(200).end('ok')
      return
    case 'stall':
      return // never answers
    case 'midway':
      res.writeHead(200, { 'content-length': '100' })
      res.write('part of it')
      setTimeout(() => req.socket.destroy(), 20)
      return
    case 'grpc':
      res.writeHead(200, { 'content-type': 'application/grpc', 'grpc-status': e.n === 1 ? '14' : '0' }).end()
      return
    default:
      res.writeHead(200).end('ok')
  }
}

const policy = (p: Record<string, unknown>) => ({ retry_back_off: { base_interval: '0.005s' }, ...p })
const route = (prefix: string, retry: Record<string, unknown> | null, extra: Record<string, unknown> = {}) => ({
  match: { prefix },
  route: { cluster: 'be', ...(retry === null ? {} : { retry_policy: policy(retry) }), ...extra },
})

describe('retries', () => {
  let be: Backend
  let bad: Backend
  let proxy: RunningProxy
  let port: number
  let deadPort: number
  let h2be: http2.Http2Server
  /** per path: the request bodies the HTTP/2 backend received */
  const h2seen = new Map<string, string[]>()

  before(async () => {
    be = await startBackend(misbehave)
    bad = await startBackend((_req, res) => res.writeHead(503).end('bad host'))
    // HTTP/2 upstream: /h2/refuse/* refuses the first stream (REFUSED_STREAM), /h2/* answers 503 first; then 200
    h2be = http2.createServer()
    h2be.on('stream', (stream, headers) => {
      const path = String(headers[':path'])
      let body = ''
      stream.setEncoding('latin1')
      stream.on('error', () => {}) // the refused stream errors on the server side too
      stream.on('data', (c: string) => (body += c))
      stream.on('end', () => {
        const list = h2seen.get(path) ?? []
        list.push(body)
        h2seen.set(path, list)
        if (list.length === 1 && path.startsWith('/h2/refuse')) stream.close(http2.constants.NGHTTP2_REFUSED_STREAM)
        else if (list.length === 1) stream.respond({ ':status': 503 }, { endStream: true })
        else {
          stream.respond({ ':status': 200 })
          stream.end(`h2 ${body.length}`)
        }
      })
    })
    await new Promise<void>((r) => h2be.listen(0, '127.0.0.1', r))
    // last, so no backend above can be given the port after it was found free
    deadPort = await freePort()
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
                  name: 'all',
                  domains: ['*'],
                  include_request_attempt_count: true,
                  // the virtual host's policy, for routes without their own
                  retry_policy: policy({ retry_on: 'gateway-error', num_retries: 1 }),
                  routes: [
                    route('/always503', { retry_on: '5xx', num_retries: 2 }),
                    { match: { prefix: '/once503' }, route: { cluster: 'be' } },
                    route('/reset', { retry_on: 'reset' }),
                    route('/noreset', { retry_on: 'retriable-4xx' }),
                    route('/stall/per-try', { retry_on: 'gateway-error', num_retries: 2, per_try_timeout: '0.1s' }),
                    route(
                      '/stall/route',
                      { retry_on: '5xx', num_retries: 5, per_try_timeout: '0.25s' },
                      { timeout: '0.4s' },
                    ),
                    route('/midway', { retry_on: 'reset,5xx', num_retries: 3 }),
                    route('/post', { retry_on: '5xx' }),
                    route('/grpc', { retry_on: 'unavailable,cancelled' }),
                    route('/none', null),
                    {
                      match: { prefix: '/hosts' },
                      route: {
                        cluster: 'pair',
                        retry_policy: policy({
                          retry_on: '5xx',
                          retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts' }],
                          host_selection_retry_max_attempts: 20,
                        }),
                      },
                    },
                    {
                      match: { prefix: '/dead' },
                      route: { cluster: 'dead', retry_policy: policy({ retry_on: 'connect-failure' }) },
                    },
                    {
                      match: { prefix: '/h2/refuse' },
                      route: { cluster: 'h2', retry_policy: policy({ retry_on: 'refused-stream' }) },
                    },
                    { match: { prefix: '/h2' }, route: { cluster: 'h2', retry_policy: policy({ retry_on: '5xx' }) } },
                    {
                      match: { prefix: '/connect' },
                      route: {
                        cluster: 'half-dead',
                        retry_policy: policy({
                          retry_on: 'connect-failure',
                          retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts' }],
                          host_selection_retry_max_attempts: 20,
                        }),
                      },
                    },
                  ],
                },
              ],
            }),
          ),
        ],
        clusters: [
          staticCluster('be', [be.port]),
          staticCluster('pair', [bad.port, be.port], { lb_policy: 'RANDOM' }),
          staticCluster('dead', [deadPort]),
          staticCluster('h2', [(h2be.address() as AddressInfo).port], { http2_protocol_options: {} }),
          staticCluster('half-dead', [deadPort, be.port], { lb_policy: 'RANDOM', connect_timeout: '0.5s' }),
        ],
      },
    })
    port = proxy.ports.http!
  })

  after(async () => {
    agent.destroy()
    await proxy?.stop()
    await be?.close()
    await bad?.close()
    h2be?.close()
  })

  test('num_retries 2 on a persistent 503: three attempts, the client gets the last 503 (URX)', async () => {
    const retries0 = await stat(proxy.admin, 'cluster.be.upstream_rq_retry')
    const r = await request(port, '/always503/a')
    assert.equal(r.status, 503)
    assert.equal(r.headers['x-try'], '3')
    assert.equal(r.body, '503 number 3')
    assert.equal(saw('/always503/a').n, 3)
    assert.deepEqual(saw('/always503/a').attempts, ['1', '2', '3'])
    assert.equal((await stat(proxy.admin, 'cluster.be.upstream_rq_retry')) - retries0, 2)
    assert.equal(await stat(proxy.admin, 'cluster.be.upstream_rq_retry_limit_exceeded'), 1)
    assert.equal(await stat(proxy.admin, 'http.ingress.response_flag.URX'), 1)
  })

  test("a backend failing once then succeeding: 200 after two attempts (the virtual host's policy)", async () => {
    const ok0 = await stat(proxy.admin, 'cluster.be.upstream_rq_retry_success')
    const r = await request(port, '/once503/a')
    assert.equal(r.status, 200)
    assert.equal(r.body, 'ok after 2')
    assert.deepEqual(saw('/once503/a').attempts, ['1', '2'])
    assert.equal((await stat(proxy.admin, 'cluster.be.upstream_rq_retry_success')) - ok0, 1)
  })

  test('a connection reset before the response is retried with retry_on reset, and not without it', async () => {
    // chunked POSTs: the HTTP/1.1 pool's own resend of a request that met a closing keep-alive connection stays out
    const retries0 = await stat(proxy.admin, 'cluster.be.upstream_rq_retry')
    const r = await request(port, '/reset/a', 'x', true)
    assert.equal(r.status, 200)
    assert.equal(saw('/reset/a').n, 2)
    assert.equal((await stat(proxy.admin, 'cluster.be.upstream_rq_retry')) - retries0, 1)
    const n = await request(port, '/noreset/a', 'x', true)
    assert.equal(n.status, 503)
    assert.equal(n.headers['x-loom-reason'], 'upstream_reset')
    assert.equal(saw('/noreset/a').n, 1)
  })

  test('per_try_timeout 100 ms on a stalling backend, 2 retries: 504 after three tries, within the route timeout', async () => {
    const pt0 = await stat(proxy.admin, 'cluster.be.upstream_rq_per_try_timeout')
    const r = await request(port, '/stall/per-try')
    assert.equal(r.status, 504)
    assert.equal(r.headers['x-loom-reason'], 'upstream_timeout')
    assert.ok(r.ms >= 300 && r.ms < 1500, `answered in ${r.ms} ms`)
    assert.equal(saw('/stall/per-try').n, 3)
    assert.equal((await stat(proxy.admin, 'cluster.be.upstream_rq_per_try_timeout')) - pt0, 3)
  })

  test('the route timeout spans the attempts: it fires during the second try', async () => {
    const r = await request(port, '/stall/route')
    assert.equal(r.status, 504)
    assert.ok(r.ms >= 380 && r.ms < 1000, `answered in ${r.ms} ms`)
    assert.equal(saw('/stall/route').n, 2)
  })

  test('previous_hosts moves the retry to the other host', async () => {
    // RANDOM picks the failing host first about half the time; without the predicate, the retry would pick it
    // again half of those times
    for (let i = 0; i < 20; i++) {
      const r = await request(port, `/hosts/${i}`)
      assert.equal(r.status, 200, `request ${i}`)
    }
  })

  test('connect-failure: a refused connection is retried on the other host', async () => {
    for (let i = 0; i < 10; i++) {
      const r = await request(port, `/connect/${i}`)
      assert.equal(r.status, 200, `request ${i}`)
    }
  })

  test('retries run out on connect failures: the local reply 503 UF, with URX', async () => {
    const urx0 = await stat(proxy.admin, 'http.ingress.response_flag.URX')
    const uf0 = await stat(proxy.admin, 'http.ingress.response_flag.UF')
    const retries0 = await stat(proxy.admin, 'cluster.dead.upstream_rq_retry')
    const r = await request(port, '/dead/a')
    assert.equal(r.status, 503)
    assert.equal(r.headers['x-loom-reason'], 'upstream_connect_failure')
    assert.equal((await stat(proxy.admin, 'http.ingress.response_flag.URX')) - urx0, 1)
    assert.equal((await stat(proxy.admin, 'http.ingress.response_flag.UF')) - (Number.isNaN(uf0) ? 0 : uf0), 1)
    assert.equal(
      (await stat(proxy.admin, 'cluster.dead.upstream_rq_retry')) - (Number.isNaN(retries0) ? 0 : retries0),
      1,
    )
  })

  test('a POST body within the bound is sent again whole; over the bound it is not retried (stat)', async () => {
    const small = Buffer.alloc(16 * 1024, 'a')
    const r = await request(port, '/post/small', small)
    assert.equal(r.status, 200)
    assert.deepEqual(saw('/post/small').bodies, [small.length, small.length])

    const abandoned0 = await stat(proxy.admin, 'cluster.be.retry_or_shadow_abandoned')
    const big = Buffer.alloc(100 * 1024, 'b')
    const b = await request(port, '/post/big', big)
    assert.equal(b.status, 503)
    assert.equal(saw('/post/big').n, 1)
    assert.equal((await stat(proxy.admin, 'cluster.be.retry_or_shadow_abandoned')) - abandoned0, 1)
  })

  test('HTTP/2 upstream: a 503 and a refused stream are retried, the body sent again on a new stream', async () => {
    const body = 'z'.repeat(3000)
    const r = await request(port, '/h2/post', body, true)
    assert.equal(r.status, 200)
    assert.equal(r.body, 'h2 3000')
    assert.deepEqual(h2seen.get('/h2/post'), [body, body])
    const f = await request(port, '/h2/refuse/a')
    assert.equal(f.status, 200)
    assert.equal(h2seen.get('/h2/refuse/a')?.length, 2)
  })

  test('no retry once response headers have gone downstream', async () => {
    const r = await request(port, '/midway/a')
    assert.equal(r.status, 200)
    assert.ok(r.error !== undefined || r.body.length < 100, 'the response is cut short')
    assert.equal(saw('/midway/a').n, 1)
  })

  test('gRPC unavailable (grpc-status 14 in the response headers) is retried', async () => {
    const r = await request(port, '/grpc/a')
    assert.equal(r.status, 200)
    assert.equal(r.headers['grpc-status'], '0')
    assert.equal(saw('/grpc/a').n, 2)
  })

  test('a 200 is not retried; x-envoy-attempt-count says 1', async () => {
    const r = await request(port, '/none/always503')
    assert.equal(r.status, 200)
    assert.deepEqual(saw('/none/always503').attempts, ['1'])
  })
})
