/**
 * GlobalRateLimit → sidecar config: the filter and the per-virtual-host limits the translator emits, their trip
 * through protobuf (Loom's own Any types), and what the proxy compiles from them.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import * as v from 'valibot'
import { Listener, RouteConfiguration } from '../../config/envoy.js'
import { TypeUrls } from '../../config/type-urls.js'
import { GlobalRateLimitPolicy } from '../../proxy/http/filters/global-ratelimit/global-ratelimit.js'
import { compileRouteConfig } from '../../proxy/route/router.js'
import { decodeResource, encodeResource } from '../../xds/proto.js'
import { TYPE_URL } from '../../xds/snapshot.js'
import { bookinfoRegistry, manifests, PRODUCTPAGE } from '../translate/testdata/bookinfo.js'
import { translateResources } from '../translate/translate.js'
import type { Json } from '../translate/util.js'
import { GLOBAL_RATELIMIT_FILTER } from './translate.js'

const LIMITS = `
apiVersion: loom.dev/v1alpha1
kind: GlobalRateLimit
metadata: { name: reviews-writes, namespace: default }
spec:
  hosts: [reviews]
  match: { method: POST, pathPrefix: /reviews, headers: { x-tenant: { exact: free }, x-trace: {} } }
  requestsPerSecond: 20
  onControlPlaneUnavailable: DenyAll
---
apiVersion: loom.dev/v1alpha1
kind: GlobalRateLimit
metadata: { name: all-default, namespace: default }
spec:
  hosts: ["*.default.svc.cluster.local"]
  requests: 600
  interval: 1m
  burst: 5
`

const services = bookinfoRegistry().services()
const run = (yaml: string) =>
  translateResources({ resources: yaml === '' ? [] : manifests(yaml), services }, PRODUCTPAGE)

function outbound(r: ReturnType<typeof run>) {
  const listener = r.listeners.find((l) => l.name === 'outbound_http')!
  const hcm = (((listener.filter_chains as Json[])[0]!.filters as Json[])[0]!.typed_config as Json) ?? {}
  const routes = r.routes.find((x) => x.name === 'outbound')!
  return { listener, filters: (hcm.http_filters as Json[]).map((f) => f.name), routes }
}

const vhost = (routes: Json, name: string) => (routes.virtual_hosts as Json[]).find((h) => h.name === name)!

describe('GlobalRateLimit translation', () => {
  test('without a limit the connection manager has no global rate limit filter', () => {
    const { filters, routes } = outbound(run(''))
    assert.deepEqual(filters, [
      'loom.filters.http.explain',
      'envoy.filters.http.fault',
      'envoy.filters.http.cors',
      'istio.stats',
      'envoy.filters.http.router',
    ])
    for (const h of routes.virtual_hosts as Json[]) assert.equal(h.typed_per_filter_config, undefined)
  })

  test('the filter goes after fault and CORS; each named host gets its limits in config order (oldest, then by name)', () => {
    const { filters, routes } = outbound(run(LIMITS))
    assert.deepEqual(filters, [
      'loom.filters.http.explain',
      'envoy.filters.http.fault',
      'envoy.filters.http.cors',
      GLOBAL_RATELIMIT_FILTER,
      'istio.stats',
      'envoy.filters.http.router',
    ])
    const reviews = vhost(routes, 'reviews.default.svc.cluster.local:9080')
    assert.deepEqual(reviews.typed_per_filter_config, {
      [GLOBAL_RATELIMIT_FILTER]: {
        '@type': TypeUrls.globalRateLimitPerRoute,
        limits: [
          { name: 'default/all-default', requests_per_second: 10, burst: 5 },
          {
            name: 'default/reviews-writes',
            requests_per_second: 20,
            burst: 20,
            headers: [
              { name: ':method', string_match: { exact: 'POST' } },
              { name: ':path', string_match: { prefix: '/reviews' } },
              { name: 'x-tenant', string_match: { exact: 'free' } },
              { name: 'x-trace', present_match: true },
            ],
            on_control_plane_unavailable: 'DENY_ALL',
          },
        ],
      },
    })
    // the wildcard covers ratings too; only the first limit names reviews
    const ratings = vhost(routes, 'ratings.default.svc.cluster.local:9080')
    const limits = (ratings.typed_per_filter_config as Json)[GLOBAL_RATELIMIT_FILTER] as Json
    assert.deepEqual(
      (limits.limits as Json[]).map((l) => l.name),
      ['default/all-default'],
    )
  })

  test("Loom's Any types survive protobuf, and the proxy's schema and route compiler take them", () => {
    const { listener, routes } = outbound(run(LIMITS))
    for (const [type, resource, schema] of [
      [TYPE_URL.listener, listener, Listener],
      [TYPE_URL.route, routes, RouteConfiguration],
    ] as const) {
      const back = decodeResource(encodeResource(resource as object, type), { withType: false })
      assert.deepEqual(back, resource)
      const parsed = v.safeParse(schema, back)
      assert.ok(parsed.success, JSON.stringify(parsed.issues?.map((i) => i.message)))
    }
    const compiled = compileRouteConfig(v.parse(RouteConfiguration, routes))
    const route = compiled.match({
      authority: 'reviews:9080',
      path: '/reviews/1',
      method: 'POST',
      headers: { list: [] } as never,
    })
    assert.ok(route !== null)
    const policy = route.filterConfigs?.get(GLOBAL_RATELIMIT_FILTER)
    assert.ok(policy instanceof GlobalRateLimitPolicy)
    assert.deepEqual(
      policy.limits.map((l) => [l.state.name, l.state.totalRate, l.state.totalBurst, l.state.unavailable]),
      [
        ['default/all-default', 10, 5, 'KEEP_LAST_SHARE'],
        ['default/reviews-writes', 20, 20, 'DENY_ALL'],
      ],
    )
  })
})
