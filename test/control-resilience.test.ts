/**
 * DestinationRule connectionPool, outlierDetection and retryBudget end to end: `loom control`, a `loom proxy` sidecar
 * on xDS and a backend registered as httpbin; the project's circuit-breaker fixture (one connection, one pending
 * request, any 5xx ejects) applied with `loom apply` and enforced by the caller's sidecar, under the concurrent load
 * of Istio's circuit-breaking task.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { stat, writeTemp } from './helpers/proxy.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const FIXTURE = new URL('../../test/fixtures/istio/httpbin-circuit-breaker.yaml', import.meta.url).pathname
const CLUSTER = 'cluster.outbound|8000||httpbin.default.svc.cluster.local'
/** The backend's service time for /work. */
const SERVICE_MS = 10

/**
 * Istio's circuit-breaking task's load (fortio's `-c <connections> -n <requests> -qps 0`): `connections` callers, each
 * with its own keep-alive connection to the sidecar, sending their share of `requests` one after the other as fast
 * as the answers come. Counts the statuses, and the 503s that are the sidecar's overflow reply (flag UO).
 */
async function load(port: number, connections: number, requests: number) {
  const codes = new Map<number, number>()
  let overflow = 0
  await Promise.all(
    Array.from({ length: connections }, async (_, c) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      try {
        for (let i = c; i < requests; i += connections) {
          const r = await new Promise<{ status: number; reason: string }>((resolve, reject) => {
            http
              .get({ host: '127.0.0.1', port, path: '/work', headers: { host: 'httpbin:8000' }, agent }, (res) => {
                res.resume()
                res.on('end', () =>
                  resolve({ status: res.statusCode ?? 0, reason: String(res.headers['x-loom-reason'] ?? '') }),
                )
              })
              .on('error', reject)
          })
          codes.set(r.status, (codes.get(r.status) ?? 0) + 1)
          if (r.status === 503 && r.reason === 'upstream_overflow') overflow++
        }
      } finally {
        agent.destroy()
      }
    }),
  )
  return { ok: codes.get(200) ?? 0, unavailable: codes.get(503) ?? 0, overflow, codes }
}

/** The sidecar's `upstream_rq_pending_overflow` for httpbin and its HTTP connection managers' UO flags. */
async function overflowStats(admin: string): Promise<{ pending: number; uo: number }> {
  const text = await (await fetch(`http://${admin}/stats`)).text()
  let pending = 0
  let uo = 0
  for (const line of text.split('\n')) {
    const [name, value] = line.split(': ')
    if (name === `${CLUSTER}.upstream_rq_pending_overflow`) pending = Number(value)
    else if (name?.startsWith('http.') && name.endsWith('.response_flag.UO')) uo += Number(value)
  }
  return { pending, uo }
}

function get(port: number, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, headers: { host: 'httpbin:8000' }, agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }))
      })
      .on('error', reject)
  })
}

describe('DestinationRule circuit breaking and outlier detection through loom control', () => {
  let cp: Control
  let sidecar: Proc & { admin: string }
  let backend: Backend
  let out: number
  const held: http.ServerResponse[] = []
  let onArrival: (() => void) | null = null

  before(async () => {
    cp = await startControl()
    backend = await startBackend((req, res) => {
      if (req.url === '/status/500') {
        res.statusCode = 500
        res.end()
      } else if (req.url === '/work') {
        setTimeout(() => res.end('ok'), SERVICE_MS)
      } else if (req.url?.startsWith('/hold') !== true) {
        res.end('ok')
      } else {
        held.push(res)
        onArrival?.()
      }
    })
    const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
      method: 'POST',
      body: JSON.stringify({
        name: 'httpbin-v1',
        namespace: 'default',
        address: '127.0.0.1',
        ports: [{ name: 'http', number: backend.port, servicePort: 8000 }],
        labels: { app: 'httpbin', version: 'v1' },
        ttlSeconds: 600,
      }),
    })
    assert.equal(res.status, 200, await res.text())
    out = await freePort()
    sidecar = await startSidecar(cp.xds, { app: 'sleep', version: 'v1' }, out)
    // the sidecar's first config over xDS: generous on a loaded machine
    await eventually(async () => (await get(out, '/get')).status === 200, 30000, 'httpbin reachable')
  })
  after(async () => {
    for (const r of held.splice(0)) r.end()
    await sidecar?.stop()
    await cp?.stop()
    await backend?.close()
  })

  const arrived = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (held.length < n) return
        onArrival = null
        resolve()
      }
      onArrival = check
      check()
    })

  test('loom apply takes the fixture without a warning; the sidecar gets the thresholds', async () => {
    const r = await cp.loom(['apply', '-f', FIXTURE])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /destinationrules\/httpbin created/)
    assert.doesNotMatch(r.stderr, /Warning/)
    await eventually(
      async () => (await stat(sidecar.admin, `${CLUSTER}.circuit_breakers.default.remaining_cx`)) === 1,
      15000,
      'max_connections 1 on the sidecar',
    )
  })

  test('one connection, one pending request: the third concurrent caller gets 503 UO at once', async () => {
    const first = get(out, '/hold/1')
    await arrived(1)
    const second = get(out, '/hold/2')
    await eventually(async () => (await stat(sidecar.admin, `${CLUSTER}.upstream_rq_pending_active`)) === 1)
    const third = await get(out, '/hold/3')
    assert.equal(third.status, 503)
    assert.equal(third.headers['x-loom-reason'], 'upstream_overflow')
    for (const r of held.splice(0)) r.end('ok')
    assert.equal((await first).status, 200)
    await arrived(1)
    for (const r of held.splice(0)) r.end('ok')
    assert.equal((await second).status, 200)
  })

  test("the task's load: 2 connections × 20 requests mostly pass, 3 × 30 trip the breaker (503 UO, counted)", async () => {
    const before = await overflowStats(sidecar.admin)
    const two = await load(out, 2, 20)
    const three = await load(out, 3, 30)
    const now = await overflowStats(sidecar.admin)
    const summary = `2 connections: ${JSON.stringify([...two.codes])}, 3 connections: ${JSON.stringify([...three.codes])}`
    console.log(`circuit breaking, ${summary}`)
    assert.equal(two.ok + two.unavailable, 20, summary)
    assert.equal(three.ok + three.unavailable, 30, summary)
    // one connection and one waiting request: two callers mostly fit, a third finds both taken
    assert.ok(two.ok >= 15, summary)
    assert.ok(three.unavailable >= 5, summary)
    assert.ok(three.ok >= 5, summary)
    // every 503 is the sidecar's overflow reply, and the sidecar counted each one
    assert.equal(two.overflow, two.unavailable, summary)
    assert.equal(three.overflow, three.unavailable, summary)
    assert.equal(now.pending - before.pending, two.unavailable + three.unavailable)
    assert.equal(now.uo - before.uo, two.unavailable + three.unavailable)
  })

  test('consecutive5xxErrors 1, maxEjectionPercent 100: one 500 ejects the only host', async () => {
    assert.equal((await get(out, '/status/500')).status, 500)
    const after = await get(out, '/get')
    assert.equal(after.status, 503)
    assert.equal(after.headers['x-loom-reason'], 'no_healthy_upstream')
    assert.equal(await stat(sidecar.admin, `${CLUSTER}.outlier_detection.ejections_active`), 1)
  })

  test('trafficPolicy.retryBudget is applied without a warning and sized by the sidecar (the floor when idle)', async () => {
    const rule = writeTemp(
      'httpbin-retry-budget.yaml',
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    retryBudget:
      percent: 20
      minRetryConcurrency: 5
`,
    )
    const r = await cp.loom(['apply', '-f', rule])
    assert.equal(r.code, 0, r.stderr)
    assert.doesNotMatch(r.stderr, /retryBudget/)
    // no request in flight: max(5, 20% of 0) retries may start
    await eventually(
      async () => (await stat(sidecar.admin, `${CLUSTER}.circuit_breakers.default.remaining_retries`)) === 5,
      15000,
      'the retry budget on the sidecar',
    )
  })
})
