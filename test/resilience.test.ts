/**
 * Circuit breakers and outlier detection through a real `loom proxy` and backends that misbehave on purpose: a
 * one-connection pool answers the overflow at once with 503 `UO`; a backend answering 5xx is ejected after N
 * consecutive errors, traffic moves to the others, and it comes back after the ejection time; max_ejection_percent
 * caps how many hosts go.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import * as http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { adminAddress, hcm, listener, type RunningProxy, stat, startProxy, staticCluster } from './helpers/proxy.js'
import { eventually } from './helpers/control.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

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
  prefixes.map((p) => ({ match: { prefix: `/${p}` }, route: { cluster: p, timeout: p === 'slow' ? '0.2s' : '10s' } }))

describe('circuit breakers and outlier detection', () => {
  let proxy: RunningProxy
  let port: number
  /** requests the holding backend has not answered yet */
  const held: http.ServerResponse[] = []
  let arrivals: (() => void)[] = []
  let holder: Backend
  const ejectBackends: Backend[] = []
  const capBackends: Backend[] = []
  let badIsBad = true
  let closedPort = 0
  let h2server: http2.Http2Server
  let h2sessions = 0
  let blackHole: Backend
  const swallowed: http.ServerResponse[] = []

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
    for (const name of ['a', 'bad', 'c']) {
      ejectBackends.push(
        await startBackend((_req, res) => {
          res.setHeader('x-backend', name)
          res.statusCode = name === 'bad' && badIsBad ? 503 : 200
          res.end(name)
        }),
      )
    }
    for (let i = 0; i < 4; i++) {
      capBackends.push(
        await startBackend((_req, res) => {
          res.statusCode = 500
          res.end('broken')
        }),
      )
    }
    closedPort = await freePort()
    blackHole = await startBackend((_req, res) => swallowed.push(res))
    h2server = http2.createServer()
    h2server.on('session', () => h2sessions++)
    h2server.on('stream', (stream) => {
      stream.respond({ ':status': 200 })
      stream.end('h2')
    })
    await new Promise<void>((r) => h2server.listen(0, '127.0.0.1', r))
    const od = (extra: Record<string, unknown>) => ({ outlier_detection: { interval: '0.1s', ...extra } })
    proxy = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        listeners: [
          listener(
            'http',
            hcm({
              virtual_hosts: [
                {
                  name: 'all',
                  domains: ['*'],
                  routes: routes(['cb0', 'cb1', 'rq1', 'eject', 'cap', 'down', 'h2', 'slow']),
                },
              ],
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
          staticCluster(
            'eject',
            ejectBackends.map((b) => b.port),
            od({ consecutive_5xx: 3, base_ejection_time: '1s', max_ejection_percent: 100 }),
          ),
          staticCluster('h2', [(h2server.address() as AddressInfo).port], {
            http2_protocol_options: {},
            max_requests_per_connection: 2,
          }),
          staticCluster(
            'slow',
            [blackHole.port, ejectBackends[2]!.port],
            od({ consecutive_5xx: 2, base_ejection_time: '30s', max_ejection_percent: 50 }),
          ),
          staticCluster(
            'down',
            [closedPort, ejectBackends[0]!.port],
            od({ consecutive_5xx: 2, base_ejection_time: '30s', max_ejection_percent: 50 }),
          ),
          staticCluster(
            'cap',
            capBackends.map((b) => b.port),
            od({ consecutive_5xx: 2, base_ejection_time: '30s', max_ejection_percent: 50 }),
          ),
        ],
      },
    })
    port = proxy.ports.http!
  })

  after(async () => {
    releaseAll()
    await proxy?.stop()
    for (const b of [holder, ...ejectBackends, ...capBackends]) await b?.close()
    h2server?.close()
    for (const res of swallowed) res.destroy()
    await blackHole?.close()
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

  test('consecutive_5xx: the failing host is ejected, traffic moves to the others, then it comes back', async () => {
    const seen = { a: 0, bad: 0, c: 0 } as Record<string, number>
    let fails = 0
    while ((await stat(proxy.admin, 'cluster.eject.outlier_detection.ejections_active')) === 0) {
      const r = await get(port, '/eject')
      if (r.status === 503) fails++
      assert.ok(fails <= 3, 'more than 3 errors reached the client before the ejection')
    }
    assert.equal(fails, 3)
    assert.equal(await stat(proxy.admin, 'cluster.eject.outlier_detection.ejections_enforced_consecutive_5xx'), 1)
    const clusters = (await (await fetch(`http://${proxy.admin}/clusters`)).text()).split('\n')
    const badKey = `127.0.0.1:${ejectBackends[1]!.port}`
    assert.ok(clusters.includes(`eject::${badKey}::health_flags::/failed_outlier_check`), clusters.join('\n'))
    for (let i = 0; i < 30; i++) {
      const r = await get(port, '/eject')
      assert.equal(r.status, 200)
      seen[String(r.headers['x-backend'])]!++
    }
    assert.equal(seen.bad, 0)
    assert.ok(seen.a! > 0 && seen.c! > 0, JSON.stringify(seen))
    assert.equal(await stat(proxy.admin, 'cluster.eject.outlier_detection.ejections_active'), 1)
    // the backend recovers; after base_ejection_time (1 s) the host takes traffic again
    badIsBad = false
    await eventually(
      async () => (await stat(proxy.admin, 'cluster.eject.outlier_detection.ejections_active')) === 0,
      5000,
      'the host to return',
    )
    let backOnBad = 0
    for (let i = 0; i < 30; i++) if ((await get(port, '/eject')).headers['x-backend'] === 'bad') backOnBad++
    assert.ok(backOnBad > 0)
  })

  test('max_ejection_percent 50: of 4 failing hosts only 2 are ejected', async () => {
    for (let i = 0; i < 60; i++) assert.equal((await get(port, '/cap')).status, 500)
    assert.equal(await stat(proxy.admin, 'cluster.cap.outlier_detection.ejections_active'), 2)
    assert.equal(await stat(proxy.admin, 'cluster.cap.outlier_detection.ejections_enforced_total'), 2)
    assert.ok((await stat(proxy.admin, 'cluster.cap.outlier_detection.ejections_overflow')) > 0)
    const hosts = (await (await fetch(`http://${proxy.admin}/clusters?format=json`)).json()) as {
      cluster_statuses: { name: string; host_statuses: { health_status: { failed_outlier_check?: boolean } }[] }[]
    }
    const cap = hosts.cluster_statuses.find((c) => c.name === 'cap')!
    assert.equal(cap.host_statuses.filter((h) => h.health_status.failed_outlier_check === true).length, 2)
  })

  test('connect failures count as 503s: a host that refuses connections is ejected', async () => {
    let refused = 0
    for (let i = 0; i < 20; i++) {
      const r = await get(port, '/down')
      if (r.status === 503) {
        assert.equal(r.headers['x-loom-reason'], 'upstream_connect_failure')
        refused++
      } else assert.equal(r.status, 200)
    }
    assert.equal(refused, 2, 'two connect failures, then the host is out')
    assert.equal(await stat(proxy.admin, 'cluster.down.outlier_detection.ejections_enforced_consecutive_5xx'), 1)
    assert.equal(await stat(proxy.admin, 'cluster.down.outlier_detection.ejections_active'), 1)
  })

  test('max_requests_per_connection on an HTTP/2 upstream: a session takes 2 streams, then a new one opens', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await get(port, '/h2')).body, 'h2')
    assert.equal(h2sessions, 3)
    assert.equal(await stat(proxy.admin, 'cluster.h2.upstream_cx_total'), 3)
  })

  test('route timeouts count as local-origin timeouts (504s): a host that never answers is ejected', async () => {
    let timedOut = 0
    for (let i = 0; i < 20; i++) {
      const r = await get(port, '/slow')
      if (r.status === 504) timedOut++
      else assert.equal(r.status, 200)
    }
    assert.equal(timedOut, 2)
    assert.equal(await stat(proxy.admin, 'cluster.slow.outlier_detection.ejections_active'), 1)
  })
})
