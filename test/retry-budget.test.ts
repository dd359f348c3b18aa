/**
 * The cluster's retry budget (circuit_breakers.thresholds[].retry_budget) through a real `loom proxy`, against a
 * backend that answers every request 503 after a delay, so that many requests are in flight at once.
 *
 * 40 callers send requests back to back (3 each); the route retries 5xx 3 times. The bound the budget implies: a
 * retry holds its slot from the moment it is scheduled until its attempt's outcome is known, and the cluster never
 * has more than 40 requests in flight (one attempt per caller), so at no instant does the backend see more than
 * max(min_retry_concurrency, floor(20% × 40)) = 8 retry attempts at once. Every retry the budget refuses counts
 * `upstream_rq_retry_overflow` and that request ends with the 503 of its failed attempt: the overflow count equals
 * the number of requests the backend saw fewer than 4 times. Without the budget (Istio's thresholds, max_retries
 * 2^32-1) every request is tried 4 times.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { adminAddress, hcm, listener, type RunningProxy, stat, startProxy, staticCluster } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const CALLERS = 40
const PER_CALLER = 3
const RETRIES = 3
const PERCENT = 20
const FLOOR = 2
const SERVICE_MS = 200
const NO_LIMIT = 4294967295
/** The most retries the budget lets be in flight with CALLERS requests in flight. */
const BOUND = Math.max(FLOOR, Math.floor((PERCENT / 100) * CALLERS))

/** What the backend saw for one cluster's requests. */
class Seen {
  /** attempts per request id */
  readonly attempts = new Map<string, number>()
  total = 0
  retriesNow = 0
  maxRetriesAtOnce = 0
}

const unlimited = {
  max_connections: NO_LIMIT,
  max_pending_requests: NO_LIMIT,
  max_requests: NO_LIMIT,
  max_retries: NO_LIMIT,
  track_remaining: true,
}

function get(port: number, agent: http.Agent, path: string, id: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent, headers: { 'x-request-id': id } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
}

/** CALLERS callers, each sending PER_CALLER requests one after the other; every answer. */
async function load(port: number, path: string): Promise<{ status: number; body: string }[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CALLERS })
  const out: { status: number; body: string }[] = []
  try {
    await Promise.all(
      Array.from({ length: CALLERS }, async (_, c) => {
        for (let i = 0; i < PER_CALLER; i++) out.push(await get(port, agent, path, `${path}-${c}-${i}`))
      }),
    )
  } finally {
    agent.destroy()
  }
  return out
}

describe('retry budget', () => {
  const seen = { budget: new Seen(), open: new Seen() }
  let be: Backend
  let proxy: RunningProxy
  let port: number

  before(async () => {
    be = await startBackend((req, res) => {
      const s = req.url === '/budget' ? seen.budget : seen.open
      const id = String(req.headers['x-request-id'])
      s.attempts.set(id, (s.attempts.get(id) ?? 0) + 1)
      s.total++
      const retry = Number(req.headers['x-envoy-attempt-count']) > 1
      if (retry && ++s.retriesNow > s.maxRetriesAtOnce) s.maxRetriesAtOnce = s.retriesNow
      setTimeout(() => {
        if (retry) s.retriesNow--
        res.writeHead(503, { 'content-type': 'text/plain' }).end('backend says 503')
      }, SERVICE_MS)
    })
    const route = (path: string) => ({
      match: { path },
      route: {
        cluster: path.slice(1),
        timeout: '30s',
        retry_policy: { retry_on: '5xx', num_retries: RETRIES, retry_back_off: { base_interval: '0.005s' } },
      },
    })
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
                  routes: [route('/budget'), route('/open')],
                },
              ],
            }),
          ),
        ],
        clusters: [
          staticCluster('budget', [be.port], {
            circuit_breakers: {
              thresholds: [
                {
                  ...unlimited,
                  retry_budget: { budget_percent: { value: PERCENT }, min_retry_concurrency: FLOOR },
                },
              ],
            },
          }),
          staticCluster('open', [be.port], { circuit_breakers: { thresholds: [unlimited] } }),
        ],
      },
    })
    port = proxy.ports.http!
  })

  after(async () => {
    await proxy?.stop()
    await be?.close()
  })

  test(`20% of ${CALLERS} requests in flight: at most ${BOUND} retries at once, the refused ones counted`, async () => {
    const answers = await load(port, '/budget')
    const s = seen.budget
    const requests = CALLERS * PER_CALLER
    // every request ends with its last attempt's 503 (a refused retry leaves the failed attempt's answer)
    assert.equal(answers.length, requests)
    for (const a of answers) assert.deepEqual(a, { status: 503, body: 'backend says 503' })
    assert.equal(s.attempts.size, requests)
    assert.ok(s.maxRetriesAtOnce <= BOUND, `${s.maxRetriesAtOnce} retries at once, the budget allows ${BOUND}`)
    assert.ok(s.maxRetriesAtOnce >= 1, 'some retries were made')
    // each request either ran out of retries (4 attempts) or had one refused by the budget
    const cut = [...s.attempts.values()].filter((n) => n < RETRIES + 1).length
    assert.ok(cut > 0)
    assert.equal(await stat(proxy.admin, 'cluster.budget.upstream_rq_retry_overflow'), cut)
    assert.equal(await stat(proxy.admin, 'cluster.budget.upstream_rq_retry'), s.total - requests)
    assert.equal(
      await stat(proxy.admin, 'cluster.budget.upstream_rq_retry_limit_exceeded'),
      requests - cut,
      'the rest ran out of retries',
    )
    console.log(
      `retry budget: ${requests} requests, ${s.total} attempts (${(s.total / requests).toFixed(2)} per request), ` +
        `${s.maxRetriesAtOnce} retries at once (bound ${BOUND}), ${cut} retries refused`,
    )
  })

  test('without the budget (max_retries 2^32-1, as Istio writes it): every request is tried 4 times', async () => {
    const answers = await load(port, '/open')
    const s = seen.open
    const requests = CALLERS * PER_CALLER
    for (const a of answers) assert.deepEqual(a, { status: 503, body: 'backend says 503' })
    assert.equal(s.total, requests * (RETRIES + 1))
    for (const n of s.attempts.values()) assert.equal(n, RETRIES + 1)
    assert.equal(await stat(proxy.admin, 'cluster.open.upstream_rq_retry_overflow'), 0)
    assert.ok(s.maxRetriesAtOnce > BOUND, `${s.maxRetriesAtOnce} retries at once without a budget`)
    console.log(`no budget: ${requests} requests, ${s.total} attempts, ${s.maxRetriesAtOnce} retries at once`)
  })
})
