import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import * as v from 'valibot'
import type { Resource } from '../../api/index.js'
import { Listener } from '../../config/envoy.js'
import type { Snapshot } from '../../xds/snapshot.js'
import { TYPE_URL } from '../../xds/snapshot.js'
import { Registry } from '../registry/registry.js'
import {
  bookinfoRegistry,
  bookinfoSelfRegistered,
  INGRESS,
  manifests,
  PRODUCTPAGE,
  REVIEWS_V2,
  samples,
  sidecar,
} from './testdata/bookinfo.js'
import {
  BatchTranslator,
  type TranslatedResources,
  type TranslateNode,
  translate,
  translateResources,
} from './translate.js'
import type { Json } from './util.js'

// === helpers ===

const GOLDEN_DIR = fileURLToPath(new URL('../../../../src/control/translate/testdata/', import.meta.url))

/**
 * Compares with testdata/<name> as JSON values (so the file's formatting does not matter); `UPDATE_GOLDEN=1` rewrites
 * the file instead (then `npx biome format --write src/control` to keep the linter happy).
 */
function golden(name: string, value: unknown): void {
  const file = join(GOLDEN_DIR, name)
  if (process.env.UPDATE_GOLDEN === '1') writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`)
  assert.deepStrictEqual(value, JSON.parse(readFileSync(file, 'utf8')), `${name} differs (UPDATE_GOLDEN=1 to accept)`)
}

function snapshotJson(s: Snapshot): Json {
  const out: Json = {}
  for (const [type, { version, items }] of s.resources) out[type] = { version, items: Object.fromEntries(items) }
  return out
}

const BOOKINFO = bookinfoRegistry().services()

function run(resources: Resource[], node: TranslateNode = PRODUCTPAGE, services = BOOKINFO): TranslatedResources {
  return translateResources({ resources, services }, node)
}

const names = (list: Json[]) => list.map((x) => x.name as string)
const TCP_PROXY = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy'

/** A route as `<match> → <cluster or {cluster: weight}>`, the part the tests care about. */
function summary(route: Json): string {
  const m = route.match as Json
  const parts: string[] = []
  if (m.prefix !== undefined) parts.push(`prefix ${m.prefix}`)
  if (m.path !== undefined) parts.push(`path ${m.path}`)
  if (m.safe_regex !== undefined) parts.push(`regex ${(m.safe_regex as Json).regex}`)
  for (const h of (m.headers as Json[] | undefined) ?? [])
    parts.push(`${h.name}=${JSON.stringify(h.string_match ?? h)}`)
  const a = route.route as Json | undefined
  if (a === undefined) return `${parts.join(' ')} → ${route.redirect !== undefined ? 'redirect' : 'direct'}`
  const short = (c: string) => c.replace(/\.default\.svc\.cluster\.local$/, '')
  const target =
    a.cluster !== undefined
      ? short(a.cluster as string)
      : ((a.weighted_clusters as Json).clusters as Json[])
          .map((c) => `${short(c.name as string)}@${c.weight}`)
          .join(' ')
  return `${parts.join(' ')} → ${target}`
}

function vhost(r: TranslatedResources, routeConfig: string, name: string): Json {
  const rc = r.routes.find((x) => x.name === routeConfig)
  assert.ok(rc, `no route configuration ${routeConfig}`)
  const vh = (rc.virtual_hosts as Json[]).find((v) => v.name === name)
  assert.ok(vh, `no virtual host ${name} in ${routeConfig}: ${names(rc.virtual_hosts as Json[])}`)
  return vh
}

const routesOf = (r: TranslatedResources, host: string, rc = 'outbound', port = 9080) =>
  (vhost(r, rc, `${host}:${port}`).routes as Json[]).map(summary)

/** `address:port` per locality (`region/zone/sub_zone`) of a cluster's load assignment. */
function eds(r: TranslatedResources, cluster: string): Record<string, string[]> {
  const cla = r.endpoints.find((e) => e.cluster_name === cluster)
  assert.ok(cla, `no load assignment for ${cluster}`)
  const out: Record<string, string[]> = {}
  for (const g of cla.endpoints as Json[]) {
    const l = g.locality as Json
    const lbs = g.lb_endpoints as Json[]
    assert.equal(
      g.load_balancing_weight,
      lbs.reduce((n, e) => n + (e.load_balancing_weight as number), 0),
    )
    out[`${l.region}/${l.zone}/${l.sub_zone}`] = lbs.map((e) => {
      const sa = ((e.endpoint as Json).address as Json).socket_address as Json
      return `${sa.address}:${sa.port_value}`
    })
  }
  return out
}

const REVIEWS = 'reviews.default.svc.cluster.local'
const c = (subset: string, host = REVIEWS, port = 9080) => `outbound|${port}|${subset}|${host}`

// === Bookinfo ===

describe('Bookinfo sidecar (productpage)', () => {
  const ALL_V1 = ['virtual-service-all-v1.yaml', 'destination-rule-all.yaml']
  const cases: { name: string; files: string[]; reviews: string[]; others?: Record<string, string[]> }[] = [
    {
      name: 'no routing config: default routes',
      files: [],
      reviews: [`prefix / → outbound|9080||reviews`],
      others: { details: ['prefix / → outbound|9080||details'], ratings: ['prefix / → outbound|9080||ratings'] },
    },
    {
      name: 'virtual-service-all-v1',
      files: ALL_V1,
      reviews: ['prefix / → outbound|9080|v1|reviews'],
      others: {
        details: ['prefix / → outbound|9080|v1|details'],
        productpage: ['prefix / → outbound|9080|v1|productpage'],
        ratings: ['prefix / → outbound|9080|v1|ratings'],
      },
    },
    {
      name: 'virtual-service-reviews-jason-v2-v3 (header match, then catch-all)',
      files: [...ALL_V1, 'virtual-service-reviews-jason-v2-v3.yaml'],
      reviews: [
        'prefix / end-user={"exact":"jason"} → outbound|9080|v2|reviews',
        'prefix / → outbound|9080|v3|reviews',
      ],
      others: { ratings: ['prefix / → outbound|9080|v1|ratings'] },
    },
    {
      name: 'virtual-service-reviews-80-20 (weights)',
      files: [...ALL_V1, 'virtual-service-reviews-80-20.yaml'],
      reviews: ['prefix / → outbound|9080|v1|reviews@80 outbound|9080|v2|reviews@20'],
    },
    {
      name: 'request timeout 0.5s',
      files: [...ALL_V1, 'request-timeouts-reviews-timeout-0.5s.yaml'],
      reviews: ['prefix / → outbound|9080|v2|reviews'],
    },
    {
      name: 'fault injection: the routes still apply',
      files: ['fault-injection-details-v1.yaml'],
      reviews: ['prefix / → outbound|9080||reviews'],
      others: { details: ['prefix / → outbound|9080|v1|details'] },
    },
  ]
  for (const tc of cases) {
    it(tc.name, () => {
      const r = run(samples(...tc.files))
      assert.deepEqual(routesOf(r, REVIEWS), tc.reviews)
      for (const [svc, want] of Object.entries(tc.others ?? {})) {
        assert.deepEqual(routesOf(r, `${svc}.default.svc.cluster.local`), want, svc)
      }
    })
  }

  it("fault: the fault filter's per-route config on the rule's route, as Envoy's HTTPFault", () => {
    const r = run(samples('fault-injection-details-v1.yaml'))
    const routes = vhost(r, 'outbound', 'details.default.svc.cluster.local:9080').routes as Json[]
    assert.deepEqual(routes[0]!.typed_per_filter_config, {
      'envoy.filters.http.fault': {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault',
        abort: { http_status: 555, percentage: { numerator: 1_000_000, denominator: 'MILLION' } },
      },
    })
    assert.equal(routes.length, 1, 'the second rule is unreachable behind a rule without a match')
    const plain = run(samples('virtual-service-all-v1.yaml', 'destination-rule-all.yaml'))
    const other = vhost(plain, 'outbound', 'details.default.svc.cluster.local:9080').routes as Json[]
    assert.equal(other[0]!.typed_per_filter_config, undefined, 'a rule without fault gets no per-route config')
  })

  it('fault: delays with percentage or the older integer percent, gRPC status names, unset percentages', () => {
    const f = (fault: string) => {
      const yaml = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http: [{fault: ${fault}, route: [{destination: {host: ratings}}]}]
`
      const routes = vhost(run(manifests(yaml)), 'outbound', 'ratings.default.svc.cluster.local:9080').routes as Json[]
      const { '@type': _, ...rest } = (routes[0]!.typed_per_filter_config as Json)['envoy.filters.http.fault'] as Json
      return rest
    }
    assert.deepEqual(f('{delay: {fixedDelay: 7s, percentage: {value: 0.1}}}'), {
      delay: { fixed_delay: '7s', percentage: { numerator: 1000, denominator: 'MILLION' } },
    })
    assert.deepEqual(f('{delay: {fixedDelay: 2.5s, percent: 50}}'), {
      delay: { fixed_delay: '2.5s', percentage: { numerator: 50, denominator: 'HUNDRED' } },
    })
    assert.deepEqual(f('{abort: {grpcStatus: UNAVAILABLE, percentage: {value: 20}}}'), {
      abort: { grpc_status: 14, percentage: { numerator: 200_000, denominator: 'MILLION' } },
    })
    assert.deepEqual(f('{abort: {httpStatus: 503}}'), { abort: { http_status: 503 } }, 'unset: 0%, as in Istio')
  })

  it("corsPolicy: the CORS filter's per-route config, as Istio's TranslateCORSPolicy writes Envoy's CorsPolicy", () => {
    const cors = (policy: string, extra = '') => {
      const yaml = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http: [{corsPolicy: ${policy}, ${extra} route: [{destination: {host: ratings}}]}]
`
      const routes = vhost(run(manifests(yaml)), 'outbound', 'ratings.default.svc.cluster.local:9080').routes as Json[]
      return routes[0]!.typed_per_filter_config as Json
    }
    const all = { default_value: { numerator: 100, denominator: 'HUNDRED' } }
    assert.deepEqual(
      cors(`{allowOrigins: [{exact: 'https://a.example'}, {prefix: 'https://b.'}, {regex: 'https://.*[.]c[.]example'}],
        allowMethods: [GET, POST], allowHeaders: [content-type, x-token], exposeHeaders: [x-id],
        maxAge: 24h, allowCredentials: true}`),
      {
        'envoy.filters.http.cors': {
          '@type': 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy',
          allow_origin_string_match: [
            { exact: 'https://a.example' },
            { prefix: 'https://b.' },
            { safe_regex: { regex: 'https://.*[.]c[.]example' } },
          ],
          allow_methods: 'GET,POST',
          allow_headers: 'content-type,x-token',
          expose_headers: 'x-id',
          max_age: '86400',
          allow_credentials: true,
          filter_enabled: all,
          forward_not_matching_preflights: true,
        },
      },
    )
    // the deprecated allowOrigin: exact matches; unmatchedPreflights IGNORE: answered, not forwarded
    assert.deepEqual(cors(`{allowOrigin: ['https://old.example', '*'], unmatchedPreflights: IGNORE}`), {
      'envoy.filters.http.cors': {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy',
        allow_origin_string_match: [{ exact: 'https://old.example' }, { exact: '*' }],
        filter_enabled: all,
        forward_not_matching_preflights: false,
      },
    })
    // allowOrigins wins over allowOrigin; maxAge in whole seconds; allowCredentials false is kept
    const both = cors(`{allowOrigins: [{exact: 'https://new.example'}], allowOrigin: ['https://old.example'],
      maxAge: 90s, allowCredentials: false, unmatchedPreflights: FORWARD}`)['envoy.filters.http.cors'] as Json
    assert.deepEqual(both.allow_origin_string_match, [{ exact: 'https://new.example' }])
    assert.equal(both.max_age, '90')
    assert.equal(both.allow_credentials, false)
    assert.equal(both.forward_not_matching_preflights, true)
    // beside a fault, both filters get their config
    assert.deepEqual(
      Object.keys(cors(`{allowOrigins: [{exact: 'https://a.example'}]}`, 'fault: {abort: {httpStatus: 500}},')),
      ['envoy.filters.http.fault', 'envoy.filters.http.cors'],
    )
  })

  it('every connection manager runs the explain filter, the fault filter, the CORS filter, istio.stats, then the router (Istio chain order)', () => {
    const names = (l: Json) =>
      (
        ((((l.filter_chains as Json[])[0]!.filters as Json[])[0]!.typed_config as Json).http_filters as Json[]) ?? []
      ).map((f) => f.name)
    for (const [node, r] of [
      ['sidecar', run([])],
      ['gateway', run(samples('bookinfo-gateway.yaml'), INGRESS)],
    ] as const) {
      assert.ok(r.listeners.length > 0, node)
      for (const l of r.listeners) {
        assert.deepEqual(
          names(l),
          [
            'loom.filters.http.explain',
            'envoy.filters.http.fault',
            'envoy.filters.http.cors',
            'istio.stats',
            'envoy.filters.http.router',
          ],
          `${node} ${l.name}`,
        )
      }
    }
  })

  it('timeouts: none by default, the VirtualService timeout when set', () => {
    const r = run(samples(...ALL_V1, 'request-timeouts-reviews-timeout-0.5s.yaml'))
    const timeout = (host: string) =>
      ((vhost(r, 'outbound', `${host}:9080`).routes as Json[])[0]!.route as Json).timeout
    assert.equal(timeout(REVIEWS), '0.5s')
    assert.equal(timeout('details.default.svc.cluster.local'), '0s')
  })

  it("retries: Istio's default policy without `retries`, none with attempts 0, the rule's settings otherwise", () => {
    const PREV = {
      name: 'envoy.retry_host_predicates.previous_hosts',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate',
      },
    }
    const DEFAULT = {
      retry_on: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
      num_retries: 2,
      retry_host_predicate: [PREV],
      host_selection_retry_max_attempts: 5,
    }
    const policy = (retries: string | null, dr = '') => {
      const yaml = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http: [{${retries === null ? '' : `retries: ${retries}, `}route: [{destination: {host: ratings}}]}]
${dr}`
      const routes = vhost(run(manifests(yaml)), 'outbound', 'ratings.default.svc.cluster.local:9080').routes as Json[]
      return (routes[0]!.route as Json).retry_policy
    }
    assert.deepEqual(policy(null), DEFAULT)
    assert.equal(policy('{attempts: 0}'), undefined, 'attempts 0 turns retries off')
    assert.deepEqual(policy('{attempts: 4}'), { ...DEFAULT, num_retries: 4 })
    assert.deepEqual(
      policy("{attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error, 503,retriable-headers', backoff: 100ms}"),
      {
        retry_on: 'gateway-error,retriable-status-codes',
        retriable_status_codes: [503],
        num_retries: 3,
        per_try_timeout: '2s',
        retry_back_off: { base_interval: '0.1s' },
        retry_host_predicate: [PREV],
        host_selection_retry_max_attempts: 5,
      },
    )
    const { retry_host_predicate: _, ...noPredicate } = DEFAULT
    assert.deepEqual(policy('{attempts: 2, retryIgnorePreviousHosts: false}'), noPredicate)
    const hashed = `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
`
    assert.deepEqual(policy(null, hashed), noPredicate, 'consistent hash: retries stay on the hashed host')
    // a service without a VirtualService: the default policy on its default route
    const r = run([])
    const route = (vhost(r, 'outbound', `${REVIEWS}:9080`).routes as Json[])[0]!.route as Json
    assert.deepEqual(route.retry_policy, DEFAULT)
  })

  it('virtual hosts carry every name a client in the namespace may use, with the port', () => {
    const r = run([])
    assert.deepEqual(vhost(r, 'outbound', `${REVIEWS}:9080`).domains, [
      'reviews.default.svc.cluster.local:9080',
      'reviews:9080',
      'reviews.default.svc:9080',
      'reviews.default:9080',
    ])
    const other = run([], sidecar('sleep', 'v1', '10.9.9.9', { namespace: 'prod' }))
    assert.deepEqual(vhost(other, 'outbound', `${REVIEWS}:9080`).domains, [
      'reviews.default.svc.cluster.local:9080',
      'reviews.default:9080',
      'reviews.default.svc:9080',
    ])
  })

  it('has a cluster per service port and per subset, EDS over ADS', () => {
    const r = run(samples(...ALL_V1))
    const reviews = names(r.clusters).filter((n) => n.endsWith(REVIEWS))
    assert.deepEqual(reviews, [c('v1'), c('v2'), c('v3'), c('')])
    // 4 services; subsets: productpage 1, reviews 3, ratings 4, details 2; and the inbound cluster
    assert.equal(r.clusters.length, 4 + 1 + 3 + 4 + 2 + 1)
    const cluster = r.clusters.find((x) => x.name === c('v2'))!
    assert.deepEqual(cluster, {
      name: c('v2'),
      metadata: {
        filter_metadata: {
          istio: { config: '/apis/networking.istio.io/v1alpha3/namespaces/default/destination-rule/reviews' },
        },
      },
      type: 'EDS',
      eds_cluster_config: { eds_config: { ads: {} }, service_name: c('v2') },
      connect_timeout: '10s',
      lb_policy: 'LEAST_REQUEST',
      circuit_breakers: {
        thresholds: [
          {
            max_connections: 4294967295,
            max_pending_requests: 4294967295,
            max_requests: 4294967295,
            max_retries: 4294967295,
            track_remaining: true,
          },
        ],
      },
    })
    assert.deepEqual(names(r.clusters), [...names(r.clusters)].sort(), 'sorted by name')
  })

  const edsCases: [string, Record<string, string[]>][] = [
    [
      c(''),
      {
        'us-east/zone-a/': ['10.0.0.31:9080'],
        'us-east/zone-b/': ['10.0.0.32:9080'],
        'us-west/zone-c/': ['10.0.0.33:9080'],
      },
    ],
    [c('v1'), { 'us-east/zone-a/': ['10.0.0.31:9080'] }],
    [c('v2'), { 'us-east/zone-b/': ['10.0.0.32:9080'] }],
    [c('v3'), { 'us-west/zone-c/': ['10.0.0.33:9080'] }],
    [c('v1', 'ratings.default.svc.cluster.local'), { '//': ['10.0.0.40:9080'] }],
    [c('v2', 'ratings.default.svc.cluster.local'), {}],
  ]
  for (const [cluster, want] of edsCases) {
    it(`EDS for ${cluster}`, () => {
      const r = run(samples(...ALL_V1))
      assert.deepEqual(eds(r, cluster), want)
    })
  }

  it('the same endpoints from self-registered workloads, without the unhealthy one', () => {
    const reg = bookinfoSelfRegistered()
    reg.heartbeat('default/reviews-v3', { healthy: false })
    const r = run(samples(...ALL_V1), PRODUCTPAGE, reg.services())
    assert.deepEqual(eds(r, c('')), {
      'us-east/zone-a/': ['10.0.0.31:9080'],
      'us-east/zone-b/': ['10.0.0.32:9080'],
    })
    assert.deepEqual(eds(r, c('v3')), {})
  })

  it('is deterministic: same input, same snapshot, whatever the input order', () => {
    const resources = samples(...ALL_V1, 'virtual-service-reviews-jason-v2-v3.yaml', 'bookinfo-gateway.yaml')
    for (const node of [PRODUCTPAGE, REVIEWS_V2, INGRESS, { ...PRODUCTPAGE, generator: 'grpc' as const }]) {
      const a = JSON.stringify(snapshotJson(translate({ resources, services: BOOKINFO }, node)))
      const b = JSON.stringify(snapshotJson(translate({ resources, services: BOOKINFO }, node)))
      const reversed = translate({ resources: [...resources].reverse(), services: [...BOOKINFO].reverse() }, node)
      assert.equal(a, b)
      assert.equal(a, JSON.stringify(snapshotJson(reversed)))
    }
  })

  it('versions each type by content', () => {
    const base = translate({ resources: samples(...ALL_V1), services: BOOKINFO }, PRODUCTPAGE)
    const changed = translate(
      { resources: samples(...ALL_V1, 'virtual-service-reviews-80-20.yaml'), services: BOOKINFO },
      PRODUCTPAGE,
    )
    const v = (s: Snapshot, t: (typeof TYPE_URL)[keyof typeof TYPE_URL]) => s.resources.get(t)!.version
    assert.equal(v(base, TYPE_URL.cluster), v(changed, TYPE_URL.cluster))
    assert.equal(v(base, TYPE_URL.listener), v(changed, TYPE_URL.listener))
    assert.notEqual(v(base, TYPE_URL.route), v(changed, TYPE_URL.route))
    assert.deepEqual(
      [...base.resources.keys()],
      [TYPE_URL.listener, TYPE_URL.route, TYPE_URL.cluster, TYPE_URL.endpoint],
    )
  })

  it('golden: productpage sidecar with all-v1, destination-rule-all and jason-v2-v3', () => {
    const resources = samples(...ALL_V1, 'virtual-service-reviews-jason-v2-v3.yaml')
    golden('productpage-sidecar.golden.json', snapshotJson(translate({ resources, services: BOOKINFO }, PRODUCTPAGE)))
  })
})

describe('Bookinfo gateway (bookinfo-gateway.yaml)', () => {
  const resources = () => samples('virtual-service-all-v1.yaml', 'destination-rule-all.yaml', 'bookinfo-gateway.yaml')

  it('listens on the server port with the route configuration http.8080', () => {
    const r = run(resources(), INGRESS)
    assert.deepEqual(names(r.listeners), ['0.0.0.0_8080'])
    assert.deepEqual(names(r.routes), ['http.8080'])
    const hcm = (((r.listeners[0]!.filter_chains as Json[])[0]!.filters as Json[])[0]!.typed_config as Json).rds
    assert.deepEqual(hcm, { config_source: { ads: {} }, route_config_name: 'http.8080' })
  })

  it('routes the five productpage paths in order', () => {
    const r = run(resources(), INGRESS)
    const vh = vhost(r, 'http.8080', '*:8080')
    assert.deepEqual(vh.domains, ['*'])
    const pp = 'outbound|9080||productpage'
    assert.deepEqual((vh.routes as Json[]).map(summary), [
      `path /productpage → ${pp}`,
      `prefix /static → ${pp}`,
      `path /login → ${pp}`,
      `path /logout → ${pp}`,
      `prefix /api/v1/products → ${pp}`,
    ])
  })

  it('has clusters for the services, and no mesh routes', () => {
    const r = run(resources(), INGRESS)
    assert.ok(names(r.clusters).includes('outbound|9080||productpage.default.svc.cluster.local'))
    assert.equal(
      r.routes.some((x) => x.name === 'outbound'),
      false,
    )
  })

  it('a proxy the selector does not match gets nothing', () => {
    const r = run(resources(), { ...INGRESS, labels: { istio: 'egressgateway' } })
    assert.deepEqual(r.listeners, [])
  })

  it('golden: ingress gateway', () => {
    golden(
      'ingress-gateway.golden.json',
      snapshotJson(translate({ resources: resources(), services: BOOKINFO }, INGRESS)),
    )
  })

  it('golden: ingress gateway traced (a mesh-wide Telemetry, an OpenTelemetry provider)', () => {
    const telemetry = manifests(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 100
`)
    const meshConfig = {
      extensionProviders: [{ name: 'otel', opentelemetry: { service: 'otel-collector.observability', port: 4318 } }],
    }
    golden(
      'ingress-gateway-traced.golden.json',
      snapshotJson(translate({ resources: [...resources(), ...telemetry], services: BOOKINFO, meshConfig }, INGRESS)),
    )
  })
})

describe('who trusts forwarding headers (use_remote_address, as Istio sets it)', () => {
  const resources = () => samples('virtual-service-all-v1.yaml', 'destination-rule-all.yaml', 'bookinfo-gateway.yaml')
  /** listener name → the HCM's trust fields */
  function trust(r: TranslatedResources): Record<string, Json> {
    const out: Record<string, Json> = {}
    for (const l of r.listeners) {
      const tc = ((l.filter_chains as Json[])[0]!.filters as Json[])[0]!.typed_config as Json
      const t: Json = {}
      for (const k of ['use_remote_address', 'xff_num_trusted_hops']) if (tc[k] !== undefined) t[k] = tc[k]
      out[l.name as string] = t
    }
    return out
  }

  // The productpage golden changed for this, and only this: both sidecar connection managers carry
  // `use_remote_address: false` (hence a new listener version).
  it('a sidecar trusts its mesh, inbound and outbound', () => {
    assert.deepEqual(trust(run(resources(), PRODUCTPAGE)), {
      'inbound|9080': { use_remote_address: false },
      outbound_http: { use_remote_address: false },
    })
  })

  // No trusted proxies by default, and 0 is not written (as on the wire).
  it('a gateway takes the client address from the connection', () => {
    assert.deepEqual(trust(run(resources(), INGRESS)), { '0.0.0.0_8080': { use_remote_address: true } })
  })

  it("numTrustedProxies: the node's PROXY_CONFIG, else the mesh's defaultConfig", () => {
    const withNode = (proxyConfig: unknown) => run(resources(), { ...INGRESS, metadata: { PROXY_CONFIG: proxyConfig } })
    const two = { '0.0.0.0_8080': { use_remote_address: true, xff_num_trusted_hops: 2 } }
    assert.deepEqual(trust(withNode({ gatewayTopology: { numTrustedProxies: 2 } })), two)
    assert.deepEqual(trust(withNode('{"gatewayTopology":{"numTrustedProxies":2}}')), two, 'as a JSON string')
    const mesh = { defaultConfig: { gatewayTopology: { numTrustedProxies: 1 } } }
    const meshOnly = translateResources({ resources: resources(), services: BOOKINFO, meshConfig: mesh }, INGRESS)
    assert.deepEqual(trust(meshOnly), { '0.0.0.0_8080': { use_remote_address: true, xff_num_trusted_hops: 1 } })
    const both = translateResources(
      { resources: resources(), services: BOOKINFO, meshConfig: mesh },
      { ...INGRESS, metadata: { PROXY_CONFIG: { gatewayTopology: { numTrustedProxies: 3 } } } },
    )
    assert.deepEqual(trust(both), { '0.0.0.0_8080': { use_remote_address: true, xff_num_trusted_hops: 3 } })
    assert.deepEqual(trust(withNode({ gatewayTopology: { numTrustedProxies: -1 } })), {
      '0.0.0.0_8080': { use_remote_address: true },
    })
  })
})

describe('connection manager timeouts (request_headers_timeout, stream_idle_timeout)', () => {
  const resources = () => samples('virtual-service-all-v1.yaml', 'destination-rule-all.yaml', 'bookinfo-gateway.yaml')
  function timeouts(r: TranslatedResources): Record<string, Json> {
    const out: Record<string, Json> = {}
    for (const l of r.listeners) {
      const tc = ((l.filter_chains as Json[])[0]!.filters as Json[])[0]!.typed_config as Json
      const t: Json = {}
      for (const k of ['request_headers_timeout', 'stream_idle_timeout', 'request_timeout', 'drain_timeout'])
        if (tc[k] !== undefined) t[k] = tc[k]
      out[l.name as string] = t
    }
    return out
  }

  // Both goldens changed for this, and only this: every connection manager carries stream_idle_timeout 0s, and the
  // gateway's request_headers_timeout 10s (hence new listener versions).
  it('a sidecar disables the stream idle timeout, as Istio, and sets no headers timeout (Istio sets none)', () => {
    assert.deepEqual(timeouts(run(resources(), PRODUCTPAGE)), {
      'inbound|9080': { stream_idle_timeout: '0s' },
      outbound_http: { stream_idle_timeout: '0s' },
    })
  })

  it('a gateway gets a 10 s request_headers_timeout (Loom: an edge default; Istio sets none) and no stream idle timeout', () => {
    assert.deepEqual(timeouts(run(resources(), INGRESS)), {
      '0.0.0.0_8080': { request_headers_timeout: '10s', stream_idle_timeout: '0s' },
    })
  })
})

describe('path normalization (meshConfig.pathNormalization)', () => {
  const resources = () => samples('virtual-service-all-v1.yaml', 'destination-rule-all.yaml', 'bookinfo-gateway.yaml')
  const FIELDS = ['normalize_path', 'merge_slashes', 'path_with_escaped_slashes_action']
  function paths(r: TranslatedResources): Record<string, Json> {
    const out: Record<string, Json> = {}
    for (const l of r.listeners)
      for (const chain of l.filter_chains as Json[]) {
        const tc = (chain.filters as Json[])[0]!.typed_config as Json
        const t: Json = {}
        for (const k of FIELDS) if (tc[k] !== undefined) t[k] = tc[k]
        out[l.name as string] = t
      }
    return out
  }
  const withMesh = (normalization: string | undefined, node: TranslateNode) =>
    translateResources(
      {
        resources: resources(),
        services: BOOKINFO,
        meshConfig: normalization === undefined ? {} : { pathNormalization: { normalization } as never },
      },
      node,
    )

  // Both goldens changed for this, and only this: every connection manager carries BASE's two fields.
  it('BASE by default (and for DEFAULT): normalize_path, escaped slashes kept, on sidecars and gateways', () => {
    const base = { normalize_path: true, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' }
    for (const n of [undefined, 'DEFAULT', 'BASE']) {
      assert.deepEqual(paths(withMesh(n, PRODUCTPAGE)), { 'inbound|9080': base, outbound_http: base }, String(n))
      assert.deepEqual(paths(withMesh(n, INGRESS)), { '0.0.0.0_8080': base }, String(n))
    }
    assert.deepEqual(paths(run(resources(), PRODUCTPAGE)), { 'inbound|9080': base, outbound_http: base })
  })

  it('NONE, MERGE_SLASHES and DECODE_AND_MERGE_SLASHES set the fields as Istio does', () => {
    const want: Record<string, Json> = {
      NONE: { normalize_path: false, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' },
      MERGE_SLASHES: { normalize_path: true, merge_slashes: true, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' },
      DECODE_AND_MERGE_SLASHES: {
        normalize_path: true,
        merge_slashes: true,
        path_with_escaped_slashes_action: 'UNESCAPE_AND_FORWARD',
      },
    }
    for (const [n, fields] of Object.entries(want)) {
      assert.deepEqual(paths(withMesh(n, PRODUCTPAGE)), { 'inbound|9080': fields, outbound_http: fields }, n)
      assert.deepEqual(paths(withMesh(n, INGRESS)), { '0.0.0.0_8080': fields }, n)
      const batch = new BatchTranslator({
        resources: resources(),
        services: BOOKINFO,
        meshConfig: { pathNormalization: { normalization: n as never } },
      })
      const listeners = batch.translate(PRODUCTPAGE).resources.get(TYPE_URL.listener)!.items
      for (const [name, l] of listeners) {
        const tc = ((l as Json).filter_chains as Json[])[0]!.filters as Json[]
        const typed = tc[0]!.typed_config as Json
        for (const k of FIELDS) assert.equal(typed[k], (fields as Json)[k], `${n} ${name} ${k}`)
      }
    }
  })
})

// === other features ===

function tlsChain(r: TranslatedResources, listener: string): Json {
  return (r.listeners.find((l) => l.name === listener)!.filter_chains as Json[])[0]!
}

describe('gateways', () => {
  const yaml = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*.example.com']
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['default/*.example.com']
    tls: {mode: SIMPLE, serverCertificate: /certs/tls.crt, privateKey: /certs/tls.key, minProtocolVersion: TLSV1_3}
  - port: {number: 8443, name: https-vault, protocol: HTTPS}
    hosts: ['vault.example.com']
    tls: {mode: SIMPLE, credentialName: vault-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com, other.org]
  gateways: [istio-system/web]
  http:
  - route: [{destination: {host: productpage}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-api, namespace: default, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  hosts: ['*.example.com']
  gateways: [istio-system/web]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: elsewhere, namespace: prod}
spec:
  hosts: [prod.example.com]
  gateways: [istio-system/web]
  http:
  - route: [{destination: {host: reviews.default.svc.cluster.local}}]
`
  const r = run(manifests(yaml), INGRESS)

  it('one listener per port; TLS servers with certificate files get a filter chain', () => {
    assert.deepEqual(names(r.listeners), ['0.0.0.0_443', '0.0.0.0_80', '0.0.0.0_8443'])
    const tls = r.listeners.find((l) => l.name === '0.0.0.0_443')!
    const chain = (tls.filter_chains as Json[])[0]!
    assert.deepEqual(chain.filter_chain_match, { server_names: ['*.example.com'] })
    assert.deepEqual(chain.transport_socket, {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
        common_tls_context: {
          tls_certificates: [
            { certificate_chain: { filename: '/certs/tls.crt' }, private_key: { filename: '/certs/tls.key' } },
          ],
          tls_params: { tls_minimum_protocol_version: 'TLSv1_3' },
        },
      },
    })
  })

  it('HTTPS: server hosts ∩ VirtualService hosts, namespace-restricted, catch-alls last', () => {
    const rc = 'https.443.https.web.istio-system'
    assert.deepEqual(
      names(vhost(r, rc, '*.example.com:443') && (r.routes.find((x) => x.name === rc)!.virtual_hosts as Json[])),
      ['*.example.com:443', 'shop.example.com:443'],
    )
    assert.deepEqual(vhost(r, rc, 'shop.example.com:443').domains, ['shop.example.com', 'shop.example.com:443'])
    assert.deepEqual((vhost(r, rc, '*.example.com:443').routes as Json[]).map(summary), [
      'prefix /api → outbound|9080||reviews',
    ])
  })

  it('credentialName: the certificate over SDS as Istio names it, served when the control plane has it', () => {
    const ctx = (tlsChain(r, '0.0.0.0_8443').transport_socket as Json).typed_config as Json
    assert.deepEqual(ctx.common_tls_context, {
      tls_certificate_sds_secret_configs: [
        { name: 'kubernetes://vault-cert', sds_config: { ads: {}, resource_api_version: 'V3' } },
      ],
    })
    assert.equal(ctx.require_client_certificate, undefined)
    assert.deepEqual(r.secrets, [], 'no credential, no secret')
    const credentials = new Map([
      ['vault-cert', { cert: 'CERT', key: 'KEY' }],
      ['unused', { cert: 'C', key: 'K' }],
    ])
    const withCred = translateResources({ resources: manifests(yaml), services: BOOKINFO, credentials }, INGRESS)
    assert.deepEqual(withCred.secrets, [
      {
        name: 'kubernetes://vault-cert',
        tls_certificate: { certificate_chain: { inline_string: 'CERT' }, private_key: { inline_string: 'KEY' } },
      },
    ])
    const sidecar = translateResources({ resources: manifests(yaml), services: BOOKINFO, credentials }, PRODUCTPAGE)
    assert.deepEqual(sidecar.secrets, [], 'only gateways get credentials')
  })

  it('credentialName with MUTUAL: the client CA is `<name>-cacert`, from the credential’s ca.crt or its own', () => {
    const mutual = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mtls, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['a.example.com']
    tls: {mode: MUTUAL, credentialName: a}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: ['b.example.com']
    tls: {mode: MUTUAL, credentialName: b}
`
    const credentials = new Map([
      ['a', { cert: 'A', key: 'AK', ca: 'A-CA' }],
      ['b', { cert: 'B', key: 'BK' }],
      ['b-cacert', { ca: 'B-CA' }],
    ])
    const out = translateResources({ resources: manifests(mutual), services: BOOKINFO, credentials }, INGRESS)
    const chains = (out.listeners.find((l) => l.name === '0.0.0.0_443')!.filter_chains as Json[]).map(
      (c) => (c.transport_socket as Json).typed_config as Json,
    )
    assert.deepEqual(
      chains.map((c) => [
        (c.common_tls_context as Json).validation_context_sds_secret_config,
        c.require_client_certificate,
      ]),
      [
        [{ name: 'kubernetes://a-cacert', sds_config: { ads: {}, resource_api_version: 'V3' } }, true],
        [{ name: 'kubernetes://b-cacert', sds_config: { ads: {}, resource_api_version: 'V3' } }, true],
      ],
    )
    assert.deepEqual(
      out.secrets.map((x) => [
        x.name,
        x.tls_certificate === undefined ? (x.validation_context as Json).trusted_ca : 'cert',
      ]),
      [
        ['kubernetes://a', 'cert'],
        ['kubernetes://a-cacert', { inline_string: 'A-CA' }],
        ['kubernetes://b', 'cert'],
        ['kubernetes://b-cacert', { inline_string: 'B-CA' }],
      ],
    )
  })

  it('httpsRedirect answers every request on the HTTP server with a redirect', () => {
    const vh = vhost(r, 'http.80', '*.example.com:80')
    assert.deepEqual(vh.routes, [
      { match: { prefix: '/' }, redirect: { https_redirect: true, response_code: 'MOVED_PERMANENTLY' } },
    ])
  })
})

describe('sidecar inbound', () => {
  it('listens per service port and forwards to the application (node metadata contract)', () => {
    const node = {
      ...REVIEWS_V2,
      metadata: { INBOUND_PORTS: '9080:15090', APP_PORTS: { '9080': 19080 }, OUTBOUND_PORT: '15100' },
    }
    const r = run([], node)
    assert.deepEqual(names(r.listeners), ['inbound|9080', 'outbound_http'])
    const inbound = r.listeners[0]!
    assert.deepEqual(inbound.address, { socket_address: { address: '0.0.0.0', port_value: 15090 } })
    const hcm = ((inbound.filter_chains as Json[])[0]!.filters as Json[])[0]!.typed_config as Json
    assert.deepEqual(((hcm.route_config as Json).virtual_hosts as Json[])[0], {
      name: 'inbound|http|9080',
      domains: ['*'],
      routes: [{ name: 'default', match: { prefix: '/' }, route: { cluster: 'inbound|9080||', timeout: '0s' } }],
    })
    const cluster = r.clusters.find((x) => x.name === 'inbound|9080||')!
    assert.equal(cluster.type, 'STATIC')
    assert.deepEqual(((cluster.load_assignment as Json).endpoints as Json[])[0]!.lb_endpoints, [
      {
        endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 19080 } } },
        health_status: 'HEALTHY',
        load_balancing_weight: 1,
      },
    ])
    assert.deepEqual(r.listeners[1]!.address, { socket_address: { address: '127.0.0.1', port_value: 15100 } })
  })

  it('finds the workload by name on a shared address (local mode)', () => {
    const reg = new Registry()
    for (const [name, port] of [
      ['reviews-v1', 19081],
      ['reviews-v2', 19082],
    ] as const) {
      reg.register({
        name,
        address: '127.0.0.1',
        ports: [{ name: 'http', number: port, servicePort: 9080 }],
        labels: { app: 'reviews' },
        ttlSeconds: 30,
      })
    }
    const node: TranslateNode = {
      ...REVIEWS_V2,
      id: 'sidecar~127.0.0.1~reviews-v2.default~default.svc.cluster.local',
      ip: '127.0.0.1',
      labels: { app: 'reviews' },
    }
    const r = run([], node, reg.services())
    const inbound = r.listeners.filter((l) => (l.name as string).startsWith('inbound'))
    assert.equal(inbound.length, 1)
    assert.deepEqual(inbound[0]!.address, { socket_address: { address: '0.0.0.0', port_value: 19082 } })
  })

  it('a proxy without endpoints in the registry has no inbound listener', () => {
    const r = run([], sidecar('sleep', 'v1', '10.1.1.1'))
    assert.deepEqual(names(r.listeners), ['outbound_http'])
  })
})

describe('Sidecar egress scoping', () => {
  const other = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.data.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}, {number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.5.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secret, namespace: data}
spec:
  hosts: [secret.data.svc.cluster.local]
  exportTo: ['.']
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.5.0.2}]
`
  const services = Registry.fromResources([
    ...manifests(other),
    ...manifests(
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: x, namespace: default}
spec: {hosts: [x.default.svc.cluster.local], resolution: STATIC, ports: [{number: 80, name: http}], endpoints: [{address: 10.6.0.1}]}
`,
    ),
  ])
    .services()
    .concat(BOOKINFO)
  const hosts = (r: TranslatedResources) =>
    [
      ...new Set(
        names(r.clusters)
          .filter((n) => n.startsWith('outbound'))
          .map((n) => n.split('|')[3]),
      ),
    ].sort()

  const cases: [string, string, string[]][] = [
    [
      'no Sidecar: everything exported to the namespace',
      '',
      [
        'db.data.svc.cluster.local',
        'details.default.svc.cluster.local',
        'productpage.default.svc.cluster.local',
        'ratings.default.svc.cluster.local',
        'reviews.default.svc.cluster.local',
        'x.default.svc.cluster.local',
      ],
    ],
    [
      './* and one host elsewhere',
      `egress: [{hosts: ['./reviews.default.svc.cluster.local', 'data/*']}]`,
      ['db.data.svc.cluster.local', 'reviews.default.svc.cluster.local'],
    ],
    [
      '*/ with a wildcard',
      `egress: [{hosts: ['*/*.default.svc.cluster.local']}]`,
      [
        'details.default.svc.cluster.local',
        'productpage.default.svc.cluster.local',
        'ratings.default.svc.cluster.local',
        'reviews.default.svc.cluster.local',
        'x.default.svc.cluster.local',
      ],
    ],
  ]
  for (const [name, egress, want] of cases) {
    it(name, () => {
      const sc =
        egress === ''
          ? []
          : manifests(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  ${egress}
`)
      const r = run(sc, PRODUCTPAGE, services)
      assert.deepEqual(hosts(r), want)
      // the HTTP routes follow the clusters (db's TCP port gets a cluster but no virtual host)
      const vhosts = names(r.routes.find((x) => x.name === 'outbound')!.virtual_hosts as Json[])
      assert.ok(vhosts.every((v) => want.some((h) => v.startsWith(`${h}:`))))
      assert.equal(vhosts.includes('db.data.svc.cluster.local:5432'), false)
    })
  }

  it('the root namespace Sidecar is the mesh default; a workload Sidecar wins over it', () => {
    const root = manifests(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress: [{hosts: ['./*']}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: pp, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress: [{hosts: ['./details.default.svc.cluster.local']}]
`)
    assert.deepEqual(hosts(run(root, REVIEWS_V2, services)), [
      'details.default.svc.cluster.local',
      'productpage.default.svc.cluster.local',
      'ratings.default.svc.cluster.local',
      'reviews.default.svc.cluster.local',
      'x.default.svc.cluster.local',
    ])
    assert.deepEqual(hosts(run(root, PRODUCTPAGE, services)), ['details.default.svc.cluster.local'])
  })
})

describe('Sidecar egress TCP listeners', () => {
  const services = Registry.fromResources(
    manifests(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.data.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}, {number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.5.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache, namespace: data}
spec:
  hosts: [cache.data.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}, {number: 6379, name: redis, protocol: REDIS}, {number: 15001, name: tcp-x, protocol: TCP}]
  endpoints: [{address: 10.5.0.2}]
`),
  )
    .services()
    .concat(BOOKINFO)
  const withSidecar = (egress: string) =>
    run(
      manifests(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
${egress}
  - hosts: ['*/*']
`),
      PRODUCTPAGE,
      services,
    )
  const tcpListeners = (r: TranslatedResources) =>
    r.listeners.filter((l) => l.name !== 'outbound_http' && !(l.name as string).startsWith('inbound'))

  it("a TCP egress port: Istio's bound listener, istio.stats and a tcp_proxy to the service's cluster", () => {
    const r = withSidecar(`  - port: {number: 5432, protocol: TCP, name: tcp}
    hosts: [data/db.data.svc.cluster.local]`)
    const [l, ...more] = tcpListeners(r)
    assert.equal(more.length, 0)
    assert.deepEqual(l, {
      name: '127.0.0.1_5432',
      address: { socket_address: { address: '127.0.0.1', port_value: 5432 } },
      traffic_direction: 'OUTBOUND',
      filter_chains: [
        {
          filters: [
            { name: 'istio.stats', typed_config: { '@type': 'type.googleapis.com/stats.PluginConfig' } },
            {
              name: 'envoy.filters.network.tcp_proxy',
              typed_config: {
                '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
                stat_prefix: 'outbound|5432||db.data.svc.cluster.local',
                cluster: 'outbound|5432||db.data.svc.cluster.local',
              },
            },
          ],
        },
      ],
    })
    assert.ok(v.safeParse(Listener, l).success)
    // the cluster it names is there, with the upstream side of the metadata exchange
    const c = r.clusters.find((x) => x.name === 'outbound|5432||db.data.svc.cluster.local')!
    assert.deepEqual(
      (c.filters as Json[]).map((f) => f.name),
      ['istio.metadata_exchange'],
    )
  })

  it('the listener hosts choose the service; bind and the service port protocol are honoured', () => {
    const cache = withSidecar(`  - port: {number: 5432}
    bind: 127.0.0.5
    hosts: [data/cache.data.svc.cluster.local]
  - port: {number: 6379}
    hosts: [data/*]`)
    // (listeners come sorted by name)
    assert.deepEqual(
      tcpListeners(cache).map((l) => [l.name, ((l.filter_chains as Json[])[0]!.filters as Json[])[1]!.typed_config]),
      [
        [
          '127.0.0.1_6379',
          {
            '@type': TCP_PROXY,
            stat_prefix: 'outbound|6379||cache.data.svc.cluster.local',
            cluster: 'outbound|6379||cache.data.svc.cluster.local',
          },
        ],
        [
          '127.0.0.5_5432',
          {
            '@type': TCP_PROXY,
            stat_prefix: 'outbound|5432||cache.data.svc.cluster.local',
            cluster: 'outbound|5432||cache.data.svc.cluster.local',
          },
        ],
      ],
    )
    // two services on one port: the first by host name, as Istio keeps one
    const first = withSidecar(`  - port: {number: 5432, protocol: TCP}
    hosts: [data/*]`)
    assert.equal(tcpListeners(first)[0]!.name, '127.0.0.1_5432')
    assert.match(JSON.stringify(tcpListeners(first)[0]), /cache\.data\.svc\.cluster\.local/)
  })

  it("no listener for an HTTP port, a unix socket, a port no admitted service has, or the HTTP listener's port", () => {
    const r = withSidecar(`  - port: {number: 8080, protocol: HTTP}
    hosts: [data/db.data.svc.cluster.local]
  - port: {number: 0}
    bind: unix:///var/run/db.sock
    hosts: [data/db.data.svc.cluster.local]
  - port: {number: 7777, protocol: TCP}
    hosts: [data/db.data.svc.cluster.local]
  - port: {number: 6379, protocol: TCP}
    hosts: [data/db.data.svc.cluster.local]
  - port: {number: 15001, protocol: TCP}
    hosts: [data/cache.data.svc.cluster.local]`)
    assert.deepEqual(tcpListeners(r), [])
  })
})

describe('DestinationRule policies', () => {
  const yaml = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 0s}}
    connectionPool: {tcp: {connectTimeout: 250ms}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 50}
`
  const r = run(manifests(yaml))
  const cluster = (subset: string) => r.clusters.find((x) => x.name === c(subset))!

  it('sets the load balancer and connect timeout per subset', () => {
    assert.equal(cluster('').lb_policy, 'RING_HASH')
    assert.deepEqual(cluster('').ring_hash_lb_config, { minimum_ring_size: 1024 })
    assert.equal(cluster('').connect_timeout, '0.25s')
    assert.equal(cluster('v1').lb_policy, 'ROUND_ROBIN')
    assert.equal(cluster('v1').connect_timeout, '0.25s')
    assert.equal(cluster('v2').lb_policy, 'RING_HASH')
  })

  it('puts the hash policy on routes to consistent-hash destinations', () => {
    const route = (vhost(r, 'outbound', `${REVIEWS}:9080`).routes as Json[])[0]!.route as Json
    assert.deepEqual(route.hash_policy, [{ cookie: { name: 'user', ttl: '0s' } }])
  })

  it('warmupDurationSecs and warmup become slow start on ROUND_ROBIN and LEAST_REQUEST clusters', () => {
    const w = run(
      manifests(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {warmup: {duration: 1m, minimumPercent: 20, aggression: 1.5}}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: RANDOM, warmupDurationSecs: 30s}}
`),
    )
    const cl = (subset: string) => w.clusters.find((x) => x.name === c(subset))!
    assert.equal(cl('').lb_policy, 'ROUND_ROBIN')
    assert.deepEqual(cl('').round_robin_lb_config, { slow_start_config: { slow_start_window: '30s' } })
    assert.equal(cl('v1').lb_policy, 'LEAST_REQUEST')
    assert.deepEqual(cl('v1').least_request_lb_config, {
      slow_start_config: {
        slow_start_window: '60s',
        aggression: { default_value: 1.5, runtime_key: '(' },
        min_weight_percent: { value: 20 },
      },
    })
    assert.equal(cl('v2').lb_policy, 'RANDOM')
    assert.equal(cl('v2').round_robin_lb_config, undefined)
  })

  it('loom.dev/load-balancer: peak-ewma gives every cluster of the rule the peak-EWMA policy', () => {
    const p = run(
      manifests(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  annotations: {loom.dev/load-balancer: peak-ewma}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
`),
    )
    const cl = (subset: string) => p.clusters.find((x) => x.name === c(subset))!
    for (const subset of ['', 'v1']) {
      assert.equal(cl(subset).lb_policy, undefined)
      const policies = (cl(subset).load_balancing_policy as { policies: Json[] }).policies
      assert.deepEqual(
        policies.map((x) => ((x.typed_extension_config as Json).typed_config as Json)['@type']),
        [
          'type.googleapis.com/loom.config.lb.v1.PeakEwma',
          'type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest',
        ],
      )
    }
    assert.equal(cl('v2').lb_policy, 'RING_HASH', 'consistentHash keeps precedence')
    assert.equal(cl('v2').load_balancing_policy, undefined)
  })

  it('a DestinationRule in the proxy namespace wins over the service namespace', () => {
    const local = manifests(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-from-prod, namespace: prod}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
`)
    const prod = run([...manifests(yaml), ...local], sidecar('sleep', 'v1', '10.9.9.9', { namespace: 'prod' }))
    assert.equal(prod.clusters.find((x) => x.name === c(''))!.lb_policy, 'RANDOM')
    assert.equal(
      prod.clusters.some((x) => x.name === c('v1')),
      false,
      'the prod rule has no subsets',
    )
  })
})

describe('ServiceEntry resolution', () => {
  it('DNS: STRICT_DNS clusters over the host; port-80 names without the port', () => {
    const resources = samples('egress-rule-google-apis.yaml')
    const services = Registry.fromResources(resources).services().concat(BOOKINFO)
    const r = run(resources, PRODUCTPAGE, services)
    const cl = r.clusters.find((x) => x.name === 'outbound|443||www.googleapis.com')!
    assert.equal(cl.type, 'STRICT_DNS')
    // port 443 has a port-level entry (tls only): it replaces the top-level policy, loadBalancer is not inherited
    assert.equal(cl.lb_policy, 'LEAST_REQUEST')
    assert.equal(r.clusters.find((x) => x.name === 'outbound|80||www.googleapis.com')!.lb_policy, 'ROUND_ROBIN')
    assert.deepEqual(((cl.load_assignment as Json).endpoints as Json[])[0]!.lb_endpoints, [
      {
        endpoint: { address: { socket_address: { address: 'www.googleapis.com', port_value: 443 } } },
        health_status: 'HEALTHY',
        load_balancing_weight: 1,
      },
    ])
    const vh = vhost(r, 'outbound', 'www.googleapis.com:80')
    assert.deepEqual(vh.domains, ['www.googleapis.com', 'www.googleapis.com:80'])
    assert.deepEqual((vh.routes as Json[]).map(summary), ['prefix / → outbound|443||www.googleapis.com'])
    assert.equal(
      r.endpoints.some((e) => (e.cluster_name as string).includes('googleapis')),
      false,
      'not EDS',
    )
  })
})

describe('VirtualService selection', () => {
  const vsYaml = (name: string, ts: string, subset: string) => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ${name}, creationTimestamp: '${ts}'}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: ${subset}}}]}]
`
  it('two VirtualServices for one host on the mesh: the oldest wins', () => {
    const resources = manifests(
      `${vsYaml('b', '2024-01-01T00:00:00Z', 'old')}---\n${vsYaml('a', '2024-06-01T00:00:00Z', 'new')}`,
    )
    assert.deepEqual(routesOf(run(resources), REVIEWS), ['prefix / → outbound|9080|old|reviews'])
  })

  it('sourceLabels pick routes per proxy, and a wildcard host applies to matching services', () => {
    const resources = manifests(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all}
spec:
  hosts: ['*.default.svc.cluster.local']
  http:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: ratings}}]
`)
    assert.deepEqual(routesOf(run(resources), REVIEWS), ['prefix / → outbound|9080||ratings'])
    assert.deepEqual(routesOf(run(resources, REVIEWS_V2), REVIEWS), ['prefix / → outbound|9080||reviews'])
  })

  it('a VirtualService bound only to a gateway does not touch the mesh', () => {
    const resources = samples('bookinfo-gateway.yaml')
    assert.deepEqual(routesOf(run(resources), 'productpage.default.svc.cluster.local'), [
      'prefix / → outbound|9080||productpage',
    ])
  })
})

describe('proxyless gRPC', () => {
  const node: TranslateNode = { ...PRODUCTPAGE, generator: 'grpc' }
  const extra = manifests(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new}
  - timeout: 3s
    route: [{destination: {host: ratings}}]
`)
  const r = run([...samples('destination-rule-all.yaml'), ...extra], node)

  it('API listeners named host:port for every name, router last, RDS over ADS', () => {
    assert.deepEqual(
      names(r.listeners).filter((n) => n.startsWith('ratings')),
      ['ratings.default.svc.cluster.local:9080', 'ratings.default.svc:9080', 'ratings.default:9080', 'ratings:9080'],
    )
    const l = r.listeners.find((x) => x.name === 'ratings:9080')!
    const hcm = (l.api_listener as Json).api_listener as Json
    assert.deepEqual(hcm.rds, {
      config_source: { ads: {} },
      route_config_name: 'outbound|9080||ratings.default.svc.cluster.local',
    })
    assert.equal(((hcm.http_filters as Json[]).at(-1) as Json).name, 'envoy.filters.http.router')
    assert.equal(l.filter_chains, undefined)
  })

  it('no redirect routes; timeouts as max_stream_duration', () => {
    const rc = r.routes.find((x) => x.name === 'outbound|9080||ratings.default.svc.cluster.local')!
    const vh = (rc.virtual_hosts as Json[])[0]!
    assert.ok((vh.domains as string[]).includes('ratings:9080'))
    assert.deepEqual(vh.routes, [
      {
        match: { prefix: '/' },
        metadata: {
          filter_metadata: {
            istio: { config: '/apis/networking.istio.io/v1alpha3/namespaces/default/virtual-service/ratings' },
          },
        },
        route: {
          cluster: 'outbound|9080||ratings.default.svc.cluster.local',
          max_stream_duration: { max_stream_duration: '3s' },
        },
      },
    ])
  })

  it('EDS clusters with ROUND_ROBIN where LEAST_REQUEST was asked, locality and weights in every CLA', () => {
    const cl = r.clusters.find((x) => x.name === 'outbound|9080||ratings.default.svc.cluster.local')!
    assert.equal(cl.type, 'EDS')
    assert.equal(cl.lb_policy, 'ROUND_ROBIN')
    assert.ok(r.clusters.every((x) => x.lb_policy === 'ROUND_ROBIN'))
    for (const cla of r.endpoints) {
      for (const g of cla.endpoints as Json[]) {
        assert.deepEqual(Object.keys(g.locality as Json), ['region', 'zone', 'sub_zone'])
        assert.equal(typeof g.load_balancing_weight, 'number')
      }
    }
    assert.equal(
      names(r.clusters).some((n) => n.startsWith('inbound')),
      false,
    )
  })
})

describe('BatchTranslator', () => {
  it('gives every proxy exactly what translate gives it, sharing the outbound part', () => {
    const resources = samples(
      'destination-rule-all.yaml',
      'virtual-service-reviews-jason-v2-v3.yaml',
      'bookinfo-gateway.yaml',
    )
    const input = { resources, services: bookinfoRegistry().services() }
    const batch = new BatchTranslator(input)
    for (const node of [PRODUCTPAGE, REVIEWS_V2, sidecar('ratings', 'v1', '10.0.0.40'), INGRESS]) {
      const a = translate(input, node)
      const b = batch.translate(node)
      for (const type of Object.values(TYPE_URL)) {
        const left = [...(a.resources.get(type)?.items.values() ?? [])]
        const right = [...(b.resources.get(type)?.items.values() ?? [])]
        assert.deepEqual(right, left, `${node.id} ${type}`)
      }
    }
  })
})

describe('a sidecar with traffic capture (INTERCEPTION_MODE: REDIRECT, loom up --transparent)', () => {
  const node: TranslateNode = {
    ...REVIEWS_V2,
    metadata: { INTERCEPTION_MODE: 'REDIRECT', INBOUND_ADDRESS: REVIEWS_V2.ip, APP_PORTS: '9080:19080' },
  }
  const r = run(samples('destination-rule-all.yaml'), node)
  const byName = (n: string) => r.listeners.find((l) => l.name === n)
  it("gets Istio's virtual listeners instead of the HTTP proxy listener", () => {
    assert.equal(byName('outbound_http'), undefined)
    const out = byName('virtualOutbound')!
    assert.deepEqual(out.address, { socket_address: { address: '0.0.0.0', port_value: 15001 } })
    assert.equal(out.use_original_dst, true)
    const inbound = byName('virtualInbound')!
    assert.deepEqual(inbound.address, { socket_address: { address: '0.0.0.0', port_value: 15006 } })
    assert.equal(inbound.use_original_dst, true)
    assert.equal(inbound.traffic_direction, 'INBOUND')
    // a port the workload does not serve goes nowhere; an unknown outbound destination passes through
    const cluster = (l: Json) =>
      ((((l.filter_chains as Json[])[0]!.filters as Json[]).at(-1)!.typed_config as Json).cluster as string) ?? ''
    assert.equal(cluster(inbound), 'BlackHoleCluster')
    assert.equal(cluster(out), 'PassthroughCluster')
    const passthrough = r.clusters.find((c) => c.name === 'PassthroughCluster')!
    assert.equal(passthrough.type, 'ORIGINAL_DST')
  })
  it('an HTTP service port: a listener that binds nothing, TLS passed through, HTTP routed by Host', () => {
    const l = byName('0.0.0.0_9080')!
    assert.equal(l.bind_to_port, false)
    assert.equal(l.traffic_direction, 'OUTBOUND')
    const chains = l.filter_chains as Json[]
    assert.deepEqual(chains[0]!.filter_chain_match, { transport_protocol: 'tls' })
    assert.equal(((chains[0]!.filters as Json[])[0]!.typed_config as Json).cluster, 'PassthroughCluster')
    const hcm = (chains[1]!.filters as Json[])[0]!.typed_config as Json
    assert.equal((hcm.rds as Json).route_config_name, 'outbound')
  })
  it("the inbound listener sits at the workload's address and service port, bound by nobody", () => {
    const l = byName('inbound|9080')!
    assert.deepEqual(l.address, { socket_address: { address: REVIEWS_V2.ip, port_value: 9080 } })
    assert.equal(l.bind_to_port, false)
  })
  it('a sidecar without capture gets none of it', () => {
    const plain = run(samples('destination-rule-all.yaml'), REVIEWS_V2)
    assert.deepEqual(
      plain.listeners.map((l) => l.name).filter((n) => /^virtual|^0\.0\.0\.0_/.test(n as string)),
      [],
    )
    assert.equal(
      plain.clusters.find((c) => c.name === 'PassthroughCluster'),
      undefined,
    )
  })
})
