/** GlobalRateLimit (loom.dev/v1alpha1): what the kind accepts, and what it rejects at the field that is wrong. */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { validateResource } from './kinds.js'
import { burstOf, type GlobalRateLimitSpec, ratePerSecond } from './ratelimit.js'

const res = (spec: unknown, apiVersion = 'loom.dev/v1alpha1') => ({
  apiVersion,
  kind: 'GlobalRateLimit',
  metadata: { name: 'limit' },
  spec,
})

function issuesOf(spec: unknown, apiVersion?: string) {
  const r = validateResource(res(spec, apiVersion))
  return r.ok ? [] : r.issues
}

describe('GlobalRateLimit', () => {
  test('a full spec is accepted as written', () => {
    const spec = {
      hosts: ['reviews', 'ratings.default.svc.cluster.local', '*.example.com'],
      match: { pathPrefix: '/api', method: 'POST', headers: { 'x-tenant': { exact: 'free' } }, invert: false },
      requestsPerSecond: 60,
      burst: 20,
      onControlPlaneUnavailable: 'DenyAll',
    }
    const r = validateResource(res(spec))
    assert.ok(r.ok, JSON.stringify(r))
    assert.deepEqual(r.resource.spec, spec)
    assert.equal(r.resource.metadata.namespace, 'default')
  })

  test('requests per interval, and the defaults', () => {
    const r = validateResource(res({ hosts: ['reviews'], requests: 600, interval: '1m' }))
    assert.ok(r.ok, JSON.stringify(r))
    const spec = r.resource.spec as GlobalRateLimitSpec
    assert.equal(ratePerSecond(spec), 10)
    assert.equal(burstOf(spec), 10)
    assert.equal(burstOf({ hosts: ['x'], requestsPerSecond: 0.5 }), 1)
    assert.equal(burstOf({ hosts: ['x'], requestsPerSecond: 5, burst: 3 }), 3)
  })

  const table: [string, unknown, string, string][] = [
    ['no spec', undefined, 'spec', 'required'],
    ['no hosts', { hosts: [], requestsPerSecond: 1 }, 'spec.hosts', 'at least one host'],
    ['hosts missing', { requestsPerSecond: 1 }, 'spec.hosts', ''],
    ['a bad host', { hosts: ['ok', 'bad_host!'], requestsPerSecond: 1 }, 'spec.hosts[1]', 'invalid'],
    ['host *', { hosts: ['*'], requestsPerSecond: 1 }, 'spec.hosts[0]', 'must name a service'],
    ['a duplicate host', { hosts: ['a', 'a'], requestsPerSecond: 1 }, 'spec.hosts[1]', 'duplicate'],
    ['no rate', { hosts: ['a'] }, 'spec', 'one of requestsPerSecond, requests'],
    ['both rates', { hosts: ['a'], requestsPerSecond: 1, requests: 5, interval: '1s' }, 'spec.requests', 'only one'],
    ['zero rate', { hosts: ['a'], requestsPerSecond: 0 }, 'spec.requestsPerSecond', 'greater than 0'],
    ['rate as a string', { hosts: ['a'], requestsPerSecond: '60' }, 'spec.requestsPerSecond', ''],
    ['requests without interval', { hosts: ['a'], requests: 5 }, 'spec.interval', 'required with requests'],
    ['fractional requests', { hosts: ['a'], requests: 1.5, interval: '1s' }, 'spec.requests', 'integer'],
    ['interval alone', { hosts: ['a'], requestsPerSecond: 1, interval: '1s' }, 'spec.interval', 'only meaningful'],
    ['a bad interval', { hosts: ['a'], requests: 1, interval: 'soon' }, 'spec.interval', ''],
    ['a short interval', { hosts: ['a'], requests: 1, interval: '100ms' }, 'spec.interval', 'at least 1s'],
    ['zero burst', { hosts: ['a'], requestsPerSecond: 1, burst: 0 }, 'spec.burst', 'at least 1'],
    [
      'an unknown mode',
      { hosts: ['a'], requestsPerSecond: 1, onControlPlaneUnavailable: 'Panic' },
      'spec.onControlPlaneUnavailable',
      'KeepLastShare, AllowAll, DenyAll',
    ],
    [
      'a relative prefix',
      { hosts: ['a'], requestsPerSecond: 1, match: { pathPrefix: 'api' } },
      'spec.match.pathPrefix',
      '/',
    ],
    ['a bad method', { hosts: ['a'], requestsPerSecond: 1, match: { method: 'FETCH' } }, 'spec.match.method', 'FETCH'],
    [
      'an upper-case header',
      { hosts: ['a'], requestsPerSecond: 1, match: { headers: { 'X-Tenant': { exact: 'a' } } } },
      'spec.match.headers.X-Tenant',
      'lowercase',
    ],
    [
      'a header match with two kinds',
      { hosts: ['a'], requestsPerSecond: 1, match: { headers: { t: { exact: 'a', prefix: 'b' } } } },
      'spec.match.headers.t',
      'only one of',
    ],
    ['an unknown field', { hosts: ['a'], requestsPerSecond: 1, limit: 5 }, 'spec.limit', ''],
  ]
  for (const [name, spec, path, fragment] of table) {
    test(`rejects ${name} at ${path}`, () => {
      const list = issuesOf(spec)
      const hit = list.find((i) => i.path === path)
      assert.ok(hit, `no issue at ${path}: ${JSON.stringify(list)}`)
      assert.ok(hit.message.includes(fragment), `${hit.message} should include ${fragment}`)
    })
  }

  test('only loom.dev/v1alpha1 serves it', () => {
    const list = issuesOf({ hosts: ['a'], requestsPerSecond: 1 }, 'networking.istio.io/v1')
    assert.equal(list[0]?.path, 'apiVersion')
    assert.match(list[0]!.message, /loom\.dev\/v1alpha1/)
  })
})
