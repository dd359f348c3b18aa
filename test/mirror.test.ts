/**
 * Request mirroring through a real `loom proxy`: Envoy's request_mirror_policies. The mirror backend gets a copy of
 * each request with `-shadow` appended to its host and the same body; a mirror that hangs, answers 500 or resets
 * changes nothing for the caller, neither the answer nor the latency; runtime_fraction mirrors a share of requests;
 * the mirror's own timeout (the route timeout) resets it; stats count per mirror cluster.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import * as http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import {
  adminAddress,
  hcm,
  listener,
  type RunningProxy,
  settledStat,
  stat,
  startProxy,
  staticCluster,
} from './helpers/proxy.js'
import { type Backend, startBackend, startRawServer } from './helpers/servers.js'

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })

interface Answer {
  status: number
  body: string
  ms: number
  error?: string
}

function request(port: number, path: string, host: string, body?: string): Promise<Answer> {
  const t0 = performance.now()
  return new Promise((resolve) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: body === undefined ? 'GET' : 'POST', agent, headers: { host } },
      (res) => {
        let text = ''
        res.setEncoding('latin1')
        res.on('data', (c: string) => (text += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, ms: performance.now() - t0 }))
      },
    )
    req.on('error', (e) => resolve({ status: 0, body: '', ms: performance.now() - t0, error: e.message }))
    req.end(body)
  })
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[s.length >> 1]!
}

const mirrored = (prefix: string, policies: Record<string, unknown>[], extra: Record<string, unknown> = {}) => ({
  match: { prefix },
  route: { cluster: 'be', request_mirror_policies: policies, ...extra },
})

describe('request mirroring', () => {
  let be: Backend
  let shadow: Backend
  let hang: Backend
  let fail: Backend
  let reset: Backend
  let half: Backend
  /** accepts connections and never reads from them: a mirror that cannot keep up */
  let stuck: { port: number; close(): Promise<void> }
  /** an HTTP/2 mirror backend: what it saw, as `authority path body` */
  let h2be: http2.Http2Server
  const h2seen: string[] = []
  let proxy: RunningProxy
  let port: number

  before(async () => {
    be = await startBackend((_req, res, body) => res.writeHead(200).end(`main ${body.length}`))
    shadow = await startBackend((_req, res) => res.writeHead(200).end('shadow answer'))
    hang = await startBackend(() => {}) // reads the request, never answers
    fail = await startBackend((_req, res) => res.writeHead(500).end('shadow broke'))
    reset = await startBackend((req) => req.socket.destroy())
    half = await startBackend((_req, res) => res.writeHead(200).end())
    stuck = await startRawServer((sock) => sock.pause())
    h2be = http2.createServer()
    h2be.on('stream', (stream, headers) => {
      let body = ''
      stream.setEncoding('latin1')
      stream.on('data', (c: string) => (body += c))
      stream.on('end', () => {
        h2seen.push(`${headers[':authority']} ${headers[':path']} ${body}`)
        stream.respond({ ':status': 503 })
        stream.end('h2 mirror says no')
      })
    })
    await new Promise<void>((r) => h2be.listen(0, '127.0.0.1', r))
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
                  routes: [
                    { match: { prefix: '/plain' }, route: { cluster: 'be' } },
                    mirrored('/copy', [{ cluster: 'shadow' }]),
                    mirrored('/hang', [{ cluster: 'hang' }], { timeout: '0.5s' }),
                    mirrored('/fail', [
                      { cluster: 'fail', runtime_fraction: { default_value: { numerator: 100 } } },
                      { cluster: 'reset', trace_sampled: false },
                    ]),
                    mirrored('/half', [
                      {
                        cluster: 'half',
                        runtime_fraction: { default_value: { numerator: 500_000, denominator: 'MILLION' } },
                      },
                    ]),
                    mirrored('/stuck', [{ cluster: 'stuck' }]),
                    mirrored('/h2', [{ cluster: 'h2' }]),
                    mirrored('/nosuffix', [{ cluster: 'shadow', disable_shadow_host_suffix_append: true }]),
                  ],
                },
              ],
            }),
          ),
        ],
        clusters: [
          staticCluster('be', [be.port]),
          staticCluster('shadow', [shadow.port]),
          staticCluster('hang', [hang.port]),
          staticCluster('fail', [fail.port]),
          staticCluster('reset', [reset.port]),
          staticCluster('half', [half.port]),
          staticCluster('stuck', [stuck.port]),
          staticCluster('h2', [(h2be.address() as AddressInfo).port], { http2_protocol_options: {} }),
        ],
      },
    })
    port = proxy.ports.http!
  })

  after(async () => {
    agent.destroy()
    await proxy?.stop()
    for (const b of [be, shadow, hang, fail, reset, half, stuck]) await b?.close()
    h2be?.close()
  })

  /** Waits until `backend` has seen `n` requests (mirrors are not waited for by the caller). */
  async function seen(backend: Backend, n: number): Promise<void> {
    for (let i = 0; i < 100 && backend.requests.length < n; i++) await new Promise((r) => setTimeout(r, 20))
  }

  test('the mirror sees every request with -shadow appended to the host and the same body', async () => {
    const body = `${'x'.repeat(200_000)}end`
    for (let i = 0; i < 5; i++) {
      const r = await request(port, `/copy/${i}`, 'reviews:9080', i % 2 === 0 ? body : undefined)
      assert.equal(r.status, 200)
      assert.equal(r.body, `main ${i % 2 === 0 ? body.length : 0}`)
    }
    await seen(shadow, 5)
    assert.equal(shadow.requests.length, 5)
    for (let i = 0; i < 5; i++) {
      const m = shadow.requests.find((q) => q.url === `/copy/${i}`)!
      assert.equal(m.headers.host, 'reviews-shadow:9080')
      assert.equal(m.method, i % 2 === 0 ? 'POST' : 'GET')
      assert.equal(m.body, i % 2 === 0 ? body : '')
    }
    for (const q of be.requests.filter((x) => x.url.startsWith('/copy/'))) assert.equal(q.headers.host, 'reviews:9080')
    assert.equal(await settledStat(proxy.admin, 'cluster.shadow.upstream_rq_total'), 5)
    assert.equal(await stat(proxy.admin, 'cluster.shadow.upstream_rq_2xx'), 5)
    assert.equal(await stat(proxy.admin, 'cluster.shadow.upstream_rq_active'), 0)

    await request(port, '/nosuffix/a', 'reviews:9080')
    await seen(shadow, 6)
    assert.equal(shadow.requests.find((q) => q.url === '/nosuffix/a')?.headers.host, 'reviews:9080')
  })

  test('an HTTP/2 mirror cluster gets the copy with -shadow in :authority; its 503 stays with it', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await request(port, `/h2/${i}`, 'reviews:9080', `body ${i}`)
      assert.equal(r.status, 200)
      assert.equal(r.body, 'main 6')
    }
    for (let i = 0; i < 100 && h2seen.length < 3; i++) await new Promise((r) => setTimeout(r, 20))
    assert.deepEqual(
      h2seen.sort(),
      [0, 1, 2].map((i) => `reviews-shadow:9080 /h2/${i} body ${i}`),
    )
    assert.equal(await settledStat(proxy.admin, 'cluster.h2.upstream_rq_5xx'), 3)
  })

  test('a mirror that never answers does not slow the caller; the route timeout resets it', async () => {
    const plain: number[] = []
    const hung: number[] = []
    for (let i = 0; i < 20; i++) {
      const a = await request(port, `/plain/${i}`, 'web', 'body')
      const b = await request(port, `/hang/${i}`, 'web', 'body')
      assert.equal(a.status, 200)
      assert.equal(b.status, 200)
      assert.equal(b.body, 'main 4')
      plain.push(a.ms)
      hung.push(b.ms)
    }
    const p = median(plain)
    const h = median(hung)
    console.log(`caller latency, median of 20: plain ${p.toFixed(2)} ms, mirrored to a hung backend ${h.toFixed(2)} ms`)
    assert.ok(h < p + 20, `mirrored median ${h} ms vs plain ${p} ms`)
    assert.ok(Math.max(...hung) < 400, `slowest mirrored request ${Math.max(...hung)} ms`)
    await seen(hang, 20)
    assert.equal(hang.requests.length, 20)
    // each hung mirror is reset at the route timeout (0.5s)
    await new Promise((r) => setTimeout(r, 700))
    assert.equal(await stat(proxy.admin, 'cluster.hang.upstream_rq_timeout'), 20)
    assert.equal(await stat(proxy.admin, 'cluster.hang.upstream_rq_active'), 0)
  })

  test("a mirror answering 500 or resetting does not change the caller's answer", async () => {
    for (let i = 0; i < 10; i++) {
      const r = await request(port, `/fail/${i}`, 'web', 'payload')
      assert.equal(r.status, 200)
      assert.equal(r.body, 'main 7')
    }
    await seen(fail, 10)
    await seen(reset, 10)
    assert.equal(fail.requests.length, 10)
    assert.equal(reset.requests.length, 10)
    assert.equal(await settledStat(proxy.admin, 'cluster.fail.upstream_rq_5xx'), 10)
    assert.equal(await stat(proxy.admin, 'cluster.reset.upstream_rq_total'), 10)
    assert.equal(await settledStat(proxy.admin, 'cluster.reset.upstream_rq_active'), 0)
    assert.equal(await stat(proxy.admin, 'cluster.be.upstream_rq_5xx'), 0)
  })

  test('a mirror that cannot keep up with the body is dropped instead of pausing the caller', async () => {
    const big = 'y'.repeat(16 * 1024 * 1024)
    const p = await request(port, '/plain/big', 'web', big)
    const r = await request(port, '/stuck/big', 'web', big)
    console.log(
      `16 MiB upload: plain ${p.ms.toFixed(1)} ms, mirrored to a backend that reads nothing ${r.ms.toFixed(1)} ms`,
    )
    assert.equal(r.status, 200)
    assert.equal(r.body, `main ${big.length}`)
    assert.ok(r.ms < p.ms * 3 + 500, `mirrored upload took ${r.ms} ms, plain ${p.ms} ms`)
    assert.equal(await stat(proxy.admin, 'cluster.stuck.retry_or_shadow_abandoned'), 1)
    assert.equal(await settledStat(proxy.admin, 'cluster.stuck.upstream_rq_active'), 0)
  })

  test('runtime_fraction 50%: about half of 400 requests are mirrored', async () => {
    const batch = 20
    for (let i = 0; i < 400; i += batch) {
      const rs = await Promise.all(Array.from({ length: batch }, (_, j) => request(port, `/half/${i + j}`, 'web')))
      for (const r of rs) assert.equal(r.status, 200)
    }
    const n = await settledStat(proxy.admin, 'cluster.half.upstream_rq_total')
    console.log(`mirrored at 50%: ${n} of 400`)
    // binomial(400, 0.5): sd 10; 140..260 is six deviations
    assert.ok(n >= 140 && n <= 260, `${n} of 400 mirrored`)
    assert.equal(half.requests.length, n)
  })
})
