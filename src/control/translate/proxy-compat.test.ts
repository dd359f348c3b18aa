/**
 * The translator's output for `generator: 'envoy'` must be what Loom's proxy accepts over xDS: every resource passes
 * the proxy's schema (src/config/envoy.ts, the same check the proxy's xDS consumer runs), every route configuration
 * compiles with the proxy's router, the snapshot is internally consistent, and requests route where Istio would
 * send them.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import type { Resource } from '../../api/index.js'
import { Cluster, ClusterLoadAssignment, Listener, RouteConfiguration } from '../../config/envoy.js'
import { toConfigIssues } from '../../config/schema.js'
import { Headers } from '../../proxy/http/headers.js'
import { type CompiledRouteConfig, compileRouteConfig } from '../../proxy/route/router.js'
import { decodeResource, encodeResource } from '../../xds/proto.js'
import { TYPE_URL } from '../../xds/snapshot.js'
import { Registry } from '../registry/registry.js'
import {
  applied,
  BOOKINFO_REGISTRY_YAML,
  bookinfoRegistry,
  INGRESS,
  manifests,
  PRODUCTPAGE,
  REVIEWS_V2,
  samples,
} from './testdata/bookinfo.js'
import { type TranslatedResources, type TranslateNode, translateResources } from './translate.js'
import type { Json } from './util.js'

const KITCHEN_SINK = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings, ratings.example.com]
  http:
  - name: moved
    match: [{uri: {exact: /old}, ignoreUriCase: true}]
    redirect: {uri: /ratings/0, redirectCode: 308}
  - name: down
    match: [{uri: {prefix: /maintenance}, method: {exact: POST}}]
    directResponse: {status: 503, body: {string: maintenance}}
  - name: api
    match:
    - uri: {regex: '/api/v[0-9]+/.*'}
      headers: {x-canary: {prefix: 'yes'}, x-trace: {}}
      queryParams: {debug: {exact: '1'}}
      withoutHeaders: {x-block: {exact: '1'}}
      authority: {prefix: ratings}
    rewrite: {uri: /, authority: ratings.internal}
    headers:
      request: {set: {x-loom: '1'}, add: {x-hop: a}, remove: [x-secret]}
      response: {remove: [server]}
    route:
    - {destination: {host: ratings, subset: v1}, weight: 90, headers: {response: {set: {x-subset: v1}}}}
    - {destination: {host: ratings, subset: v2}, weight: 10}
    timeout: 2s
  - route: [{destination: {host: ratings, subset: v1}}]
    retries: {attempts: 3, perTryTimeout: 0.5s, retryOn: 'gateway-error,409,retriable-headers', backoff: 50ms}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: RANDOM, localityLbSetting: {failover: [{from: r1, to: r2}], failoverPriority: [version]}}
      outlierDetection: {consecutive5xxErrors: 2}
  - {name: v3, labels: {version: v3}, trafficPolicy: {loadBalancer: {warmup: {duration: 30s, minimumPercent: 5, aggression: 2}}}}
  - {name: v4, labels: {version: v4}, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 1m}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
  annotations: {loom.dev/load-balancer: peak-ewma}
spec:
  host: echo.default.svc.cluster.local
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: grpc}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7070, name: grpc, protocol: GRPC}, {number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from:
    - source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage, '*/sa/x'], notNamespaces: [bad]}
    - source: {ipBlocks: [10.0.0.0/8], notRemoteIpBlocks: [192.0.2.1], requestPrincipals: ['*']}
    to:
    - operation: {hosts: ['reviews', '*.example.com'], ports: ['9080'], methods: [GET], paths: ['/api/*', '/u/{*}/x']}
    - operation: {notPaths: ['/admin*'], notMethods: [DELETE]}
    when:
    - {key: 'request.headers[x-user]', values: ['*']}
    - {key: 'request.auth.claims[org][team]', values: [blue], notValues: [red]}
    - {key: destination.port, values: ['9080']}
    - {key: connection.sni, values: ['*.local']}
  - {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-mesh, namespace: istio-system}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, annotations: {istio.io/dry-run: 'true'}}
spec:
  action: AUDIT
  rules: [{when: [{key: source.ip, values: [10.1.0.0/16]}]}]
`

const GATEWAY_TLS = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tls, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ['bookinfo.example.com']
    tls: {mode: MUTUAL, serverCertificate: /c/tls.crt, privateKey: /c/tls.key, caCertificates: /c/ca.crt}
  - port: {number: 8081, name: http, protocol: HTTP}
    hosts: ['bookinfo.example.com']
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls}
spec:
  hosts: [bookinfo.example.com]
  gateways: [istio-system/tls]
  http: [{route: [{destination: {host: productpage, subset: v1}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules: [{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}]
`

const ALL = ['virtual-service-all-v1.yaml', 'destination-rule-all.yaml']

interface Scenario {
  name: string
  resources: () => Resource[]
  node: TranslateNode
  services?: () => ReturnType<Registry['services']>
}

const SCENARIOS: Scenario[] = [
  { name: 'productpage, no routing config', resources: () => [], node: PRODUCTPAGE },
  {
    name: 'productpage, all-v1 + jason',
    resources: () => samples(...ALL, 'virtual-service-reviews-jason-v2-v3.yaml'),
    node: PRODUCTPAGE,
  },
  {
    name: 'reviews-v2 with inbound, kitchen-sink routes and gRPC ports',
    resources: () => applied(samples(...ALL), manifests(KITCHEN_SINK)),
    node: { ...REVIEWS_V2, metadata: { APP_PORTS: '9080:19080,7070:17070', INBOUND_PORTS: { 7070: 15070 } } },
    services: () => Registry.fromResources([...manifests(KITCHEN_SINK), ...bookinfoResources()]).services(),
  },
  {
    name: 'ingress gateway',
    resources: () => [...samples(...ALL, 'bookinfo-gateway.yaml'), ...manifests(GATEWAY_TLS)],
    node: INGRESS,
  },
  {
    name: 'external DNS service',
    resources: () => samples('egress-rule-google-apis.yaml'),
    node: PRODUCTPAGE,
    services: () =>
      Registry.fromResources([...samples('egress-rule-google-apis.yaml'), ...bookinfoResources()]).services(),
  },
  {
    name: 'reviews-v2 with traffic capture (INTERCEPTION_MODE: REDIRECT)',
    resources: () => samples(...ALL),
    node: {
      ...REVIEWS_V2,
      metadata: { INTERCEPTION_MODE: 'REDIRECT', INBOUND_ADDRESS: REVIEWS_V2.ip, APP_PORTS: '9080:19080' },
    },
  },
]

function bookinfoResources(): Resource[] {
  return manifests(BOOKINFO_REGISTRY_YAML)
}

function translated(s: Scenario): TranslatedResources {
  const services = s.services?.() ?? bookinfoRegistry().services()
  return translateResources({ resources: s.resources(), services }, s.node)
}

function check(schema: v.GenericSchema, value: unknown, what: string): void {
  const r = v.safeParse(schema, value)
  if (!r.success) {
    const issues = toConfigIssues(r.issues).map((i) => `  ${i.path}: ${i.message}`)
    assert.fail(`${what} is rejected by Loom's proxy schema:\n${issues.join('\n')}`)
  }
}

describe('load balancer fields Loom adds', () => {
  const r = translated(SCENARIOS[2]!)
  it('slow start and the peak-EWMA policy are in the kitchen sink, and pass the schema and the protobuf round trip', () => {
    const policies = r.clusters.filter((c) => c.load_balancing_policy !== undefined)
    const slowStart = r.clusters.filter(
      (c) =>
        (c.round_robin_lb_config as Json | undefined)?.slow_start_config !== undefined ||
        (c.least_request_lb_config as Json | undefined)?.slow_start_config !== undefined,
    )
    assert.ok(
      policies.length > 0 && slowStart.length >= 2,
      `${policies.length} peak-EWMA, ${slowStart.length} slow start`,
    )
    for (const c of [...policies, ...slowStart]) {
      check(Cluster, c, `Cluster ${c.name}`)
      const wire = decodeResource(encodeResource({ '@type': TYPE_URL.cluster, ...c }), { withType: false })
      for (const f of ['round_robin_lb_config', 'least_request_lb_config', 'load_balancing_policy']) {
        assert.deepEqual(wire[f], c[f], `${c.name} ${f}`)
      }
    }
  })
})

describe('authorization filters', () => {
  it('reviews inbound and the ingress gateway carry RBAC filters in Istio order (the outbound listener none)', () => {
    const chains = (r: TranslatedResources) =>
      r.listeners.flatMap((l) =>
        ((l.filter_chains as Json[] | undefined) ?? []).map((c) =>
          (((c.filters as Json[])[0]!.typed_config as Json).http_filters as Json[]).map((f) => f.name as string),
        ),
      )
    const reviews = translated(SCENARIOS[2]!)
    const inbound = reviews.listeners.filter((l) => String(l.name).startsWith('inbound|'))
    assert.ok(inbound.length > 0)
    for (const l of inbound) {
      const names = chains({ ...reviews, listeners: [l] })[0]!
      assert.deepEqual(names.slice(0, 4), [
        'loom.filters.http.explain',
        'envoy.filters.http.rbac.audit',
        'envoy.filters.http.rbac.deny',
        'envoy.filters.http.rbac.allow',
      ])
    }
    const outbound = reviews.listeners.filter((l) => l.name === 'outbound_http')
    assert.ok(chains({ ...reviews, listeners: outbound }).every((n) => !n.some((x) => x.includes('rbac'))))
    const gw = translated(SCENARIOS[3]!)
    assert.ok(chains(gw).every((n) => n[0] === 'loom.filters.http.explain' && n[1] === 'envoy.filters.http.rbac.allow'))
  })
})

for (const s of SCENARIOS) {
  describe(s.name, () => {
    const r = translated(s)

    it('every resource passes the proxy schema', () => {
      assert.ok(r.listeners.length > 0)
      for (const l of r.listeners) check(Listener, l, `Listener ${l.name}`)
      for (const rc of r.routes) check(RouteConfiguration, rc, `RouteConfiguration ${rc.name}`)
      for (const c of r.clusters) check(Cluster, c, `Cluster ${c.name}`)
      for (const e of r.endpoints) check(ClusterLoadAssignment, e, `ClusterLoadAssignment ${e.cluster_name}`)
    })

    it("every route configuration compiles with the proxy's router", () => {
      const inline = r.listeners.flatMap((l) =>
        ((l.filter_chains as Json[]) ?? []).flatMap((fc) =>
          (fc.filters as Json[]).map((f) => (f.typed_config as Json).route_config as Json | undefined),
        ),
      )
      for (const rc of [...r.routes, ...inline]) {
        if (rc !== undefined) compileRouteConfig(v.parse(RouteConfiguration, rc))
      }
    })

    it('is consistent: every RDS name served, every EDS cluster assigned, every routed cluster defined', () => {
      const rdsNames = new Set<string>()
      for (const l of r.listeners) {
        for (const fc of (l.filter_chains as Json[]) ?? []) {
          for (const f of fc.filters as Json[]) {
            const rds = (f.typed_config as Json).rds as Json | undefined
            if (rds !== undefined) rdsNames.add(rds.route_config_name as string)
          }
        }
      }
      assert.deepEqual([...rdsNames].sort(), r.routes.map((x) => x.name as string).sort())
      const eds = r.clusters.filter((c) => c.type === 'EDS').map((c) => (c.eds_cluster_config as Json).service_name)
      assert.deepEqual(eds.sort(), r.endpoints.map((e) => e.cluster_name).sort())
      const clusters = new Set(r.clusters.map((c) => c.name as string))
      for (const rc of r.routes) {
        for (const vh of rc.virtual_hosts as Json[]) {
          for (const route of vh.routes as Json[]) {
            const a = route.route as Json | undefined
            if (a === undefined) continue
            const targets =
              a.cluster !== undefined
                ? [a.cluster as string]
                : ((a.weighted_clusters as Json).clusters as Json[]).map((w) => w.name as string)
            for (const t of targets) assert.ok(clusters.has(t), `${rc.name}/${vh.name} routes to unknown ${t}`)
          }
        }
      }
    })
  })
}

// === routing through the proxy's router ===

function router(r: TranslatedResources, name: string): CompiledRouteConfig {
  const rc = r.routes.find((x) => x.name === name)
  assert.ok(rc, `no route configuration ${name}`)
  return compileRouteConfig(v.parse(RouteConfiguration, rc))
}

function route(cfg: CompiledRouteConfig, authority: string, path: string, headers: Record<string, string> = {}) {
  const list = Object.entries(headers).flat()
  const m = cfg.match({ authority, path, method: 'GET', headers: new Headers(list) })
  return m === null ? null : m.kind === 'cluster' ? m.clusterNames().join(',') : m.kind
}

describe('HTTP_PROXY requests from productpage (jason-v2-v3)', () => {
  const r = translateResources(
    { resources: samples(...ALL, 'virtual-service-reviews-jason-v2-v3.yaml'), services: bookinfoRegistry().services() },
    PRODUCTPAGE,
  )
  const cfg = router(r, 'outbound')
  const cases: [string, string, Record<string, string>, string | null][] = [
    ['reviews:9080', '/reviews/0', { 'end-user': 'jason' }, 'outbound|9080|v2|reviews.default.svc.cluster.local'],
    ['reviews:9080', '/reviews/0', {}, 'outbound|9080|v3|reviews.default.svc.cluster.local'],
    [
      'Reviews.Default:9080',
      '/reviews/0',
      { 'end-user': 'jason' },
      'outbound|9080|v2|reviews.default.svc.cluster.local',
    ],
    ['reviews.default.svc.cluster.local:9080', '/', {}, 'outbound|9080|v3|reviews.default.svc.cluster.local'],
    ['details:9080', '/details/0', {}, 'outbound|9080|v1|details.default.svc.cluster.local'],
    ['ratings.default.svc:9080', '/ratings/0', {}, 'outbound|9080|v1|ratings.default.svc.cluster.local'],
    // no port means port 80, which these services do not have
    ['reviews', '/reviews/0', {}, null],
    ['unknown:9080', '/', {}, null],
  ]
  for (const [authority, path, headers, want] of cases) {
    it(`${authority}${path} ${JSON.stringify(headers)} → ${want}`, () =>
      assert.equal(route(cfg, authority, path, headers), want))
  }
})

describe('requests through the ingress gateway', () => {
  const r = translateResources(
    {
      resources: [...samples(...ALL, 'bookinfo-gateway.yaml'), ...manifests(GATEWAY_TLS)],
      services: bookinfoRegistry().services(),
    },
    INGRESS,
  )
  const pp = 'outbound|9080||productpage.default.svc.cluster.local'
  const cases: [string, string, string, string | null][] = [
    ['http.8080', 'anything.example:8080', '/productpage', pp],
    ['http.8080', 'localhost:8080', '/static/css/x.css', pp],
    ['http.8080', 'localhost:8080', '/api/v1/products/0/reviews', pp],
    ['http.8080', 'localhost:8080', '/productpages', null],
    ['http.8080', 'localhost:8080', '/admin', null],
    [
      'https.8443.https.tls.istio-system',
      'bookinfo.example.com:8443',
      '/',
      'outbound|9080|v1|productpage.default.svc.cluster.local',
    ],
    ['https.8443.https.tls.istio-system', 'other.example.com', '/', null],
    ['http.8081', 'bookinfo.example.com:8081', '/productpage', 'redirect'],
  ]
  for (const [rc, authority, path, want] of cases) {
    it(`${rc}: ${authority}${path} → ${want}`, () => assert.equal(route(router(r, rc), authority, path), want))
  }
})

// === Envoy's protos ===

const ENUM_ZERO: Record<string, string> = {
  lb_policy: 'ROUND_ROBIN',
  append_action: 'APPEND_IF_EXISTS_OR_ADD',
  response_code: 'MOVED_PERMANENTLY',
}

/** Drops what proto3 does not carry: empty strings and lists, enum zero values. */
function withoutDefaults(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(withoutDefaults)
  if (x === null || typeof x !== 'object') return x
  const out: Json = {}
  for (const [k, val] of Object.entries(x)) {
    if (val === '' || (Array.isArray(val) && val.length === 0) || ENUM_ZERO[k] === val) continue
    out[k] = withoutDefaults(val)
  }
  return out
}

describe("every resource encodes with Envoy's protos and decodes back the same", () => {
  const grpc: Scenario = {
    name: 'proxyless gRPC',
    resources: () => applied(samples(...ALL, 'virtual-service-reviews-jason-v2-v3.yaml'), manifests(KITCHEN_SINK)),
    node: { ...PRODUCTPAGE, generator: 'grpc' },
  }
  for (const s of [...SCENARIOS, grpc]) {
    it(s.name, () => {
      const r = translated(s)
      const types: [Json[], string][] = [
        [r.listeners, TYPE_URL.listener],
        [r.routes, TYPE_URL.route],
        [r.clusters, TYPE_URL.cluster],
        [r.endpoints, TYPE_URL.endpoint],
      ]
      for (const [list, type] of types) {
        for (const res of list) {
          const back = decodeResource(encodeResource(res, type), { withType: false })
          assert.deepStrictEqual(back, withoutDefaults(res), `${type} ${res.name ?? res.cluster_name}`)
        }
      }
    })
  }
})
