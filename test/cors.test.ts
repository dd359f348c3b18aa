/**
 * Envoy's CORS filter through a real `loom proxy` process and a real backend: preflights answered by the proxy,
 * origins not allowed forwarded without CORS headers (or answered bare with forward_not_matching_preflights
 * false), actual requests' responses, a route's policy merged over its virtual host's, and routes without one.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { type RunningProxy, stat, startProxy, filterBootstrap } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const CORS = 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors'
const POLICY = 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy'
const NAME = 'envoy.filters.http.cors'
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })

interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

function request(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, headers, agent }, (res) => {
      let text = ''
      res.setEncoding('latin1')
      res.on('data', (c: string) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
    })
    req.on('error', reject)
    req.end()
  })
}

const policy = (cfg: Record<string, unknown>) => ({ typed_per_filter_config: { [NAME]: { '@type': POLICY, ...cfg } } })
const route = (prefix: string, extra: Record<string, unknown> = {}) => ({
  match: { prefix },
  route: { cluster: 'be' },
  ...extra,
})
const preflight = (origin: string, extra: Record<string, string> = {}) => ({
  origin,
  'access-control-request-method': 'PUT',
  ...extra,
})

function bootstrap(port: number): unknown {
  return filterBootstrap(
    port,
    [
      {
        name: 'api',
        domains: ['api.example'],
        // the virtual host's policy: origins and methods; a route adds what it sets
        ...policy({
          allow_origin_string_match: [{ exact: 'https://vhost.example' }],
          allow_methods: 'GET,PUT',
        }),
        routes: [route('/merged', policy({ max_age: '60', expose_headers: 'x-merged' })), route('/')],
      },
      {
        name: 'all',
        domains: ['*'],
        routes: [
          route(
            '/cors',
            policy({
              allow_origin_string_match: [
                { exact: 'https://app.example' },
                { suffix: '.trusted.example' },
                { safe_regex: { regex: 'https://v[0-9]+\\.example' } },
              ],
              allow_methods: 'GET,PUT,DELETE',
              allow_headers: 'content-type,x-token',
              expose_headers: 'x-request-id,x-custom',
              max_age: '600',
              allow_credentials: true,
              allow_private_network_access: true,
            }),
          ),
          route(
            '/any',
            policy({ allow_origin_string_match: [{ exact: '*' }], allow_methods: '*', allow_headers: '*' }),
          ),
          route(
            '/strict',
            policy({
              allow_origin_string_match: [{ exact: 'https://app.example' }],
              forward_not_matching_preflights: false,
            }),
          ),
          route(
            '/off',
            policy({
              allow_origin_string_match: [{ exact: 'https://app.example' }],
              filter_enabled: { default_value: { numerator: 0 } },
              shadow_enabled: { default_value: { numerator: 100 } },
            }),
          ),
          route('/'),
        ],
      },
    ],
    [{ name: NAME, typed_config: { '@type': CORS } }],
  )
}

describe('CORS filter', () => {
  let be: Backend
  let proxy: RunningProxy
  let port: number
  const counter = async (name: string) => (await stat(proxy.admin, `http.ingress.${name}`)) || 0

  before(async () => {
    be = await startBackend((req, res) => {
      res.setHeader('x-custom', 'backend')
      res.end(`${req.method} ${req.url}`)
    })
    proxy = await startProxy(bootstrap(be.port))
    port = proxy.ports.http!
  })
  after(async () => {
    agent.destroy()
    await proxy.stop()
    await be.close()
  })

  test('a preflight from an allowed origin is answered by the proxy with the access-control-* headers', async () => {
    const seen = be.requests.length
    const valid = await counter('cors.origin_valid')
    const r = await request(port, 'OPTIONS', '/cors/items', preflight('https://app.example'))
    assert.equal(r.status, 200)
    assert.equal(r.body, '')
    assert.equal(be.requests.length, seen)
    assert.equal(r.headers['access-control-allow-origin'], 'https://app.example')
    assert.equal(r.headers['access-control-allow-methods'], 'GET,PUT,DELETE')
    assert.equal(r.headers['access-control-allow-headers'], 'content-type,x-token')
    assert.equal(r.headers['access-control-max-age'], '600')
    assert.equal(r.headers['access-control-allow-credentials'], 'true')
    assert.equal(r.headers['access-control-expose-headers'], undefined)
    assert.equal(r.headers['access-control-allow-private-network'], undefined)
    assert.equal(r.headers['x-loom-reason'], 'cors_preflight')
    assert.equal(await counter('cors.origin_valid'), valid + 1)
    // suffix and regex matchers; private network access when asked for
    const s = await request(
      port,
      'OPTIONS',
      '/cors',
      preflight('https://a.trusted.example', { 'access-control-request-private-network': 'true' }),
    )
    assert.equal(s.headers['access-control-allow-origin'], 'https://a.trusted.example')
    assert.equal(s.headers['access-control-allow-private-network'], 'true')
    const v = await request(port, 'OPTIONS', '/cors', preflight('https://v2.example'))
    assert.equal(v.headers['access-control-allow-origin'], 'https://v2.example')
    // allow_methods / allow_headers '*' echo what the preflight asks for; a matcher matching '*' allows any origin
    const any = await request(
      port,
      'OPTIONS',
      '/any',
      preflight('https://whoever.example', { 'access-control-request-headers': 'x-a,x-b' }),
    )
    assert.equal(any.headers['access-control-allow-origin'], 'https://whoever.example')
    assert.equal(any.headers['access-control-allow-methods'], 'PUT')
    assert.equal(any.headers['access-control-allow-headers'], 'x-a,x-b')
    assert.equal(be.requests.length, seen)
  })

  test('a preflight from an origin not allowed gets no CORS headers and goes on to the backend', async () => {
    const seen = be.requests.length
    const invalid = await counter('cors.origin_invalid')
    const r = await request(port, 'OPTIONS', '/cors', preflight('https://evil.example'))
    assert.equal(r.status, 200)
    assert.equal(r.body, 'OPTIONS /cors')
    assert.equal(be.requests.length, seen + 1)
    for (const k of Object.keys(r.headers)) assert.ok(!k.startsWith('access-control-'), k)
    assert.equal(await counter('cors.origin_invalid'), invalid + 1)
  })

  test('forward_not_matching_preflights false: such a preflight gets a bare 200 from the proxy', async () => {
    const seen = be.requests.length
    const r = await request(port, 'OPTIONS', '/strict', preflight('https://evil.example'))
    assert.equal(r.status, 200)
    assert.equal(r.body, '')
    assert.equal(be.requests.length, seen)
    for (const k of Object.keys(r.headers)) assert.ok(!k.startsWith('access-control-'), k)
    // an allowed origin's preflight is still answered with CORS headers, an OPTIONS without
    // access-control-request-method is not a preflight
    const ok = await request(port, 'OPTIONS', '/strict', preflight('https://app.example'))
    assert.equal(ok.headers['access-control-allow-origin'], 'https://app.example')
    const plain = await request(port, 'OPTIONS', '/strict', { origin: 'https://app.example' })
    assert.equal(plain.body, 'OPTIONS /strict')
  })

  test("an actual request from an allowed origin gets access-control-allow-origin on the backend's response", async () => {
    const r = await request(port, 'GET', '/cors/items', { origin: 'https://app.example' })
    assert.equal(r.status, 200)
    assert.equal(r.body, 'GET /cors/items')
    assert.equal(r.headers['access-control-allow-origin'], 'https://app.example')
    assert.equal(r.headers['access-control-allow-credentials'], 'true')
    assert.equal(r.headers['access-control-expose-headers'], 'x-request-id,x-custom')
    assert.equal(r.headers['access-control-allow-methods'], undefined)
    const bad = await request(port, 'GET', '/cors/items', { origin: 'https://evil.example' })
    assert.equal(bad.status, 200)
    assert.equal(bad.headers['access-control-allow-origin'], undefined)
    // no Origin: not a CORS request
    assert.equal((await request(port, 'GET', '/cors')).headers['access-control-allow-origin'], undefined)
  })

  test("a route's policy is merged over its virtual host's; a route without a policy inherits the host's", async () => {
    const h = { host: 'api.example' }
    const r = await request(port, 'OPTIONS', '/merged', { ...h, ...preflight('https://vhost.example') })
    assert.equal(r.headers['access-control-allow-origin'], 'https://vhost.example')
    assert.equal(r.headers['access-control-allow-methods'], 'GET,PUT')
    assert.equal(r.headers['access-control-max-age'], '60')
    const a = await request(port, 'GET', '/merged', { ...h, origin: 'https://vhost.example' })
    assert.equal(a.headers['access-control-expose-headers'], 'x-merged')
    const i = await request(port, 'OPTIONS', '/inherit', { ...h, ...preflight('https://vhost.example') })
    assert.equal(i.headers['access-control-allow-origin'], 'https://vhost.example')
    assert.equal(i.headers['access-control-max-age'], undefined)
  })

  test('routes without a policy, and a shadowed policy, add nothing (the shadow counts)', async () => {
    const r = await request(port, 'OPTIONS', '/other', preflight('https://app.example'))
    assert.equal(r.body, 'OPTIONS /other')
    assert.equal(r.headers['access-control-allow-origin'], undefined)
    const valid = await counter('cors.origin_valid')
    const s = await request(port, 'OPTIONS', '/off', preflight('https://app.example'))
    assert.equal(s.body, 'OPTIONS /off')
    assert.equal(s.headers['access-control-allow-origin'], undefined)
    assert.equal(await counter('cors.origin_valid'), valid + 1)
  })
})
