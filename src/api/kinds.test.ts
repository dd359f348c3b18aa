/**
 * validateResource, kind by kind: the full field set Istio documents is accepted, and Istio's webhook rules reject
 * what Istio rejects, at the field that is wrong.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { load } from 'js-yaml'
import { getKind, KINDS, lookupKind, SUPPORTED_KINDS, validateResource } from './kinds.js'

const NET = 'networking.istio.io/v1'
const SEC = 'security.istio.io/v1'

function res(apiVersion: string, kind: string, spec: unknown, metadata: Record<string, unknown> = { name: 'x' }) {
  return { apiVersion, kind, metadata, spec }
}

/** Parses a YAML spec (written as Istio's docs write it). */
const y = (text: string) => load(text)

function ok(obj: unknown) {
  const r = validateResource(obj)
  assert.ok(r.ok, r.ok ? '' : JSON.stringify(r.issues, null, 2))
  return r.resource
}

function issues(obj: unknown) {
  const r = validateResource(obj)
  assert.ok(!r.ok, 'expected validation to fail')
  return r.issues
}

/** Asserts exactly one issue, at `path`, whose message contains `fragment`. */
function rejects(obj: unknown, path: string, fragment: string) {
  const list = issues(obj)
  assert.equal(list.length, 1, JSON.stringify(list))
  assert.equal(list[0]?.path, path)
  assert.ok(list[0]?.message.includes(fragment), `${list[0]?.message} should include ${fragment}`)
}

describe('the registry', () => {
  test('kinds, groups, versions and short names', () => {
    assert.deepEqual(SUPPORTED_KINDS, [
      'VirtualService',
      'DestinationRule',
      'Gateway',
      'ServiceEntry',
      'WorkloadEntry',
      'Sidecar',
      'PeerAuthentication',
      'AuthorizationPolicy',
      'RequestAuthentication',
      'Telemetry',
      'GlobalRateLimit',
    ])
    assert.deepEqual(getKind('Telemetry')?.apiVersions, ['telemetry.istio.io/v1', 'telemetry.istio.io/v1alpha1'])
    assert.equal(lookupKind('telemetries.telemetry.istio.io')?.kind, 'Telemetry')
    assert.deepEqual(getKind('GlobalRateLimit')?.apiVersions, ['loom.dev/v1alpha1'])
    assert.equal(lookupKind('globalratelimits.loom.dev')?.kind, 'GlobalRateLimit')
    assert.equal(lookupKind('GRL')?.kind, 'GlobalRateLimit')
    assert.deepEqual(getKind('VirtualService')?.apiVersions, [
      'networking.istio.io/v1',
      'networking.istio.io/v1beta1',
      'networking.istio.io/v1alpha3',
    ])
    assert.deepEqual(getKind('AuthorizationPolicy')?.apiVersions, ['security.istio.io/v1', 'security.istio.io/v1beta1'])
    const short = Object.fromEntries(KINDS.flatMap((k) => k.shortNames.map((s) => [s, k.kind])))
    assert.deepEqual(short, {
      vs: 'VirtualService',
      dr: 'DestinationRule',
      gw: 'Gateway',
      se: 'ServiceEntry',
      we: 'WorkloadEntry',
      pa: 'PeerAuthentication',
      ap: 'AuthorizationPolicy',
      ra: 'RequestAuthentication',
      telemetry: 'Telemetry',
      grl: 'GlobalRateLimit',
    })
    for (const k of KINDS) assert.ok(k.namespaced)
    for (const name of [
      'vs',
      'VS',
      'virtualservice',
      'virtualservices',
      'VirtualService',
      'virtualservices.networking.istio.io',
    ]) {
      assert.equal(lookupKind(name)?.kind, 'VirtualService', name)
    }
    assert.equal(lookupKind('sidecars')?.kind, 'Sidecar')
    assert.equal(lookupKind('pods'), undefined)
  })

  test('every version of a kind takes the same spec', () => {
    for (const v of ['v1', 'v1beta1', 'v1alpha3']) {
      ok(res(`networking.istio.io/${v}`, 'DestinationRule', { host: 'reviews' }))
    }
    for (const v of ['v1', 'v1beta1']) ok(res(`security.istio.io/${v}`, 'PeerAuthentication', {}))
    rejects(
      res('security.istio.io/v1alpha3', 'PeerAuthentication', {}),
      'apiVersion',
      'use one of security.istio.io/v1',
    )
  })
})

describe('the envelope', () => {
  test('namespace defaults to default; labels and annotations are kept', () => {
    const r = ok(
      res(
        NET,
        'Gateway',
        { servers: [{ port: { number: 80, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] },
        {
          name: 'gw',
          labels: { app: 'ingress', 'app.kubernetes.io/part-of': 'shop' },
          annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"a": 1}' },
        },
      ),
    )
    assert.equal(r.metadata.namespace, 'default')
    assert.deepEqual(r.metadata.labels, { app: 'ingress', 'app.kubernetes.io/part-of': 'shop' })
    assert.equal(r.apiVersion, NET)
  })

  const meta = (m: Record<string, unknown>) => res(NET, 'DestinationRule', { host: 'reviews' }, m)
  test('metadata follows Kubernetes rules', () => {
    rejects(meta({}), 'metadata.name', 'required field is missing')
    rejects(meta({ name: 'Reviews' }), 'metadata.name', 'DNS-1123 subdomain')
    rejects(meta({ name: 'r', namespace: 'my.ns' }), 'metadata.namespace', 'DNS-1123 label')
    rejects(meta({ name: 'r', labels: { 'bad key!': 'x' } }), 'metadata.labels["bad key!"]', 'key "bad key!"')
    rejects(meta({ name: 'r', labels: { app: 'a b' } }), 'metadata.labels.app', 'label value')
    rejects(meta({ name: 'r', annotations: { a: 1 } }), 'metadata.annotations.a', 'wrong type')
    rejects(meta({ name: 'r', owner: 'me' }), 'metadata.owner', 'unknown field')
    rejects({ ...meta({ name: 'r' }), specs: {} }, 'specs', 'unknown field')
    rejects({ apiVersion: NET, kind: 'DestinationRule', spec: { host: 'r' } }, 'metadata', 'required field is missing')
  })

  test('loom.dev/load-balancer on a DestinationRule: peak-ewma, anything else is an error with its path', () => {
    ok(meta({ name: 'r', annotations: { 'loom.dev/load-balancer': 'peak-ewma' } }))
    rejects(
      meta({ name: 'r', annotations: { 'loom.dev/load-balancer': 'fastest' } }),
      'metadata.annotations["loom.dev/load-balancer"]',
      'unknown load balancer "fastest"; known: peak-ewma',
    )
  })

  test('null fields are pruned, as Kubernetes does', () => {
    const r = ok(
      y(`apiVersion: ${NET}
kind: VirtualService
metadata:
  name: r
  labels:
spec:
  hosts: [reviews]
  gateways:
  http:
  - route:
    - destination: {host: reviews}
    timeout: null
`),
    )
    assert.equal(r.metadata.labels, undefined)
  })

  test('a spec that is not an object', () => {
    rejects(res(NET, 'DestinationRule', 'host: reviews'), 'spec', 'wrong type')
  })

  test('a missing spec is an empty one, except where Istio requires it', () => {
    ok({ apiVersion: SEC, kind: 'AuthorizationPolicy', metadata: { name: 'allow-nothing' } })
    rejects({ apiVersion: NET, kind: 'ServiceEntry', metadata: { name: 's' } }, 'spec', 'required field is missing')
    rejects(
      { apiVersion: NET, kind: 'DestinationRule', metadata: { name: 'd' } },
      'spec.host',
      'required field is missing',
    )
  })
})

describe('VirtualService', () => {
  test("Istio's documented field set is accepted", () => {
    const r = ok(
      res(
        NET,
        'VirtualService',
        y(`
hosts: [reviews.prod.svc.cluster.local]
http:
- name: reviews-v2-routes
  match:
  - name: catalog
    uri: {prefix: /wpcatalog}
    scheme: {exact: https}
    method: {regex: "GET|HEAD"}
    authority: {prefix: reviews}
    headers:
      end-user: {exact: jason}
      x-version: {regex: "v[0-9]+"}
      x-present: {}
    queryParams:
      debug: {exact: "true"}
    ignoreUriCase: true
    withoutHeaders:
      x-skip: {}
    sourceLabels: {app: productpage}
    sourceNamespace: prod
    gateways: [mesh]
    port: 9080
    statPrefix: catalog
  rewrite: {uri: /newcatalog, authority: reviews.internal}
  route:
  - destination: {host: reviews.prod.svc.cluster.local, subset: v2, port: {number: 9080}}
    weight: 75
    headers:
      request: {set: {x-route: v2}, add: {x-extra: "1"}, remove: [x-debug]}
      response: {remove: [x-internal]}
  - destination: {host: reviews.prod.svc.cluster.local, subset: v1}
    weight: 25
  timeout: 10s
  retries:
    attempts: 3
    perTryTimeout: 2s
    retryOn: gateway-error,connect-failure,refused-stream,503
    retryRemoteLocalities: true
  fault:
    delay: {percentage: {value: 0.1}, fixedDelay: 5s}
    abort: {percentage: {value: 0.1}, httpStatus: 400}
  mirror: {host: reviews-mirror.prod.svc.cluster.local, subset: v1}
  mirrorPercentage: {value: 50.0}
  corsPolicy:
    allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*\\\\.example\\\\.com"}]
    allowMethods: [POST, GET]
    allowCredentials: false
    allowHeaders: [X-Foo-Bar]
    exposeHeaders: ["*"]
    maxAge: 24h
    unmatchedPreflights: IGNORE
  headers:
    request: {add: {x-forwarded-by: mesh}}
- match: [{uri: {exact: /old}}]
  redirect: {uri: /new, authority: newratings.default.svc.cluster.local, redirectCode: 301, scheme: https, port: 8443}
- match: [{uri: {prefix: /v2}}]
  redirect: {uri: /v3, derivePort: FROM_REQUEST_PORT}
- match: [{uri: {prefix: /teapot}}]
  directResponse: {status: 418, body: {string: "I'm a teapot"}}
- match: [{uri: {prefix: /service}}]
  rewrite:
    uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$", rewrite: "\\\\2/instance/\\\\1"}
  route: [{destination: {host: reviews.prod.svc.cluster.local}}]
- route: [{destination: {host: reviews.prod.svc.cluster.local, subset: v1}}]
  mirrors:
  - destination: {host: mirror-a}
    percentage: {value: 10}
  - destination: {host: mirror-b}
  fault:
    abort: {grpcStatus: UNAVAILABLE, percentage: {value: 5}}
tcp:
- match: [{port: 27017, destinationSubnets: [10.0.0.0/8], sourceLabels: {app: mongo-client}}]
  route: [{destination: {host: mongo.backup.svc.cluster.local, port: {number: 5555}}}]
exportTo: ["."]
`),
      ),
    )
    assert.equal(r.kind, 'VirtualService')
  })

  test('TLS routes and gateway-bound wildcards', () => {
    ok(
      res(
        NET,
        'VirtualService',
        y(`
hosts: ["*.bookinfo.com"]
gateways: [istio-system/mygateway]
tls:
- match:
  - port: 443
    sniHosts: [login.bookinfo.com]
  route: [{destination: {host: login.prod.svc.cluster.local}}]
`),
      ),
    )
    ok(res(NET, 'VirtualService', y('hosts: ["*"]\ngateways: [gw]\nhttp: [{route: [{destination: {host: a}}]}]')))
  })

  test('delegation: a root route and a delegate VirtualService', () => {
    ok(
      res(
        NET,
        'VirtualService',
        y(
          'hosts: [bookinfo.com]\ngateways: [gw]\n' +
            'http: [{match: [{uri: {prefix: /p}}], delegate: {name: p, namespace: nsa}}]',
        ),
      ),
    )
    ok(
      res(
        NET,
        'VirtualService',
        y('http: [{match: [{uri: {prefix: /p/v1}}], route: [{destination: {host: p-v1.nsa.svc.cluster.local}}]}]'),
      ),
    )
    rejects(
      res(NET, 'VirtualService', y('http: [{match: [{uri: {regex: "/p.*"}}], route: [{destination: {host: p}}]}]')),
      'spec.http[0].match[0].uri.regex',
      'does not support regex match for delegating',
    )
    rejects(
      res(NET, 'VirtualService', y('gateways: [gw]\nhttp: [{route: [{destination: {host: p}}]}]')),
      'spec.gateways',
      'delegate virtual service (no hosts) must have no gateways',
    )
  })

  const vs = (http: string, extra = 'hosts: [reviews]') => res(NET, 'VirtualService', y(`${extra}\nhttp:\n${http}`))
  const cases: [string, string, string, string][] = [
    ['a single destination needs no weight', '', '', ''],
    [
      'route and redirect',
      '- redirect: {uri: /x}\n  route: [{destination: {host: r}}]',
      'spec.http[0]',
      'only one of route, redirect',
    ],
    ['nothing to do', '- match: [{uri: {prefix: /}}]', 'spec.http[0]', 'one of route, redirect or directResponse'],
    ['empty redirect', '- redirect: {redirectCode: 302}', 'spec.http[0].redirect', 'must specify uri, authority'],
    [
      'redirect code',
      '- redirect: {uri: /x, redirectCode: 200}',
      'spec.http[0].redirect.redirectCode',
      'between 300 and 399',
    ],
    [
      'port and derivePort',
      '- redirect: {uri: /x, port: 80, derivePort: FROM_PROTOCOL_DEFAULT}',
      'spec.http[0].redirect',
      'only one of port, derivePort',
    ],
    [
      'fault with redirect',
      '- redirect: {uri: /x}\n  fault: {abort: {httpStatus: 500}}',
      'spec.http[0].fault',
      'fault and redirect',
    ],
    [
      'empty rewrite',
      '- rewrite: {}\n  route: [{destination: {host: r}}]',
      'spec.http[0].rewrite',
      'at least one of uri',
    ],
    [
      'uri and uriRegexRewrite',
      '- rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}\n  route: [{destination: {host: r}}]',
      'spec.http[0].rewrite',
      'only one of uri or uriRegexRewrite',
    ],
    [
      'rewrite group out of range',
      '- rewrite: {uriRegexRewrite: {match: "/(a)", rewrite: "\\\\2"}}\n  route: [{destination: {host: r}}]',
      'spec.http[0].rewrite.uriRegexRewrite.rewrite',
      'capture group 2',
    ],
    [
      'bad rewrite regex',
      '- rewrite: {uriRegexRewrite: {match: "(", rewrite: x}}\n  route: [{destination: {host: r}}]',
      'spec.http[0].rewrite.uriRegexRewrite.match',
      'RE2 rejected',
    ],
    [
      'abort without an error',
      '- fault: {abort: {percentage: {value: 5}}}\n  route: [{destination: {host: r}}]',
      'spec.http[0].fault.abort',
      'one of httpStatus, grpcStatus, http2Error is required',
    ],
    [
      'abort status',
      '- fault: {abort: {httpStatus: 99}}\n  route: [{destination: {host: r}}]',
      'spec.http[0].fault.abort.httpStatus',
      'between 200 and 599',
    ],
    [
      'fault percentage',
      '- fault: {delay: {fixedDelay: 1s, percentage: {value: 101}}}\n  route: [{destination: {host: r}}]',
      'spec.http[0].fault.delay.percentage.value',
      'percentage 101',
    ],
    ['empty fault', '- fault: {}\n  route: [{destination: {host: r}}]', 'spec.http[0].fault', 'abort and/or a delay'],
    [
      'retryOn',
      '- retries: {attempts: 2, retryOn: "5xx,bogus"}\n  route: [{destination: {host: r}}]',
      'spec.http[0].retries.retryOn',
      '"bogus" is not a valid retryOn',
    ],
    [
      'retries disabled but configured',
      '- retries: {attempts: 0, perTryTimeout: 1s}\n  route: [{destination: {host: r}}]',
      'spec.http[0].retries',
      'attempts are set to 0',
    ],
    [
      'timeout precision',
      '- timeout: 1500us\n  route: [{destination: {host: r}}]',
      'spec.http[0].timeout',
      'ms precision',
    ],
    [
      'weight range',
      '- route: [{destination: {host: r}, weight: 101}, {destination: {host: s}}]',
      'spec.http[0].route[0].weight',
      'between 0 and 100',
    ],
    [
      'missing weights',
      '- route: [{destination: {host: r}, weight: 60}, {destination: {host: s}}]',
      'spec.http[0].route',
      'total destination weight 60 != 100',
    ],
    [
      'destination host *',
      '- route: [{destination: {host: "*"}}]',
      'spec.http[0].route[0].destination.host',
      'invalid destination host',
    ],
    [
      'destination without host',
      '- route: [{destination: {subset: v1}}]',
      'spec.http[0].route[0].destination.host',
      'required field is missing',
    ],
    [
      'subset name',
      '- route: [{destination: {host: r, subset: v1.0}}]',
      'spec.http[0].route[0].destination.subset',
      'subset name is invalid',
    ],
    [
      'header name',
      '- route: [{destination: {host: r}}]\n  headers: {request: {set: {"bad header": x}}}',
      'spec.http[0].headers.request.set["bad header"]',
      'not a valid HTTP header name',
    ],
    [
      'pseudo-header',
      '- route: [{destination: {host: r}}]\n  headers: {response: {set: {":status": "200"}}}',
      'spec.http[0].headers.response.set[":status"]',
      'cannot modify',
    ],
    [
      'authority twice',
      '- route: [{destination: {host: r}}]\n  rewrite: {authority: a}\n  headers: {request: {set: {host: b}}}',
      'spec.http[0].headers.request',
      'authority header cannot be set multiple times',
    ],
    [
      'two string matches',
      '- match: [{uri: {exact: /a, prefix: /a}}]\n  route: [{destination: {host: r}}]',
      'spec.http[0].match[0].uri',
      'only one of exact, prefix, regex',
    ],
    [
      'match port',
      '- match: [{port: 0}]\n  route: [{destination: {host: r}}]',
      'spec.http[0].match[0].port',
      'between 1 and 65535',
    ],
    [
      'source namespace',
      '- match: [{sourceNamespace: Prod}]\n  route: [{destination: {host: r}}]',
      'spec.http[0].match[0].sourceNamespace',
      'sourceNamespace match Prod is invalid',
    ],
    [
      'CORS method',
      '- corsPolicy: {allowMethods: [FETCH]}\n  route: [{destination: {host: r}}]',
      'spec.http[0].corsPolicy.allowMethods[0]',
      'not a supported HTTP method',
    ],
    [
      'CORS maxAge precision',
      '- corsPolicy: {maxAge: 1500ms}\n  route: [{destination: {host: r}}]',
      'spec.http[0].corsPolicy.maxAge',
      'seconds precision',
    ],
    [
      'mirror and mirrors',
      '- mirror: {host: m}\n  mirrors: [{destination: {host: n}}]\n  route: [{destination: {host: r}}]',
      'spec.http[0].mirrors',
      'cannot be used together',
    ],
    [
      'mirror percentage',
      '- mirrorPercentage: {value: 150}\n  route: [{destination: {host: r}}]',
      'spec.http[0].mirrorPercentage.value',
      'percentage 150',
    ],
    [
      'direct response status',
      '- directResponse: {status: 700}',
      'spec.http[0].directResponse.status',
      'between 200 and 599',
    ],
    [
      'direct response bytes',
      '- directResponse: {status: 200, body: {bytes: "not base64!"}}',
      'spec.http[0].directResponse.body.bytes',
      'base64',
    ],
  ]
  for (const [name, http, path, fragment] of cases) {
    test(name, () => {
      const obj = vs(http === '' ? '- route: [{destination: {host: reviews}}]' : http)
      if (path === '') ok(obj)
      else rejects(obj, path, fragment)
    })
  }

  test('hosts', () => {
    rejects(
      vs('- route: [{destination: {host: r}}]', 'hosts: ["*"]'),
      'spec.hosts[0]',
      'not allowed for virtual services bound to the mesh',
    )
    rejects(
      vs('- route: [{destination: {host: r}}]', 'hosts: [a.example.com, "*.example.com"]'),
      'spec.hosts[1]',
      'duplicate hosts',
    )
    rejects(vs('- route: [{destination: {host: r}}]', 'hosts: [bad_host]'), 'spec.hosts[0]', 'invalid')
    rejects(res(NET, 'VirtualService', { hosts: ['r'] }), 'spec', 'http, tcp or tls must be provided')
    rejects(
      vs('- route: [{destination: {host: r}}]', 'hosts: [r]\nexportTo: [".", "*"]'),
      'spec.exportTo',
      'cannot have both public',
    )
    rejects(
      vs('- route: [{destination: {host: r}}]', 'hosts: [r]\ngateways: [a/b/c]'),
      'spec.gateways[0]',
      'invalid value for gateway name',
    )
  })

  test('TLS route rules', () => {
    const tls = (t: string) => res(NET, 'VirtualService', y(`hosts: ["*.bookinfo.com"]\ngateways: [gw]\ntls:\n${t}`))
    rejects(
      tls('- match: [{sniHosts: [login.other.com]}]\n  route: [{destination: {host: l}}]'),
      'spec.tls[0].match[0].sniHosts[0]',
      'not a compatible subset',
    )
    rejects(tls('- match: [{sniHosts: [a.bookinfo.com]}]'), 'spec.tls[0].route', 'TLS route is required')
    rejects(tls('- route: [{destination: {host: l}}]'), 'spec.tls[0].match', 'required field is missing')
    rejects(
      tls(
        '- match: [{sniHosts: [a.bookinfo.com], destinationSubnets: [1.2.3.4/40]}]\n' +
          '  route: [{destination: {host: l}}]',
      ),
      'spec.tls[0].match[0].destinationSubnets[0]',
      'not a valid CIDR',
    )
  })
})

describe('DestinationRule', () => {
  test("Istio's documented field set is accepted", () => {
    ok(
      res(
        NET,
        'DestinationRule',
        y(`
host: my-svc.prod.svc.cluster.local
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpCookie: {name: user, ttl: 0s, path: /, attributes: [{name: SameSite, value: Strict}]}
      ringHash: {minimumRingSize: 1024}
    localityLbSetting:
      enabled: true
      distribute:
      - from: us-west/zone1/*
        to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
    warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}
  connectionPool:
    tcp:
      maxConnections: 100
      connectTimeout: 30ms
      tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}
      maxConnectionDuration: 1h
      idleTimeout: 0s
    http:
      http1MaxPendingRequests: 10
      http2MaxRequests: 1000
      maxRequestsPerConnection: 10
      maxRetries: 3
      idleTimeout: 5m
      h2UpgradePolicy: UPGRADE
      useClientProtocol: false
      maxConcurrentStreams: 100
      http2KeepAlive: {interval: 15s, timeout: 5s}
  outlierDetection:
    consecutive5xxErrors: 7
    consecutiveGatewayErrors: 5
    consecutiveLocalOriginFailures: 3
    splitExternalLocalOriginErrors: true
    interval: 5m
    baseEjectionTime: 15m
    maxEjectionPercent: 50
    minHealthPercent: 10
  tls:
    mode: MUTUAL
    clientCertificate: /etc/certs/client.pem
    privateKey: /etc/certs/key.pem
    caCertificates: /etc/certs/ca.pem
    caCrl: /etc/certs/crl.pem
    sni: my-svc.example.com
    subjectAltNames: [my-svc.example.com]
    insecureSkipVerify: false
  portLevelSettings:
  - port: {number: 80}
    loadBalancer: {simple: LEAST_REQUEST}
  - port: {number: 9080}
    tls: {mode: SIMPLE, credentialName: client-credential}
  tunnel: {protocol: CONNECT, targetHost: example.com, targetPort: 443}
  proxyProtocol: {version: V2}
  retryBudget: {percent: 20, minRetryConcurrency: 3}
subsets:
- name: testversion
  labels: {version: v3}
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        failover: [{from: us-east, to: eu-west}]
        failoverPriority: [topology.istio.io/network]
workloadSelector: {matchLabels: {app: ratings}}
exportTo: ["."]
`),
      ),
    )
  })

  const dr = (tp: string) => res(NET, 'DestinationRule', y(`host: reviews\n${tp}`))
  const cases: [string, string, string, string][] = [
    [
      'two load balancers',
      'trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}',
      'spec.trafficPolicy.loadBalancer',
      'only one of simple, consistentHash',
    ],
    [
      'two hash keys',
      'trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: x}}}',
      'spec.trafficPolicy.loadBalancer.consistentHash',
      'only one of httpHeaderName',
    ],
    [
      'cookie without name',
      'trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}}',
      'spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name',
      'required field is missing',
    ],
    ['empty traffic policy', 'trafficPolicy: {}', 'spec.trafficPolicy', 'at least one field'],
    [
      'empty connection pool',
      'trafficPolicy: {connectionPool: {}}',
      'spec.trafficPolicy.connectionPool',
      'at least one field',
    ],
    [
      'connect timeout',
      'trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s}}}',
      'spec.trafficPolicy.connectionPool.tcp.connectTimeout',
      'at least 1ms',
    ],
    [
      'ejection percent',
      'trafficPolicy: {outlierDetection: {maxEjectionPercent: 120}}',
      'spec.trafficPolicy.outlierDetection.maxEjectionPercent',
      'between 0 and 100',
    ],
    [
      'mutual without certs',
      'trafficPolicy: {tls: {mode: MUTUAL, privateKey: /k}}',
      'spec.trafficPolicy.tls.clientCertificate',
      'client certificate required',
    ],
    [
      'credentialName with certs',
      'trafficPolicy: {tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca}}',
      'spec.trafficPolicy.tls',
      'if credentialName is set',
    ],
    [
      'tls mode',
      'trafficPolicy: {tls: {mode: PERMISSIVE}}',
      'spec.trafficPolicy.tls.mode',
      'expected one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL',
    ],
    [
      'port-level without port',
      'trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}',
      'spec.trafficPolicy.portLevelSettings[0].port',
      'must have valid port',
    ],
    [
      'port-level duplicate',
      'trafficPolicy:\n  portLevelSettings:\n' +
        '  - {port: {number: 80}, tls: {mode: DISABLE}}\n  - {port: {number: 80}, tls: {mode: SIMPLE}}',
      'spec.trafficPolicy.portLevelSettings[1].port.number',
      'duplicate port 80',
    ],
    [
      'locality weights',
      'trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a/b/*, to: {"a/b/*": 60}}]}}}',
      'spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to',
      'total locality weight 60',
    ],
    [
      'distribute and failover',
      'trafficPolicy:\n  loadBalancer:\n' +
        '    localityLbSetting: {distribute: [{from: a, to: {a: 100}}], failover: [{from: a, to: b}]}',
      'spec.trafficPolicy.loadBalancer.localityLbSetting',
      'can not simultaneously specify',
    ],
    [
      'locality weight over 100',
      'trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a, to: {a: 101, b: 1}}]}}}',
      'spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to.a',
      'locality weight must be in range [1, 100]',
    ],
    [
      'overlapping distribute sources',
      'trafficPolicy:\n  loadBalancer:\n' +
        '    localityLbSetting: {distribute: [{from: r1, to: {a: 100}}, {from: r1/z1, to: {a: 100}}]}',
      'spec.trafficPolicy.loadBalancer.localityLbSetting.distribute',
      'locality r1/z1 overlaps with previous ones',
    ],
    [
      'destinations after a wildcard',
      'trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a, to: {"*": 50, r2: 50}}]}}}',
      'spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to',
      'locality r2 overlaps with previous ones',
    ],
    [
      'wildcard in the middle',
      'trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: "r1/*/s", to: {a: 100}}]}}}',
      'spec.trafficPolicy.loadBalancer.localityLbSetting.distribute',
      "wildcard '*' may appear once, at the end",
    ],
    [
      'failover to the same region',
      'trafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r1}]}}}',
      'spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]',
      'must specify different regions',
    ],
    [
      'failover below a region',
      'trafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: r1/z1, to: r2}]}}}',
      'spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]',
      'only specify region',
    ],
    [
      'failover with a topology label',
      'trafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n' +
        '      failover: [{from: r1, to: r2}]\n      failoverPriority: [env, topology.kubernetes.io/zone]',
      'spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[1]',
      "topology label 'topology.kubernetes.io/zone'",
    ],
    [
      'tunnel without target',
      'trafficPolicy: {tunnel: {protocol: CONNECT, targetHost: a}}',
      'spec.trafficPolicy.tunnel.targetPort',
      'required field is missing',
    ],
    ['subset name', 'subsets: [{name: V1_0}]', 'spec.subsets[0].name', 'subset name is invalid'],
    ['duplicate subsets', 'subsets: [{name: v1}, {name: v1}]', 'spec.subsets[1].name', 'duplicate subset name v1'],
    [
      'subset label',
      'subsets: [{name: v1, labels: {version: "v 1"}}]',
      'spec.subsets[0].labels.version',
      'label value',
    ],
    [
      'selector wildcard',
      'workloadSelector: {matchLabels: {app: "*"}}',
      'spec.workloadSelector.matchLabels.app',
      'wildcard not allowed',
    ],
    [
      'selector exported',
      'workloadSelector: {matchLabels: {app: a}}\nexportTo: ["*"]',
      'spec.exportTo',
      'only be exported to its own namespace',
    ],
    [
      'exportTo duplicates',
      'exportTo: [default, "."]',
      'spec.exportTo[1]',
      'duplicate entries in exportTo: . and current namespace default',
    ],
  ]
  for (const [name, tp, path, fragment] of cases) test(name, () => rejects(dr(tp), path, fragment))
  test('host', () => rejects(res(NET, 'DestinationRule', { host: 'a..b' }), 'spec.host', 'invalid'))
})

describe('Gateway', () => {
  test("Istio's documented field set is accepted", () => {
    ok(
      res(
        NET,
        'Gateway',
        y(`
selector: {app: my-gateway-controller}
servers:
- port: {number: 80, name: http, protocol: HTTP}
  hosts: [uk.bookinfo.com, eu.bookinfo.com]
  tls: {httpsRedirect: true}
- port: {number: 443, name: https-443, protocol: HTTPS}
  hosts: [uk.bookinfo.com, eu.bookinfo.com]
  tls: {mode: SIMPLE, credentialName: bookinfo-secret}
- port: {number: 9443, name: https-9443, protocol: HTTPS}
  hosts: ["bookinfo-namespace/*.bookinfo.com"]
  tls: {mode: SIMPLE, serverCertificate: /etc/certs/server.pem, privateKey: /etc/certs/privatekey.pem}
- port: {number: 9080, name: http-wildcard, protocol: HTTP}
  hosts: ["*"]
  name: wildcard
  bind: 0.0.0.0
- port: {number: 2379, name: mongo, protocol: MONGO, targetPort: 2380}
  hosts: ["*"]
- port: {number: 8443, name: tls-passthrough, protocol: TLS}
  hosts: ["*.example.com"]
  tls: {mode: PASSTHROUGH}
- port: {number: 15443, name: mutual, protocol: HTTPS}
  hosts: ["./*"]
  tls:
    mode: MUTUAL
    credentialNames: [rsa-cert, ecdsa-cert]
    subjectAltNames: [client.example.com]
    verifyCertificateSpki: [abc]
    verifyCertificateHash: [def]
    minProtocolVersion: TLSV1_2
    maxProtocolVersion: TLSV1_3
    cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]
    caCertCredentialName: ca-cert
- port: {number: 15444, name: istio-mutual, protocol: HTTPS}
  hosts: ["*"]
  tls: {mode: ISTIO_MUTUAL}
`),
        { name: 'my-gateway', namespace: 'some-config-namespace' },
      ),
    )
  })

  const gw = (servers: string) => res(NET, 'Gateway', y(`servers:\n${servers}`), { name: 'gw' })
  const cases: [string, string, string, string][] = [
    [
      'port name',
      '- port: {number: 80, protocol: HTTP}\n  hosts: ["*"]',
      'spec.servers[0].port.name',
      'required field is missing',
    ],
    [
      'protocol',
      '- port: {number: 80, name: h, protocol: HTTP3}\n  hosts: ["*"]',
      'spec.servers[0].port.protocol',
      'unsupported protocol "HTTP3"',
    ],
    [
      'port range',
      '- port: {number: 0, name: h, protocol: HTTP}\n  hosts: ["*"]',
      'spec.servers[0].port.number',
      'between 1 and 65535',
    ],
    [
      'no hosts',
      '- port: {number: 80, name: h, protocol: HTTP}\n  hosts: []',
      'spec.servers[0].hosts',
      'at least one host',
    ],
    [
      'short host name',
      '- port: {number: 80, name: h, protocol: HTTP}\n  hosts: [reviews]',
      'spec.servers[0].hosts[0]',
      'short names',
    ],
    [
      'HTTPS without TLS',
      '- port: {number: 443, name: h, protocol: HTTPS}\n  hosts: ["*"]',
      'spec.servers[0].tls',
      'must have TLS settings',
    ],
    [
      'TLS on plain HTTP',
      '- port: {number: 80, name: h, protocol: HTTP}\n  hosts: ["*"]\n  tls: {mode: SIMPLE, credentialName: c}',
      'spec.servers[0].tls',
      'plain text HTTP',
    ],
    [
      'SIMPLE without certificates',
      '- port: {number: 443, name: h, protocol: HTTPS}\n  hosts: ["*"]\n  tls: {mode: SIMPLE, privateKey: /k}',
      'spec.servers[0].tls.serverCertificate',
      'requires a server certificate',
    ],
    [
      'credentialName and credentialNames',
      '- port: {number: 443, name: h, protocol: HTTPS}\n  hosts: ["*"]\n' +
        '  tls: {mode: SIMPLE, credentialName: a, credentialNames: [b]}',
      'spec.servers[0].tls',
      'only one of credentialName or credentialNames',
    ],
    [
      'TLS version',
      '- port: {number: 443, name: h, protocol: HTTPS}\n  hosts: ["*"]\n' +
        '  tls: {mode: SIMPLE, credentialName: a, minProtocolVersion: TLSv1_2}',
      'spec.servers[0].tls.minProtocolVersion',
      'expected one of TLS_AUTO',
    ],
    [
      'duplicate port names',
      '- port: {number: 80, name: h, protocol: HTTP}\n  hosts: ["*"]\n' +
        '- port: {number: 81, name: h, protocol: HTTP}\n  hosts: ["*"]',
      'spec.servers[1].port.name',
      'port names in servers must be unique',
    ],
  ]
  for (const [name, servers, path, fragment] of cases) test(name, () => rejects(gw(servers), path, fragment))
  test('a gateway name is a DNS label', () => {
    rejects(
      res(NET, 'Gateway', y('servers: [{port: {number: 80, name: h, protocol: HTTP}, hosts: ["*"]}]'), {
        name: 'gw.v1',
      }),
      'metadata.name',
      'invalid gateway name',
    )
  })
  test('at least one server', () =>
    rejects(res(NET, 'Gateway', {}, { name: 'gw' }), 'spec.servers', 'at least one server'))
})

describe('ServiceEntry and WorkloadEntry', () => {
  test("Istio's documented field sets are accepted", () => {
    ok(
      res(
        NET,
        'ServiceEntry',
        y(`
hosts: [mymongodb.somedomain]
addresses: [192.192.192.192/24]
ports: [{number: 27018, name: mongodb, protocol: MONGO}]
location: MESH_INTERNAL
resolution: STATIC
endpoints:
- address: 2.2.2.2
- address: 3.3.3.3
  labels: {version: v2}
  network: net-1
  locality: us-west/zone1
  weight: 10
  serviceAccount: mongo
`),
      ),
    )
    ok(
      res(
        NET,
        'ServiceEntry',
        y(`
hosts: [foo.bar.com]
location: MESH_EXTERNAL
ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}, {number: 443, name: https, protocol: TLS}]
resolution: DNS
endpoints: [{address: us.foo.bar.com, ports: {http: 8080}}]
subjectAltNames: [spiffe://cluster.local/ns/foo/sa/bar]
exportTo: ["~"]
`),
      ),
    )
    ok(
      res(
        NET,
        'ServiceEntry',
        y(
          'hosts: [unix.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\n' +
            'endpoints: [{address: "unix:///var/run/example/socket"}]',
        ),
      ),
    )
    ok(
      res(
        NET,
        'ServiceEntry',
        y(
          'hosts: ["*.bar.com"]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: NONE\n' +
            'workloadSelector: {labels: {app: bar}}',
        ),
      ),
    )
    ok(
      res(
        NET,
        'WorkloadEntry',
        y(
          'address: 1.2.3.4\nports: {http: 8080}\nlabels: {app: details}\nnetwork: vm-net\n' +
            'locality: us-east/a\nweight: 2\nserviceAccount: details',
        ),
      ),
    )
    ok(res(NET, 'WorkloadEntry', y('network: remote')))
  })

  const se = (spec: string) => res(NET, 'ServiceEntry', y(spec))
  const cases: [string, string, string, string][] = [
    ['no hosts', 'hosts: []', 'spec.hosts', 'at least one host'],
    ['wildcard host', 'hosts: ["*"]', 'spec.hosts[0]', 'hostname cannot be wildcard'],
    ['DNS with wildcard host', 'hosts: ["*.a.com"]\nresolution: DNS', 'spec.hosts[0]', 'hosts must be FQDN'],
    ['resolution', 'hosts: [a.com]\nresolution: DYNAMIC', 'spec.resolution', 'expected one of NONE, STATIC, DNS'],
    [
      'STATIC endpoint address',
      'hosts: [a.com]\nresolution: STATIC\nendpoints: [{address: a.com}]',
      'spec.endpoints[0].address',
      'not a valid IP address',
    ],
    [
      'endpoint port not declared',
      'hosts: [a.com]\nresolution: DNS\nports: [{number: 80, name: http}]\n' +
        'endpoints: [{address: b.com, ports: {grpc: 9000}}]',
      'spec.endpoints[0].ports.grpc',
      'not defined by the service entry',
    ],
    ['port name', 'hosts: [a.com]\nports: [{number: 80, name: HTTP_80}]', 'spec.ports[0].name', 'invalid port name'],
    ['port without name', 'hosts: [a.com]\nports: [{number: 80}]', 'spec.ports[0].name', 'required field is missing'],
    [
      'UDS with ports',
      'hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\n' +
        'endpoints: [{address: "unix:///s", ports: {http: 80}}]',
      'spec.endpoints[0].ports',
      'UDS may not include ports',
    ],
    [
      'relative UDS',
      'hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\nendpoints: [{address: "unix://s"}]',
      'spec.endpoints[0].address',
      'absolute path',
    ],
    ['exportTo ~ with others', 'hosts: [a.com]\nexportTo: ["~", "*"]', 'spec.exportTo', 'cannot have both public'],
  ]
  for (const [name, spec, path, fragment] of cases) {
    test(name, () => {
      const list = issues(se(spec))
      assert.ok(
        list.some((i) => i.path === path && i.message.includes(fragment)),
        `${path}: ${fragment} not in ${JSON.stringify(list)}`,
      )
    })
  }
  test('a WorkloadEntry needs an address or a network', () => {
    rejects(res(NET, 'WorkloadEntry', {}), 'spec.address', 'address is required')
    rejects(
      res(NET, 'WorkloadEntry', { address: '1.2.3.4', ports: { http: 0 } }),
      'spec.ports.http',
      'between 1 and 65535',
    )
  })
})

describe('Sidecar', () => {
  test("Istio's documented field set is accepted", () => {
    ok(
      res(
        NET,
        'Sidecar',
        y(`
workloadSelector: {labels: {app: ratings}}
ingress:
- port: {number: 9080, protocol: HTTP, name: somename}
  defaultEndpoint: unix:///var/run/someuds.sock
- port: {number: 9443, protocol: HTTPS, name: https}
  defaultEndpoint: 127.0.0.1:9443
  captureMode: IPTABLES
  tls: {mode: SIMPLE, privateKey: /etc/key.pem, serverCertificate: /etc/cert.pem}
  connectionPool: {http: {http1MaxPendingRequests: 10}}
egress:
- port: {number: 9080, protocol: HTTP, name: egresshttp}
  hosts: ["prod-us1/*"]
- port: {number: 0, protocol: HTTP}
  bind: unix:///var/run/app.sock
  captureMode: NONE
  hosts: ["./*"]
- hosts: ["istio-system/*", "~/*"]
inboundConnectionPool: {tcp: {maxConnections: 100}}
outboundTrafficPolicy:
  mode: ALLOW_ANY
  egressProxy: {host: foo.bar.svc.cluster.local, subset: v1, port: {number: 443}}
`),
      ),
    )
  })
  const sc = (spec: string) => res(NET, 'Sidecar', y(spec))
  test('egress hosts are namespace/host', () =>
    rejects(
      sc('egress: [{hosts: [reviews.default.svc.cluster.local]}]'),
      'spec.egress[0].hosts[0]',
      'namespace/dnsName',
    ))
  test('a catch-all egress listener comes last', () =>
    rejects(
      sc('egress: [{hosts: ["*/*"]}, {port: {number: 80, protocol: HTTP}, hosts: ["*/*"]}]'),
      'spec.egress[0]',
      'should be the last',
    ))
  test('egressProxy needs ALLOW_ANY', () =>
    rejects(
      sc('outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: a.b.c, port: {number: 1}}}'),
      'spec.outboundTrafficPolicy.egressProxy',
      'ALLOW_ANY',
    ))
  test('ingress ports are unique', () =>
    rejects(
      sc('ingress: [{port: {number: 80, protocol: HTTP}}, {port: {number: 80, protocol: HTTP}}]'),
      'spec.ingress[1].port.number',
      'must be unique',
    ))
  test('defaultEndpoint', () =>
    rejects(
      sc('ingress: [{port: {number: 80, protocol: HTTP}, defaultEndpoint: "10.0.0.1:80"}]'),
      'spec.ingress[0].defaultEndpoint',
      'must be of form',
    ))
  test('capture mode', () =>
    rejects(
      sc('egress: [{captureMode: TPROXY, hosts: ["*/*"]}]'),
      'spec.egress[0].captureMode',
      'expected one of DEFAULT, IPTABLES, NONE',
    ))
})

describe('PeerAuthentication', () => {
  test('port-level mTLS', () => {
    const r = ok(
      res(
        SEC,
        'PeerAuthentication',
        y('selector: {matchLabels: {app: finance}}\nmtls: {mode: STRICT}\nportLevelMtls:\n  8080: {mode: DISABLE}'),
      ),
    )
    assert.ok(r.kind === 'PeerAuthentication')
    assert.deepEqual(r.spec.portLevelMtls, { '8080': { mode: 'DISABLE' } })
    rejects(
      res(SEC, 'PeerAuthentication', y('portLevelMtls: {8080: {mode: DISABLE}}')),
      'spec.portLevelMtls',
      'requires a selector',
    )
    rejects(
      res(SEC, 'PeerAuthentication', y('selector: {matchLabels: {app: a}}\nportLevelMtls: {70000: {mode: DISABLE}}')),
      'spec.portLevelMtls["70000"]',
      'between 1 and 65535',
    )
    rejects(
      res(SEC, 'PeerAuthentication', y('mtls: {mode: ON}')),
      'spec.mtls.mode',
      'expected one of UNSET, DISABLE, PERMISSIVE, STRICT',
    )
  })
})

describe('AuthorizationPolicy', () => {
  test("Istio's documented field set is accepted", () => {
    ok(
      res(
        SEC,
        'AuthorizationPolicy',
        y(`
selector: {matchLabels: {app: httpbin, version: v1}}
action: ALLOW
rules:
- from:
  - source: {principals: [cluster.local/ns/default/sa/sleep], notPrincipals: [cluster.local/ns/default/sa/evil]}
  - source: {namespaces: [dev], notNamespaces: [prod]}
  - source: {requestPrincipals: ["issuer/*"], notRequestPrincipals: ["*"]}
  - source: {ipBlocks: [10.0.0.0/8], notIpBlocks: [10.1.0.0/16], remoteIpBlocks: [1.2.3.4], notRemoteIpBlocks: ["::1"]}
  - source: {serviceAccounts: [default/sleep], notServiceAccounts: [sleep2]}
  to:
  - operation:
      methods: [GET]
      notMethods: [DELETE]
      paths: ["/info*", "/api/{*}/x", "/files/{**}"]
      notPaths: [/admin]
      hosts: [a.com]
      notHosts: [b.com]
      ports: ["8080"]
      notPorts: ["9090"]
  when:
  - key: request.auth.claims[iss]
    values: ["https://accounts.google.com"]
  - key: request.auth.claims[org][team]
    values: [blue]
  - key: source.ip
    notValues: [10.0.0.1]
  - key: request.headers[User-Agent]
    values: ["Mozilla/*"]
`),
      ),
    )
    ok(
      res(
        SEC,
        'AuthorizationPolicy',
        y('action: CUSTOM\nprovider: {name: my-ext-authz}\nrules: [{to: [{operation: {paths: ["/admin/*"]}}]}]'),
      ),
    )
    ok(res(SEC, 'AuthorizationPolicy', y('action: AUDIT\nrules: [{to: [{operation: {methods: [GET]}}]}]')))
    ok(
      res(
        SEC,
        'AuthorizationPolicy',
        y('targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\nrules: [{}]'),
      ),
    )
  })

  const ap = (spec: string) => res(SEC, 'AuthorizationPolicy', y(spec))
  const cases: [string, string, string, string][] = [
    ['action', 'action: REJECT', 'spec.action', 'expected one of ALLOW, DENY, AUDIT, CUSTOM'],
    ['deny without rules', 'action: DENY', 'spec.rules', 'deny policy without rules'],
    ['custom without provider', 'action: CUSTOM\nrules: [{}]', 'spec.provider.name', 'requires a provider name'],
    ['provider without custom', 'provider: {name: x}', 'spec.provider', 'only be used with the CUSTOM action'],
    [
      'selector and targetRef',
      'selector: {matchLabels: {a: b}}\ntargetRef: {kind: Gateway, name: g}',
      'spec',
      'only one of selector, targetRef or targetRefs',
    ],
    [
      'cross-namespace targetRef',
      'targetRef: {kind: Gateway, name: g, namespace: other}',
      'spec.targetRef.namespace',
      'cross namespace',
    ],
    ['empty from', 'rules: [{from: []}]', 'spec.rules[0].from', '`from` must not be empty'],
    ['empty source', 'rules: [{from: [{source: {}}]}]', 'spec.rules[0].from[0].source', 'must not be empty'],
    ['empty operation', 'rules: [{to: [{operation: {}}]}]', 'spec.rules[0].to[0].operation', 'must not be empty'],
    [
      'empty value',
      'rules: [{from: [{source: {principals: [""]}}]}]',
      'spec.rules[0].from[0].source.principals[0]',
      'empty value',
    ],
    [
      'ip block',
      'rules: [{from: [{source: {ipBlocks: [10.0.0.256]}}]}]',
      'spec.rules[0].from[0].source.ipBlocks[0]',
      'not a valid IP',
    ],
    [
      'operation port',
      'rules: [{to: [{operation: {ports: [http]}}]}]',
      'spec.rules[0].to[0].operation.ports[0]',
      'between 1 and 65535',
    ],
    [
      'operation port type',
      'rules: [{to: [{operation: {ports: [8080]}}]}]',
      'spec.rules[0].to[0].operation.ports[0]',
      'wrong type',
    ],
    [
      'unknown attribute',
      'rules: [{when: [{key: "request.auth.claim[groups]", values: [a]}]}]',
      'spec.rules[0].when[0].key',
      'unknown attribute',
    ],
    [
      'condition without values',
      'rules: [{when: [{key: source.namespace}]}]',
      'spec.rules[0].when[0]',
      'at least one of values or notValues',
    ],
    [
      'condition value',
      'rules: [{when: [{key: destination.port, values: ["99999"]}]}]',
      'spec.rules[0].when[0].values[0]',
      'between 1 and 65535',
    ],
    [
      'path template operator inside a segment',
      'rules: [{to: [{operation: {paths: ["/a{*}/b"]}}]}]',
      'spec.rules[0].to[0].operation.paths[0]',
      'each as a whole segment',
    ],
    [
      'path template {**} not last',
      'rules: [{to: [{operation: {notPaths: ["/a/{**}/{*}"]}}]}]',
      'spec.rules[0].to[0].operation.notPaths[0]',
      'must be the last operator',
    ],
    [
      'nested claim with an empty name',
      'rules: [{when: [{key: "request.auth.claims[a][]", values: [a]}]}]',
      'spec.rules[0].when[0].key',
      'expected request.auth.claims[name]',
    ],
    [
      'header key with two names',
      'rules: [{when: [{key: "request.headers[a][b]", values: [a]}]}]',
      'spec.rules[0].when[0].key',
      'expected request.headers[name]',
    ],
    [
      'claim without a name',
      'rules: [{when: [{key: "request.auth.claims[]", values: [a]}]}]',
      'spec.rules[0].when[0].key',
      'expected request.auth.claims[name]',
    ],
  ]
  for (const [name, spec, path, fragment] of cases) test(name, () => rejects(ap(spec), path, fragment))
})

describe('RequestAuthentication', () => {
  test("Istio's documented field set is accepted", () => {
    ok(
      res(
        SEC,
        'RequestAuthentication',
        y(`
selector: {matchLabels: {app: httpbin}}
jwtRules:
- issuer: issuer-foo
  jwks: '{"keys": [{"kty": "RSA", "e": "AQAB", "n": "xyz"}]}'
  audiences: [bookstore_android.apps.example.com]
  fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
  fromParams: [my_token]
  fromCookies: [session]
  outputPayloadToHeader: x-jwt-payload
  forwardOriginalToken: true
  outputClaimToHeaders: [{header: x-jwt-sub, claim: sub}]
  timeout: 5s
  spaceDelimitedClaims: [scope]
- issuer: https://accounts.google.com
  jwksUri: https://www.googleapis.com/oauth2/v3/certs
`),
      ),
    )
  })
  const ra = (spec: string) => res(SEC, 'RequestAuthentication', y(spec))
  const cases: [string, string, string, string][] = [
    ['issuer', 'jwtRules: [{jwksUri: "https://a/jwks"}]', 'spec.jwtRules[0].issuer', 'required field is missing'],
    [
      'jwks and jwksUri',
      `jwtRules: [{issuer: a, jwks: '{"keys": []}', jwksUri: "https://a/jwks"}]`,
      'spec.jwtRules[0]',
      'only one of jwks or jwksUri',
    ],
    [
      'jwksUri scheme',
      'jwtRules: [{issuer: a, jwksUri: "ftp://a/jwks"}]',
      'spec.jwtRules[0].jwksUri',
      'http:// or https://',
    ],
    ['jwks JSON', 'jwtRules: [{issuer: a, jwks: "not json"}]', 'spec.jwtRules[0].jwks', 'JSON Web Key Set'],
    [
      'empty header name',
      'jwtRules: [{issuer: a, fromHeaders: [{name: ""}]}]',
      'spec.jwtRules[0].fromHeaders[0].name',
      'must not be empty',
    ],
    [
      'claim header',
      'jwtRules: [{issuer: a, outputClaimToHeaders: [{header: "x:y", claim: sub}]}]',
      'spec.jwtRules[0].outputClaimToHeaders[0].header',
      'invalid header name',
    ],
    ['timeout', 'jwtRules: [{issuer: a, timeout: 5}]', 'spec.jwtRules[0].timeout', 'wrong type'],
    ['zero timeout', 'jwtRules: [{issuer: a, timeout: 0s}]', 'spec.jwtRules[0].timeout', 'at least 1ms'],
    [
      'payload header',
      'jwtRules: [{issuer: a, outputPayloadToHeader: "x y"}]',
      'spec.jwtRules[0].outputPayloadToHeader',
      'invalid header name',
    ],
    ['blank audience', 'jwtRules: [{issuer: a, audiences: [" "]}]', 'spec.jwtRules[0].audiences[0]', 'blank'],
  ]
  for (const [name, spec, path, fragment] of cases) test(name, () => rejects(ra(spec), path, fragment))
})
