/**
 * DestinationRule connectionPool and outlierDetection → Envoy circuit breakers, HTTP protocol options and outlier
 * detection, as Istio writes them (applyConnectionPool, applyOutlierDetection), layered per subset and port like
 * the rest of the traffic policy, and accepted by Loom's proxy.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import { Cluster } from '../../config/envoy.js'
import { UpstreamCluster } from '../../proxy/cluster/cluster.js'
import { decodeResource, encodeResource } from '../../xds/proto.js'
import { TYPE_URL } from '../../xds/snapshot.js'
import { Registry } from '../registry/registry.js'
import { manifests, PRODUCTPAGE, samples } from './testdata/bookinfo.js'
import { translateResources } from './translate.js'
import type { Json } from './util.js'

const HTTPBIN = 'httpbin.default.svc.cluster.local'
const services = Registry.fromResources(
  manifests(
    `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin}
spec:
  hosts: [${HTTPBIN}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8000, name: http, protocol: HTTP}
  - {number: 8001, name: grpc, protocol: GRPC}
  workloadSelector: {labels: {app: httpbin}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: httpbin-v1}
spec:
  address: 10.0.0.80
  labels: {app: httpbin, version: v1}
`,
    'httpbin-registry.yaml',
  ),
).services()

const clustersOf = (yaml: string | ReturnType<typeof samples>, node = PRODUCTPAGE) => {
  const resources = typeof yaml === 'string' ? manifests(yaml) : yaml
  const out = new Map<string, Json>()
  for (const c of translateResources({ resources, services }, node).clusters) out.set(c.name as string, c)
  return out
}
const name = (port: number, subset = '') => `outbound|${port}|${subset}|${HTTPBIN}`
const NO_LIMIT = 4294967295
const thresholds = (t: Json) => ({ thresholds: [{ ...unlimited, ...t }] })
const unlimited = {
  max_connections: NO_LIMIT,
  max_pending_requests: NO_LIMIT,
  max_requests: NO_LIMIT,
  max_retries: NO_LIMIT,
  track_remaining: true,
}
const PROTOCOL_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'

describe('connectionPool and outlierDetection', () => {
  it("every cluster gets Istio's default thresholds (no limit) when no connectionPool says otherwise", () => {
    const c = clustersOf('')
    assert.deepEqual(c.get(name(8000))!.circuit_breakers, thresholds({}))
    assert.equal(c.get(name(8000))!.outlier_detection, undefined)
    assert.equal(c.get(name(8000))!.typed_extension_protocol_options, undefined)
    // the proxy has nothing to enforce for them: no breaker object, no per-request cost
    const proxyCluster = new UpstreamCluster(c.get(name(8000)) as Cluster)
    assert.equal(proxyCluster.circuitBreakers, null)
    assert.equal(proxyCluster.retryBudget.max, NO_LIMIT)
  })

  it('the circuit-breaker fixture (httpbin-circuit-breaker.yaml): limits, per-connection requests, ejection', () => {
    const c = clustersOf(samples('httpbin-circuit-breaker.yaml')).get(name(8000))!
    assert.deepEqual(c.circuit_breakers, thresholds({ max_connections: 1, max_pending_requests: 1 }))
    assert.deepEqual(c.typed_extension_protocol_options, {
      [PROTOCOL_OPTIONS]: {
        '@type': `type.googleapis.com/${PROTOCOL_OPTIONS}`,
        explicit_http_config: { http_protocol_options: {} },
        common_http_protocol_options: { max_requests_per_connection: 1 },
      },
    })
    assert.deepEqual(c.outlier_detection, {
      enforcing_success_rate: 0,
      consecutive_5xx: 1,
      enforcing_consecutive_5xx: 100,
      interval: '1s',
      base_ejection_time: '180s',
      max_ejection_percent: 100,
    })
    // Loom's proxy takes it as is
    assert.deepEqual(v.safeParse(Cluster, c).issues, undefined)
    const proxyCluster = new UpstreamCluster(c as Cluster)
    assert.equal(proxyCluster.circuitBreakers!.maxConnections, 1)
    assert.equal(proxyCluster.circuitBreakers!.maxPendingRequests, 1)
    assert.equal(proxyCluster.maxRequestsPerConnection, 1)
    assert.equal(proxyCluster.outlierDetector!.settings.baseEjectionMs, 180_000)
  })

  it('every field Istio maps: http2MaxRequests, maxRetries, idle timeouts, gateway and local-origin errors', () => {
    const c = clustersOf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 250ms, idleTimeout: 2h}
      http: {http1MaxPendingRequests: 5, http2MaxRequests: 20, maxRetries: 2, maxConcurrentStreams: 50}
    outlierDetection:
      consecutiveGatewayErrors: 3
      consecutive5xxErrors: 0
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 4
`)
    const http = c.get(name(8000))!
    assert.equal(http.connect_timeout, '0.25s')
    assert.deepEqual(
      http.circuit_breakers,
      thresholds({ max_connections: 10, max_pending_requests: 5, max_requests: 20, max_retries: 2 }),
    )
    assert.deepEqual((http.typed_extension_protocol_options as Json)[PROTOCOL_OPTIONS], {
      '@type': `type.googleapis.com/${PROTOCOL_OPTIONS}`,
      explicit_http_config: { http_protocol_options: {} },
      common_http_protocol_options: { idle_timeout: '7200s' },
    })
    // an HTTP/2 (gRPC) port: the stream limit goes to http2_protocol_options
    const grpc = c.get(name(8001))!
    assert.deepEqual((grpc.typed_extension_protocol_options as Json)[PROTOCOL_OPTIONS], {
      '@type': `type.googleapis.com/${PROTOCOL_OPTIONS}`,
      explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 50 } },
      common_http_protocol_options: { idle_timeout: '7200s' },
    })
    assert.deepEqual(http.outlier_detection, {
      enforcing_success_rate: 0,
      consecutive_5xx: 0,
      enforcing_consecutive_5xx: 0,
      consecutive_gateway_failure: 3,
      enforcing_consecutive_gateway_failure: 100,
      split_external_local_origin_errors: true,
      consecutive_local_origin_failure: 4,
      enforcing_consecutive_local_origin_failure: 100,
      enforcing_local_origin_success_rate: 0,
    })
    for (const cluster of [http, grpc]) {
      assert.deepEqual(v.safeParse(Cluster, cluster).issues, undefined)
      // over xDS: Envoy's protos carry every field, the zero counts (UInt32Value wrappers) included
      const back = decodeResource(encodeResource(cluster, TYPE_URL.cluster), { withType: false }) as Json
      assert.deepEqual(back.circuit_breakers, cluster.circuit_breakers)
      assert.deepEqual(back.outlier_detection, cluster.outlier_detection)
      assert.deepEqual(back.typed_extension_protocol_options, cluster.typed_extension_protocol_options)
    }
  })

  it('layered like the rest of the policy: a port-level entry replaces, a subset overrides field by field', () => {
    const c = clustersOf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 10}}
    outlierDetection: {consecutive5xxErrors: 7}
    portLevelSettings:
    - port: {number: 8001}
      connectionPool: {http: {http2MaxRequests: 3}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {http1MaxPendingRequests: 2}}
`)
    assert.deepEqual(c.get(name(8000))!.circuit_breakers, thresholds({ max_connections: 10 }))
    assert.equal((c.get(name(8000))!.outlier_detection as Json).consecutive_5xx, 7)
    // port 8001: the port-level connectionPool replaces the top one; outlierDetection falls back to none
    assert.deepEqual(c.get(name(8001))!.circuit_breakers, thresholds({ max_requests: 3 }))
    assert.equal(c.get(name(8001))!.outlier_detection, undefined)
    // subset v1: its connectionPool replaces the top one, the top outlierDetection stays
    assert.deepEqual(c.get(name(8000, 'v1'))!.circuit_breakers, thresholds({ max_pending_requests: 2 }))
    assert.equal((c.get(name(8000, 'v1'))!.outlier_detection as Json).consecutive_5xx, 7)
  })

  it("retryBudget → the threshold's retry_budget (defaults 20% and 3), kept by port entries, enforced by the proxy", () => {
    const c = clustersOf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  trafficPolicy:
    retryBudget: {percent: 25, minRetryConcurrency: 2}
    portLevelSettings:
    - port: {number: 8001}
      connectionPool: {tcp: {maxConnections: 5}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      retryBudget: {minRetryConcurrency: 0}
`)
    const budget = (percent: number, min: number) => ({
      budget_percent: { value: percent },
      min_retry_concurrency: min,
    })
    assert.deepEqual(c.get(name(8000))!.circuit_breakers, thresholds({ retry_budget: budget(25, 2) }))
    assert.deepEqual(
      c.get(name(8001))!.circuit_breakers,
      thresholds({ max_connections: 5, retry_budget: budget(25, 2) }),
    )
    assert.deepEqual(c.get(name(8000, 'v1'))!.circuit_breakers, thresholds({ retry_budget: budget(20, 3) }))
    const back = decodeResource(encodeResource(c.get(name(8000))!, TYPE_URL.cluster), { withType: false }) as Json
    assert.deepEqual(back.circuit_breakers, c.get(name(8000))!.circuit_breakers)
    // unlimited thresholds otherwise, but the budget needs the request count: the proxy keeps a breaker object
    const proxyCluster = new UpstreamCluster(v.parse(Cluster, back))
    assert.notEqual(proxyCluster.circuitBreakers, null)
    assert.equal(proxyCluster.retryBudget.max, 2)
    assert.equal(proxyCluster.retryBudget.share, 0.25)
  })

  it('proxyless gRPC gets the thresholds and outlier detection, not the HTTP protocol options', () => {
    const grpcNode = { ...PRODUCTPAGE, generator: 'grpc' as const }
    const c = clustersOf(samples('httpbin-circuit-breaker.yaml'), grpcNode).get(name(8000))!
    assert.deepEqual(c.circuit_breakers, thresholds({ max_connections: 1, max_pending_requests: 1 }))
    assert.equal(c.typed_extension_protocol_options, undefined)
    assert.equal((c.outlier_detection as Json).consecutive_5xx, 1)
  })
})

describe('h2UpgradePolicy', () => {
  const protocol = (c: Json | undefined) => {
    const o = (c?.typed_extension_protocol_options as Json | undefined)?.[PROTOCOL_OPTIONS] as Json | undefined
    const e = o?.explicit_http_config as Json | undefined
    return e === undefined ? 'none' : 'http2_protocol_options' in e ? 'h2' : 'h1'
  }
  const rule = (http: string, portLevel = '') => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      http: ${http}
${portLevel}`
  const translate = (yaml: string, mesh?: { h2UpgradePolicy: 'UPGRADE' | 'DO_NOT_UPGRADE' }) => {
    const out = new Map<string, Json>()
    const input = { resources: manifests(yaml), services, ...(mesh ? { meshConfig: mesh } : {}) }
    for (const c of translateResources(input, PRODUCTPAGE).clusters) out.set(c.name as string, c)
    return out
  }

  it('UPGRADE: an HTTP port goes upstream as HTTP/2; a gRPC port is HTTP/2 anyway', () => {
    const c = clustersOf(rule('{h2UpgradePolicy: UPGRADE}'))
    assert.equal(protocol(c.get(name(8000))), 'h2')
    assert.equal(protocol(c.get(name(8001))), 'h2')
  })
  it('DEFAULT follows the mesh config; DO_NOT_UPGRADE wins over it; useClientProtocol keeps HTTP/1.1', () => {
    assert.notEqual(protocol(clustersOf(rule('{h2UpgradePolicy: DEFAULT}')).get(name(8000))), 'h2')
    const mesh = { h2UpgradePolicy: 'UPGRADE' } as const
    assert.equal(protocol(translate(rule('{h2UpgradePolicy: DEFAULT}'), mesh).get(name(8000))), 'h2')
    assert.equal(protocol(translate(rule('{maxRetries: 2}'), mesh).get(name(8000))), 'h2')
    assert.notEqual(protocol(translate(rule('{h2UpgradePolicy: DO_NOT_UPGRADE}'), mesh).get(name(8000))), 'h2')
    assert.notEqual(
      protocol(translate(rule('{h2UpgradePolicy: UPGRADE, useClientProtocol: true}')).get(name(8000))),
      'h2',
    )
  })
  it('a port-level setting decides for its port only', () => {
    const c = clustersOf(
      rule(
        '{maxRetries: 2}',
        `    portLevelSettings:
    - port: {number: 8000}
      connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
`,
      ),
    )
    assert.equal(protocol(c.get(name(8000))), 'h2')
  })
  it('the proxy accepts the upgraded cluster', () => {
    const c = clustersOf(rule('{h2UpgradePolicy: UPGRADE}')).get(name(8000))!
    assert.deepEqual(v.safeParse(Cluster, c).issues, undefined)
    const back = decodeResource(encodeResource(c, TYPE_URL.cluster), { withType: false }) as Json
    assert.deepEqual(back.typed_extension_protocol_options, c.typed_extension_protocol_options)
  })
})
