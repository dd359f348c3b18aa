/**
 * Circuit breakers through a real `loom proxy` and a backend that holds its requests: a one-connection pool
 * answers the overflow at once with 503 `UO`, a pending request waits for the connection, max_requests caps the
 * requests in flight.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { adminAddress, hcm, listener, type RunningProxy, stat, startProxy, staticCluster } from './helpers/proxy.js'
import { eventually } from './helpers/control.js'
import { type Backend, startBackend } from './helpers/servers.js'

function get(port: number, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('latin1')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

const routes = (prefixes: string[]) =>
  prefixes.map((p) => ({ match: { prefix: `/${p}` }, route: { cluster: p, timeout: '10s' } }))

describe('circuit breakers', () => {
  let proxy: RunningProxy
  let port: number
  /** requests the holding backend has not answered yet */
  const held: http.ServerResponse[] = []
  let arrivals: (() => void)[] = []
  let holder: Backend

  const arrived = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => (held.length >= n ? resolve() : arrivals.push(check))
      check()
    })
  const releaseAll = () => {
    for (const res of held.splice(0)) res.end('released')
  }

  before(async () => {
    holder = await startBackend((_req, res) => {
      held.push(res)
      const waiting = arrivals
      arrivals = []
      for (const f of waiting) f()
    })
    proxy = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        listeners: [
          listener(
            'http',
            hcm({
              virtual_hosts: [{ name: 'all', domains: ['*'], routes: routes(['cb0', 'cb1', 'rq1']) }],
            }),
          ),
        ],
        clusters: [
          staticCluster('cb0', [holder.port], {
            circuit_breakers: { thresholds: [{ max_connections: 1, max_pending_requests: 0 }] },
          }),
          staticCluster('cb1', [holder.port], {
            circuit_breakers: { thresholds: [{ priority: 'DEFAULT', max_connections: 1, max_pending_requests: 1 }] },
          }),
          staticCluster('rq1', [holder.port], { circuit_breakers: { thresholds: [{ max_requests: 1 }] } }),
        ],
      },
    })
    port = proxy.ports.http!
  })

  after(async () => {
    releaseAll()
    await proxy?.stop()
    await holder?.close()
  })

  test('max_connections 1, max_pending_requests 0: the second concurrent caller gets 503 UO at once', async () => {
    const first = get(port, '/cb0/first')
    await arrived(1)
    const t0 = performance.now()
    const second = await get(port, '/cb0/second')
    const ms = performance.now() - t0
    assert.equal(second.status, 503)
    assert.equal(second.headers['x-loom-reason'], 'upstream_overflow')
    assert.ok(ms < 1000, `overflow took ${ms} ms`)
    assert.equal(holder.requests.filter((r) => r.url === '/cb0/second').length, 0)
    assert.equal(await stat(proxy.admin, 'cluster.cb0.circuit_breakers.default.cx_open'), 1)
    assert.equal(await stat(proxy.admin, 'cluster.cb0.circuit_breakers.default.remaining_cx'), 0)
    assert.equal(await stat(proxy.admin, 'cluster.cb0.upstream_cx_overflow'), 1)
    assert.equal(await stat(proxy.admin, 'cluster.cb0.upstream_rq_pending_overflow'), 1)
    assert.equal(await stat(proxy.admin, 'http.ingress.response_flag.UO'), 1)
    releaseAll()
    assert.equal((await first).status, 200)
    // the slot is free again: the next caller goes through
    const third = get(port, '/cb0/third')
    await arrived(1)
    releaseAll()
    assert.equal((await third).status, 200)
    assert.equal(await stat(proxy.admin, 'cluster.cb0.circuit_breakers.default.rq_pending_open'), 1)
  })

  test('max_pending_requests 1: one caller waits for the connection, the third overflows', async () => {
    const first = get(port, '/cb1/1')
    await arrived(1)
    const second = get(port, '/cb1/2')
    await eventually(async () => (await stat(proxy.admin, 'cluster.cb1.upstream_rq_pending_active')) === 1)
    assert.equal(await stat(proxy.admin, 'cluster.cb1.circuit_breakers.default.rq_pending_open'), 1)
    const third = await get(port, '/cb1/3')
    assert.equal(third.status, 503)
    assert.equal(third.headers['x-loom-reason'], 'upstream_overflow')
    releaseAll()
    assert.equal((await first).status, 200)
    // the waiting request takes the connection the first one freed
    await arrived(1)
    assert.equal(held.length, 1)
    releaseAll()
    assert.equal((await second).status, 200)
    assert.equal(await stat(proxy.admin, 'cluster.cb1.upstream_rq_pending_active'), 0)
    assert.equal(await stat(proxy.admin, 'cluster.cb1.upstream_cx_total'), 1)
  })

  test('max_requests 1: a second request in flight is refused with 503 UO', async () => {
    const first = get(port, '/rq1/1')
    await arrived(1)
    assert.equal(await stat(proxy.admin, 'cluster.rq1.circuit_breakers.default.rq_open'), 1)
    const second = await get(port, '/rq1/2')
    assert.equal(second.status, 503)
    assert.equal(second.headers['x-loom-reason'], 'upstream_overflow')
    releaseAll()
    assert.equal((await first).status, 200)
    assert.equal(await stat(proxy.admin, 'cluster.rq1.circuit_breakers.default.rq_open'), 0)
    assert.equal(await stat(proxy.admin, 'cluster.rq1.circuit_breakers.default.remaining_rq'), 1)
  })
})
