import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseManifests } from '../../api/index.js'
import { analyze } from './analyze.js'
import { NOT_ENFORCED, notEnforced } from './not-enforced.js'

const one = (yaml: string) => {
  const r = parseManifests(yaml, 'x.yaml')
  assert.deepEqual(r.errors, [])
  return r.resources[0]!
}
const paths = (yaml: string) => notEnforced(one(yaml)).map((d) => d.path)

describe('accepted but not enforced', () => {
  it('an AuthorizationPolicy is enforced, its CUSTOM action too; targetRefs are not', () => {
    const ap = (spec: string) =>
      one(`apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: ${spec}\n`)
    assert.deepEqual(analyze([ap('{}')], []), [])
    const custom = ap('{action: CUSTOM, provider: {name: ext}, rules: [{}]}')
    assert.deepEqual(analyze([custom], []), [], 'without a mesh config the provider is not checked')
    const ds = analyze([custom], [], {})
    assert.equal(ds.length, 1)
    assert.equal(ds[0]!.level, 'error')
    assert.equal(ds[0]!.path, 'spec.provider.name')
    assert.match(
      ds[0]!.message,
      /extension provider "ext" is not defined .*: the requests this policy's rules match are denied/,
    )
    assert.deepEqual(
      notEnforced(ap('{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: w}]}')).map((d) => d.path),
      ['spec.targetRefs'],
    )
    // targetRef (singular) too, and the warning says the policy is not applied and why
    const ref = analyze([ap('{targetRef: {kind: Service, group: "", name: productpage}, rules: [{}]}')], [])
    assert.deepEqual(
      ref.map((d) => [d.level, d.path]),
      [['warning', 'spec.targetRef']],
    )
    assert.match(ref[0]!.message, /this policy is not applied: .*waypoint proxies and Gateway API gateways.*selector/)
  })

  it('PeerAuthentication and AuthorizationPolicy are enforced, even without a spec', () => {
    for (const kind of ['PeerAuthentication', 'AuthorizationPolicy']) {
      assert.deepEqual(paths(`apiVersion: security.istio.io/v1\nkind: ${kind}\nmetadata: {name: a}\n`), [], kind)
    }
    const pa = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a}
spec:
  selector: {matchLabels: {app: a}}
  mtls: {mode: STRICT}
  portLevelMtls: {'8080': {mode: DISABLE}}
`
    assert.deepEqual(paths(pa), [])
  })

  it('DestinationRule tls: enforced, except what the proxy cannot honour', () => {
    const dr = (tls: string) =>
      `apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a, trafficPolicy: {tls: ${tls}}}\n`
    for (const tls of [
      '{mode: ISTIO_MUTUAL}',
      '{mode: DISABLE}',
      '{mode: SIMPLE, sni: a.example, subjectAltNames: [a.example]}',
      '{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}',
    ]) {
      assert.deepEqual(paths(dr(tls)), [], tls)
    }
    for (const tls of ['{mode: SIMPLE, credentialName: c}', '{mode: SIMPLE, insecureSkipVerify: true}']) {
      assert.deepEqual(paths(dr(tls)), ['spec.trafficPolicy.tls'], tls)
    }
  })

  it('RequestAuthentication: enforced, except targetRef, OpenID discovery and spaceDelimitedClaims', () => {
    const head = 'apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: a}\n'
    assert.deepEqual(paths(head), [])
    const enforced = `${head}spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: a
    jwksUri: https://a.example/jwks
    audiences: [x]
    fromHeaders: [{name: x-token, prefix: "Bearer "}]
    fromParams: [t]
    forwardOriginalToken: true
    outputPayloadToHeader: x-payload
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
`
    assert.deepEqual(paths(enforced), [])
    const partly = `${head}spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]
  jwtRules:
  - issuer: b
    spaceDelimitedClaims: [scope]
`
    assert.deepEqual(paths(partly), ['spec.targetRefs', 'spec.jwtRules[0]', 'spec.jwtRules[0].spaceDelimitedClaims'])
  })

  it('VirtualService http fields, with their paths', () => {
    const yaml = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    mirrors: [{destination: {host: details}}]
  - retries: {attempts: 3, retryOn: '5xx,retriable-headers', retryRemoteLocalities: true}
    fault: {delay: {fixedDelay: 1s, percentage: {value: 10}}}
    mirror: {host: ratings}
    mirrorPercentage: {value: 5}
    corsPolicy: {allowOrigins: [{exact: 'https://x.example'}]}
    match: [{uri: {prefix: /a}}, {scheme: {exact: https}}]
    route: [{destination: {host: reviews}}]
`
    assert.deepEqual(paths(yaml), [
      'spec.http[1].retries.retryRemoteLocalities',
      'spec.http[1].retries.retryOn',
      'spec.http[1].match[1].scheme',
    ])
  })

  it('DestinationRule policies at every level: top, port-level, subset, subset port-level', () => {
    const yaml = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 1s, tcpKeepalive: {time: 10s}}, http: {http1MaxPendingRequests: 1, useClientProtocol: true}}
    outlierDetection: {consecutive5xxErrors: 1, consecutiveErrors: 2}
    loadBalancer: {simple: RANDOM, localityLbSetting: {enabled: true}, warmupDurationSecs: 10s}
    tls: {mode: DISABLE}
    portLevelSettings:
    - port: {number: 9080}
      tls: {mode: SIMPLE, credentialName: reviews-ca}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 5, maxConnectionDuration: 1h}}
      portLevelSettings:
      - port: {number: 9080}
        outlierDetection: {consecutive5xxErrors: 2, minHealthPercent: 30}
`
    assert.deepEqual(paths(yaml), [
      'spec.trafficPolicy.connectionPool.tcp.tcpKeepalive',
      'spec.subsets[0].trafficPolicy.connectionPool.tcp.maxConnectionDuration',
      'spec.trafficPolicy.connectionPool.http.useClientProtocol',
      'spec.subsets[0].trafficPolicy.portLevelSettings[0].outlierDetection.minHealthPercent',
      'spec.trafficPolicy.outlierDetection.consecutiveErrors',
      'spec.trafficPolicy.portLevelSettings[0].tls',
      'spec.trafficPolicy.loadBalancer',
    ])
  })

  it('what Loom enforces is not reported', () => {
    const yaml = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {connectTimeout: 1s, maxConnections: 1, idleTimeout: 1h}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 2, maxRequestsPerConnection: 1, maxRetries: 3, idleTimeout: 1m}
    outlierDetection:
      consecutive5xxErrors: 1
      consecutiveGatewayErrors: 2
      consecutiveLocalOriginFailures: 3
      splitExternalLocalOriginErrors: true
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
      minHealthPercent: 0
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
      localityLbSetting: {failover: [{from: r1, to: r2}], failoverPriority: [env]}
    tls: {mode: DISABLE}
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}
    - port: {number: 81}
      loadBalancer: {warmup: {duration: 1m, minimumPercent: 5, aggression: 2}}
`
    assert.deepEqual(paths(yaml), [])
  })

  it('Sidecar: TCP egress ports get their listener; HTTP ones, unix sockets and IPTABLES capture are reported', () => {
    const sc = (egress: string) =>
      `apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a}\nspec: {egress: [${egress}, {hosts: ['*/*']}]}\n`
    assert.deepEqual(paths(sc("{port: {number: 5432, protocol: TCP}, bind: 127.0.0.1, hosts: ['./*']}")), [])
    assert.deepEqual(paths(sc("{port: {number: 5432}, captureMode: NONE, hosts: ['./*']}")), [])
    assert.deepEqual(
      paths(
        sc(
          "{port: {number: 8080, protocol: HTTP}, hosts: ['./*']}, {port: {number: 0}, bind: 'unix:///run/a.sock', hosts: ['./*']}, {port: {number: 5432}, captureMode: IPTABLES, hosts: ['./*']}",
        ),
      ),
      ['spec.egress[0].port', 'spec.egress[1].bind', 'spec.egress[2].captureMode'],
    )
  })

  it('every row names a kind Loom accepts and a path under spec', () => {
    const kinds = new Set([
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
    ])
    for (const row of NOT_ENFORCED) {
      assert.ok(kinds.has(row.kind), row.kind)
      assert.match(row.path, /^(spec|<trafficPolicy>)(\.|$)/, row.path)
    }
  })

  it('Telemetry: tracing and access logging are enforced; access log filters, metrics and targetRefs are not', () => {
    const t = (spec: string) =>
      `apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: a}\nspec: ${spec}\n`
    assert.deepEqual(paths(t('{tracing: [{providers: [{name: otel}], randomSamplingPercentage: 5}]}')), [])
    assert.deepEqual(
      paths(
        t(
          '{targetRefs: [{kind: Gateway, name: g}], accessLogging: [{disabled: true, filter: {expression: x}}], metrics: [{reportingInterval: 5s}], tracing: [{enableIstioTags: false}]}',
        ),
      ),
      ['spec.targetRefs', 'spec.accessLogging[0].filter', 'spec.metrics', 'spec.tracing[0].enableIstioTags'],
    )
  })
})
