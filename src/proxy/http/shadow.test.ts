import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import * as v from 'valibot'
import { RouteAction } from '../../config/envoy.js'
import { compileRouteConfig } from '../route/router.js'
import { Headers } from './headers.js'
import { compileMirrorPolicies, shadowAuthority } from './shadow.js'

describe('request mirror policies', () => {
  test('the shadow host: -shadow after the name, before the port (as Envoy)', () => {
    const cases: [string, string][] = [
      ['reviews:9080', 'reviews-shadow:9080'],
      ['reviews', 'reviews-shadow'],
      ['reviews.default.svc.cluster.local:80', 'reviews.default.svc.cluster.local-shadow:80'],
      ['[::1]:8080', '[::1]-shadow:8080'],
      ['[::1]', '[::1]-shadow'],
      ['10.0.0.1:80', '10.0.0.1-shadow:80'],
    ]
    for (const [from, want] of cases) assert.equal(shadowAuthority(from), want, from)
  })

  test('fractions: unset is 100%, denominators, capped at 1', () => {
    assert.equal(compileMirrorPolicies(undefined), null)
    assert.equal(compileMirrorPolicies([]), null)
    const p = compileMirrorPolicies([
      { cluster: 'a' },
      { cluster: 'b', runtime_fraction: { default_value: { numerator: 25 } } },
      { cluster: 'c', runtime_fraction: { default_value: { numerator: 5, denominator: 'TEN_THOUSAND' } } },
      {
        cluster: 'd',
        runtime_fraction: { default_value: { numerator: 200 } },
        disable_shadow_host_suffix_append: true,
      },
      { cluster: 'e', runtime_fraction: { default_value: {} } },
    ])!
    assert.deepEqual(
      p.map((x) => [x.cluster, x.share, x.suffix]),
      [
        ['a', 1, true],
        ['b', 0.25, true],
        ['c', 0.0005, true],
        ['d', 1, false],
        ['e', 0, true],
      ],
    )
  })

  test('the schema is strict: cluster_header and unknown fields are rejected; cluster is required', () => {
    const ok = (m: unknown) => v.safeParse(RouteAction, { cluster: 'x', request_mirror_policies: [m] }).success
    assert.equal(
      ok({ cluster: 'm', trace_sampled: false, runtime_fraction: { default_value: { numerator: 1 } } }),
      true,
    )
    assert.equal(ok({ cluster: 'm', cluster_header: 'x-mirror' }), false)
    assert.equal(ok({ cluster_header: 'x-mirror' }), false)
    assert.equal(ok({ cluster: 'm', extra: 1 }), false)
  })

  test("a route's policies replace its virtual host's whole; mirror clusters count as the route table's clusters", () => {
    const cfg = compileRouteConfig({
      name: 'rc',
      virtual_hosts: [
        {
          name: 'vh',
          domains: ['*'],
          request_mirror_policies: [{ cluster: 'vh-mirror' }],
          routes: [
            { match: { prefix: '/own' }, route: { cluster: 'be', request_mirror_policies: [{ cluster: 'own' }] } },
            { match: { prefix: '/' }, route: { cluster: 'be' } },
          ],
        },
      ],
    })
    const at = (path: string) => cfg.match({ authority: 'a', path, method: 'GET', headers: new Headers() })!
    assert.deepEqual(
      at('/own').mirrors?.map((m) => m.cluster),
      ['own'],
    )
    assert.deepEqual(
      at('/other').mirrors?.map((m) => m.cluster),
      ['vh-mirror'],
    )
    assert.deepEqual([...cfg.clusterNames()].sort(), ['be', 'own', 'vh-mirror'])
    const plain = compileRouteConfig({
      name: 'rc',
      virtual_hosts: [{ name: 'vh', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'be' } }] }],
    })
    assert.equal(plain.match({ authority: 'a', path: '/', method: 'GET', headers: new Headers() })?.mirrors, null)
  })
})
