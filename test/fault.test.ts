/**
 * The HTTP filter chain with Envoy's fault filter, through a real `loom proxy` process and a real backend: delays
 * and aborts from the filter's config and from per-route overrides, header-driven faults, percentages, body held
 * during a delay, max_active_faults, and a client that leaves while it is delayed.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import * as http from 'node:http'
import * as http2 from 'node:http2'
import { after, before, describe, test } from 'node:test'
import { ROUTER, type RunningProxy, runLoom, stat, startProxy, writeTemp, filterBootstrap } from './helpers/proxy.js'
import { eventually } from './helpers/control.js'
import { type Backend, startBackend } from './helpers/servers.js'

const FAULT = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault'
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })

function request(
  port: number,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; ms: number }> {
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: body === undefined ? 'GET' : 'POST', headers, agent },
      (res) => {
        let text = ''
        res.setEncoding('latin1')
        res.on('data', (c: string) => (text += c))
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, ms: performance.now() - t0 }),
        )
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

const pct = (n: number, denominator = 'HUNDRED') => ({ numerator: n, denominator })
const perRoute = (fault: Record<string, unknown>) => ({
  typed_per_filter_config: { 'envoy.filters.http.fault': { '@type': FAULT, ...fault } },
})
const route = (prefix: string, extra: Record<string, unknown> = {}, action: Record<string, unknown> = {}) => ({
  match: { prefix },
  route: { cluster: 'be', ...action },
  ...extra,
})

function bootstrap(port: number): unknown {
  return filterBootstrap(
    port,
    [
      {
        name: 'all',
        domains: ['*'],
        routes: [
          route('/abort', perRoute({ abort: { http_status: 503, percentage: pct(100) } })),
          route('/delay', perRoute({ delay: { fixed_delay: '0.3s', percentage: pct(100) } })),
          route(
            '/both',
            perRoute({
              delay: { fixed_delay: '0.2s', percentage: pct(100) },
              abort: { http_status: 418, percentage: pct(100) },
            }),
          ),
          route('/grpc', perRoute({ abort: { grpc_status: 14, percentage: pct(100) } })),
          route('/thirty', perRoute({ abort: { http_status: 500, percentage: pct(300_000, 'MILLION') } })),
          route(
            '/jason',
            perRoute({
              abort: { http_status: 555, percentage: pct(100) },
              headers: [{ name: 'end-user', string_match: { exact: 'jason' } }],
            }),
          ),
          route(
            '/one-at-a-time',
            perRoute({ delay: { fixed_delay: '0.4s', percentage: pct(100) }, max_active_faults: 1 }),
          ),
          route('/timed', perRoute({ delay: { fixed_delay: '0.3s', percentage: pct(100) } }), {
            timeout: '0.2s',
          }),
          route('/unset', perRoute({ abort: { http_status: 500 } })),
          route('/'),
        ],
      },
    ],
    [
      // the filter's own config: faults only on request (x-envoy-fault-* headers)
      {
        name: 'envoy.filters.http.fault',
        typed_config: {
          '@type': FAULT,
          abort: { header_abort: {}, percentage: pct(100) },
          delay: { header_delay: {}, percentage: pct(100) },
        },
      },
    ],
  )
}

describe('fault filter', () => {
  let be: Backend
  let proxy: RunningProxy
  let port: number
  const counter = async (name: string) => (await stat(proxy.admin, `http.ingress.${name}`)) || 0

  before(async () => {
    be = await startBackend((req, res, body) => res.end(`${req.url} ${body}`))
    proxy = await startProxy(bootstrap(be.port))
    port = proxy.ports.http!
  })
  after(async () => {
    agent.destroy()
    await proxy.stop()
    await be.close()
  })

  test('a per-route abort answers at once with its status and flag FI; the backend sees nothing', async () => {
    const seen = be.requests.length
    const fi = await counter('response_flag.FI')
    const r = await request(port, '/abort')
    assert.equal(r.status, 503)
    assert.equal(r.headers['x-loom-reason'], 'fault_filter_abort')
    assert.equal(r.body, 'fault filter abort')
    assert.equal(be.requests.length, seen)
    assert.equal(await counter('response_flag.FI'), fi + 1)
    assert.ok((await counter('fault.aborts_injected')) >= 1)
  })

  test('a per-route delay holds the request, then it reaches the backend; flag DI', async () => {
    const di = await counter('response_flag.DI')
    const r = await request(port, '/delay')
    assert.equal(r.status, 200)
    assert.equal(r.body, '/delay ')
    assert.ok(r.ms >= 290, `answered after ${r.ms} ms`)
    assert.equal(await counter('response_flag.DI'), di + 1)
  })

  test('a request body that arrives during a delay is held and sent on whole', async () => {
    const body = 'x'.repeat(200_000)
    const r = await request(port, '/delay', { 'content-type': 'text/plain' }, body)
    assert.equal(r.status, 200)
    assert.equal(r.body, `/delay ${body}`)
  })

  test('delay and abort together: the abort comes after the delay', async () => {
    const r = await request(port, '/both')
    assert.equal(r.status, 418)
    assert.ok(r.ms >= 190, `answered after ${r.ms} ms`)
  })

  test('a gRPC abort is a trailers-only response with grpc-status', async () => {
    const r = await request(port, '/grpc', { 'content-type': 'application/grpc' })
    assert.equal(r.status, 200)
    assert.equal(r.headers['content-type'], 'application/grpc')
    assert.equal(r.headers['grpc-status'], '14')
  })

  test('a 30% abort aborts 30% of 1000 requests, within tolerance', async () => {
    let aborted = 0
    for (let batch = 0; batch < 20; batch++) {
      const rs = await Promise.all(Array.from({ length: 50 }, () => request(port, '/thirty')))
      for (const r of rs) if (r.status === 500) aborted++
    }
    assert.ok(aborted > 250 && aborted < 350, `aborted ${aborted} of 1000`)
  })

  test('header matchers: only the matching requests get the fault', async () => {
    assert.equal((await request(port, '/jason', { 'end-user': 'jason' })).status, 555)
    assert.equal((await request(port, '/jason', { 'end-user': 'someone' })).status, 200)
    assert.equal((await request(port, '/jason')).status, 200)
  })

  test("header-driven faults from the filter's own config (routes without an override)", async () => {
    assert.equal((await request(port, '/x', { 'x-envoy-fault-abort-request': '429' })).status, 429)
    const d = await request(port, '/x', { 'x-envoy-fault-delay-request': '200' })
    assert.equal(d.status, 200)
    assert.ok(d.ms >= 190, `answered after ${d.ms} ms`)
    assert.equal((await request(port, '/x', { 'x-envoy-fault-abort-request': 'nonsense' })).status, 200)
    assert.equal((await request(port, '/x')).status, 200)
  })

  test('max_active_faults: a second concurrent request is not delayed, and is counted as overflow', async () => {
    const overflow = await counter('fault.faults_overflow')
    const [a, b] = await Promise.all([
      request(port, '/one-at-a-time'),
      new Promise((r) => setTimeout(r, 50)).then(() => request(port, '/one-at-a-time')),
    ])
    assert.ok(a.ms >= 390, `first answered after ${a.ms} ms`)
    assert.ok(b.ms < 300, `second answered after ${b.ms} ms`)
    assert.equal(await counter('fault.faults_overflow'), overflow + 1)
  })

  test('a fault whose percentage is unset injects nothing (the proto default, 0%)', async () => {
    for (let i = 0; i < 20; i++) assert.equal((await request(port, '/unset')).status, 200)
  })

  test("the route timeout starts after the filter's delay", async () => {
    const r = await request(port, '/timed')
    assert.equal(r.status, 200, r.body)
  })

  test('a client that resets its stream during a delay: nothing reaches the backend, no fault stays active', async () => {
    const seen = be.requests.length
    const dc = await counter('response_flag.DC')
    const session = http2.connect(`http://127.0.0.1:${port}`)
    const stream = session.request({ ':path': '/delay' })
    stream.on('error', () => {})
    await once(session, 'connect')
    await eventually(async () => (await counter('fault.active_faults')) === 1, 5000, 'the delay to begin')
    stream.close(http2.constants.NGHTTP2_CANCEL)
    await eventually(async () => (await counter('response_flag.DC')) === dc + 1, 5000, 'the reset to be seen')
    assert.equal(await counter('fault.active_faults'), 0)
    // a later request on the same connection still works, after the delay would have ended
    const next = session.request({ ':path': '/x' })
    next.resume()
    const [headers] = (await once(next, 'response')) as [http2.IncomingHttpHeaders]
    assert.equal(headers[':status'], 200)
    await once(next, 'end')
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(be.requests.length, seen + 1, 'only the later request reached the backend')
    session.close()
  })
})

describe('fault filter config errors', () => {
  test('an unsupported fault field and a router that is not last are rejected with their paths', async () => {
    const b = bootstrap(1) as {
      static_resources: {
        listeners: { filter_chains: { filters: { typed_config: { http_filters: unknown[] } }[] }[] }[]
      }
    }
    const tc = b.static_resources.listeners[0]!.filter_chains[0]!.filters[0]!.typed_config
    tc.http_filters = [
      { name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } },
      { name: 'envoy.filters.http.fault', typed_config: { '@type': FAULT, upstream_cluster: 'x' } },
    ]
    const r = await runLoom(['validate', '-c', writeTemp('bad.json', JSON.stringify(b))])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /http_filters\[1\]\.typed_config\.upstream_cluster: unknown field/)
    tc.http_filters = [
      { name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } },
      { name: 'envoy.filters.http.fault', typed_config: { '@type': FAULT } },
    ]
    const r2 = await runLoom(['validate', '-c', writeTemp('bad.json', JSON.stringify(b))])
    assert.equal(r2.code, 1)
    assert.match(r2.stderr, /http_filters\[0\]: the router filter must be the last HTTP filter/)
    assert.match(r2.stderr, /http_filters\[1\]: the last HTTP filter must be the router/)
  })
})
