/**
 * Envoy's local rate limit filter through a real `loom proxy` process and a real backend: the filter's own bucket
 * (shared by every connection), its refill, the x-ratelimit-* headers, a per-route override with its own bucket,
 * a shadow (not enforced) override, and a route whose override disables the filter.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { eventually } from './helpers/control.js'
import { type RunningProxy, runLoom, stat, startProxy, writeTemp, filterBootstrap } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const RL = 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit'
const NAME = 'envoy.filters.http.local_ratelimit'
// several connections at once: the buckets are shared by all of them
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })

interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

function request(port: number, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent }, (res) => {
      let text = ''
      res.setEncoding('latin1')
      res.on('data', (c: string) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
    })
    req.on('error', reject)
    req.end()
  })
}

const burst = (port: number, path: string, n: number) =>
  Promise.all(Array.from({ length: n }, () => request(port, path)))

const all = { default_value: { numerator: 100 } }
const none = { default_value: { numerator: 0 } }
const override = (cfg: Record<string, unknown>) => ({
  typed_per_filter_config: { [NAME]: { '@type': RL, ...cfg } },
})
const route = (prefix: string, extra: Record<string, unknown> = {}) => ({
  match: { prefix },
  route: { cluster: 'be' },
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
          route(
            '/own',
            override({
              stat_prefix: 'own',
              token_bucket: { max_tokens: 2, tokens_per_fill: 2, fill_interval: '60s' },
              filter_enabled: all,
              filter_enforced: all,
              status: { code: 'ServiceUnavailable' },
            }),
          ),
          route(
            '/shadow',
            override({
              stat_prefix: 'shadow',
              token_bucket: { max_tokens: 3, fill_interval: '60s' },
              filter_enabled: all,
              filter_enforced: none,
              request_headers_to_add_when_not_enforced: [{ header: { key: 'x-would-be-limited', value: 'yes' } }],
            }),
          ),
          route('/off', override({ stat_prefix: 'off', filter_enabled: none })),
          route('/'),
        ],
      },
    ],
    [
      {
        name: NAME,
        typed_config: {
          '@type': RL,
          stat_prefix: 'rl',
          token_bucket: { max_tokens: 5, tokens_per_fill: 5, fill_interval: '1s' },
          filter_enabled: all,
          filter_enforced: all,
          enable_x_ratelimit_headers: 'DRAFT_VERSION_03',
          response_headers_to_add: [{ header: { key: 'x-local-rate-limit', value: 'true' } }],
        },
      },
    ],
  )
}

describe('local rate limit filter', () => {
  let be: Backend
  let proxy: RunningProxy
  let port: number
  const counter = async (name: string) => (await stat(proxy.admin, `http.ingress.${name}`)) || 0

  before(async () => {
    be = await startBackend((req, res) => res.end(req.url))
    proxy = await startProxy(bootstrap(be.port))
    port = proxy.ports.http!
  })
  after(async () => {
    agent.destroy()
    await proxy.stop()
    await be.close()
  })

  test('a bucket of 5 lets 5 of 20 fast requests through and refuses the rest with 429, RL and x-ratelimit-*', async () => {
    const seen = be.requests.length
    const rs = await burst(port, '/', 20)
    const ok = rs.filter((r) => r.status === 200)
    const limited = rs.filter((r) => r.status === 429)
    assert.equal(ok.length, 5)
    assert.equal(limited.length, 15)
    assert.equal(be.requests.length, seen + 5)
    for (const r of limited) {
      assert.equal(r.body, 'local_rate_limited')
      assert.equal(r.headers['x-loom-reason'], 'local_rate_limited')
      assert.equal(r.headers['x-envoy-ratelimited'], 'true')
      assert.equal(r.headers['x-local-rate-limit'], 'true')
      assert.equal(r.headers['x-ratelimit-limit'], '5')
      assert.equal(r.headers['x-ratelimit-remaining'], '0')
      assert.equal(r.headers['x-ratelimit-reset'], '1')
    }
    // the requests let through say how many tokens were left; response_headers_to_add is for refused ones only
    assert.deepEqual(ok.map((r) => r.headers['x-ratelimit-remaining']).sort(), ['0', '1', '2', '3', '4'])
    for (const r of ok) assert.equal(r.headers['x-local-rate-limit'], undefined)
    assert.equal(await counter('response_flag.RL'), 15)
    assert.equal(await counter('rl.http_local_rate_limit.enabled'), 20)
    assert.equal(await counter('rl.http_local_rate_limit.ok'), 5)
    assert.equal(await counter('rl.http_local_rate_limit.rate_limited'), 15)
    assert.equal(await counter('rl.http_local_rate_limit.enforced'), 15)
  })

  test('the bucket refills: tokens_per_fill every fill_interval', async () => {
    // wait for the fill (the first request let through takes one of its 5 tokens)
    await eventually(async () => (await request(port, '/')).status === 200, 3000, 'a refill')
    const rs = await burst(port, '/', 10)
    assert.equal(rs.filter((r) => r.status === 200).length, 4)
  })

  test('a per-route override has its own bucket and status; the default bucket is untouched by it', async () => {
    const rs = await burst(port, '/own', 6)
    assert.equal(rs.filter((r) => r.status === 200).length, 2)
    assert.equal(rs.filter((r) => r.status === 503).length, 4)
    // its own responses carry no x-ratelimit-* (not enabled in the override)
    for (const r of rs) assert.equal(r.headers['x-ratelimit-limit'], undefined)
    assert.equal(await counter('own.http_local_rate_limit.ok'), 2)
    assert.equal(await counter('own.http_local_rate_limit.enforced'), 4)
  })

  test('filter_enforced 0%: requests over the limit are counted, not refused, and get the not-enforced headers', async () => {
    const seen = be.requests.length
    const rs = await burst(port, '/shadow', 8)
    assert.ok(rs.every((r) => r.status === 200))
    assert.equal(be.requests.length, seen + 8)
    const marked = be.requests.slice(seen).filter((r) => r.headers['x-would-be-limited'] === 'yes')
    assert.equal(marked.length, 5)
    assert.equal(await counter('shadow.http_local_rate_limit.ok'), 3)
    assert.equal(await counter('shadow.http_local_rate_limit.rate_limited'), 5)
    assert.equal(await counter('shadow.http_local_rate_limit.enforced'), 0)
  })

  test('an override without a bucket turns the filter off for its route', async () => {
    const rs = await burst(port, '/off', 20)
    assert.ok(rs.every((r) => r.status === 200))
    assert.equal(await counter('off.http_local_rate_limit.enabled'), 0)
  })

  test('a fill_interval under 50ms is refused with its path', async () => {
    const text = JSON.stringify(bootstrap(be.port)).replace('"fill_interval":"1s"', '"fill_interval":"0.010s"')
    const r = await runLoom(['validate', '-c', writeTemp('rl-bad.json', text)])
    assert.notEqual(r.code, 0)
    assert.match(
      r.stdout + r.stderr,
      /http_filters\[0\]\.typed_config\.token_bucket\.fill_interval: must be at least 50ms/,
    )
  })
})
