/**
 * Tracing in `loom proxy` (HttpConnectionManager `tracing`, envoy.tracers.opentelemetry over OTLP/HTTP): a real proxy
 * process, a real backend that records the headers it gets, and an OTLP receiver decoding what the proxy exports.
 * New traces, W3C and B3 contexts continued, an incoming decision honoured, 0% sampling, Envoy's span tags and
 * custom tags, the span kind per listener direction, and a collector that is down costing requests nothing.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { eventually } from './helpers/control.js'
import { type OtlpReceiver, startOtlpReceiver } from './helpers/otlp.js'
import { adminAddress, HCM, ROUTER, type RunningProxy, stat, startProxy, staticCluster } from './helpers/proxy.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const OTEL = 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig'

function tracing(cluster: string, port: number, percent: number, extra: Record<string, unknown> = {}): unknown {
  return {
    random_sampling: { value: percent },
    custom_tags: [
      { tag: 'istio.canonical_service', literal: { value: 'front' } },
      { tag: 'from_env', environment: { name: 'LOOM_TRACING_TEST_TAG', default_value: 'none' } },
      { tag: 'tenant', request_header: { name: 'x-tenant', default_value: 'anon' } },
    ],
    provider: {
      name: 'envoy.tracers.opentelemetry',
      typed_config: {
        '@type': OTEL,
        http_service: { http_uri: { uri: `http://127.0.0.1:${port}/v1/traces`, cluster, timeout: '1s' } },
        service_name: 'front.default',
      },
    },
    ...extra,
  }
}

function tracedListener(name: string, direction: string, t: unknown, decorated: boolean): unknown {
  return {
    name,
    address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
    traffic_direction: direction,
    filter_chains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type': HCM,
              stat_prefix: name,
              route_config: {
                virtual_hosts: [
                  {
                    name: 'all',
                    domains: ['*'],
                    routes: [
                      {
                        match: { prefix: '/' },
                        route: { cluster: 'backend' },
                        ...(decorated ? { decorator: { operation: 'backend.default.svc.cluster.local:80/*' } } : {}),
                      },
                    ],
                  },
                ],
              },
              http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
              tracing: t,
            },
          },
        ],
      },
    ],
  }
}

describe('tracing in the proxy', { timeout: 60_000 }, () => {
  let receiver: OtlpReceiver
  let backend: Backend
  let proxy: RunningProxy
  let deadPort: number

  before(async () => {
    receiver = await startOtlpReceiver()
    backend = await startBackend()
    deadPort = await freePort()
    process.env.LOOM_TRACING_TEST_TAG = 'from-the-environment'
    proxy = await startProxy({
      node: { id: 'sidecar~127.0.0.1~front-1.default~default.svc.cluster.local' },
      admin: { address: adminAddress() },
      static_resources: {
        listeners: [
          tracedListener('inbound', 'INBOUND', tracing('collector', receiver.port, 100), true),
          tracedListener('outbound', 'OUTBOUND', tracing('collector', receiver.port, 100), false),
          tracedListener('never', 'INBOUND', tracing('collector', receiver.port, 0), true),
          tracedListener('dead', 'INBOUND', tracing('dead_collector', deadPort, 100), true),
        ],
        clusters: [
          staticCluster('backend', [backend.port]),
          staticCluster('collector', [receiver.port]),
          staticCluster('dead_collector', [deadPort]),
        ],
      },
    })
  })

  after(async () => {
    await proxy?.stop()
    await backend?.close()
    await receiver?.stop()
  })

  const get = async (listener: string, path: string, headers: Record<string, string> = {}) => {
    const before = backend.requests.length
    const r = await fetch(`http://127.0.0.1:${proxy.ports[listener]}${path}`, { headers })
    await r.arrayBuffer()
    return { status: r.status, upstream: backend.requests[before]!.headers }
  }
  const spanFor = async (requestId: string) => {
    await eventually(async () => receiver.spans.some((s) => s.attributes['guid:x-request-id'] === requestId), 10_000)
    return receiver.spans.find((s) => s.attributes['guid:x-request-id'] === requestId)!
  }

  test('a request without context starts a trace: one SERVER span, its context sent upstream as W3C', async () => {
    const r = await get('inbound', '/a/b?c=1', { 'x-tenant': 'acme', 'x-request-id': 'rid-new-trace' })
    assert.equal(r.status, 200)
    const tp = String(r.upstream.traceparent)
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(tp)
    assert.ok(m, `traceparent upstream: ${tp}`)
    assert.equal(r.upstream.b3, undefined, 'no B3 header when none came in')
    const span = await spanFor('rid-new-trace')
    assert.equal(span.traceId, m[1])
    assert.equal(span.spanId, m[2])
    assert.equal(span.parentSpanId, '')
    assert.equal(span.name, 'backend.default.svc.cluster.local:80/*')
    assert.equal(span.kind, 2, 'SERVER on an INBOUND listener')
    assert.equal(span.service, 'front.default')
    assert.ok(span.endNs > span.startNs)
    const a = span.attributes
    assert.equal(a.component, 'proxy')
    assert.equal(a.node_id, 'sidecar~127.0.0.1~front-1.default~default.svc.cluster.local')
    assert.equal(a['http.method'], 'GET')
    assert.match(a['http.url']!, /^http:\/\/127\.0\.0\.1:\d+\/a\/b\?c=1$/)
    assert.equal(a['http.status_code'], '200')
    assert.equal(a['http.protocol'], 'HTTP/1.1')
    assert.equal(a.upstream_cluster, 'backend')
    assert.equal(a.response_flags, '-')
    assert.equal(a['peer.address'], '127.0.0.1')
    assert.ok(Number(a.response_size) > 0)
    assert.equal(a['istio.canonical_service'], 'front')
    assert.equal(a.from_env, 'from-the-environment')
    assert.equal(a.tenant, 'acme')
    const req = receiver.requests.find((x) => x.spans > 0)!
    assert.equal(req.path, '/v1/traces')
    assert.equal(req.contentType, 'application/x-protobuf')
  })

  test('an incoming W3C context is continued: same trace, parent = the caller, tracestate kept', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
    const parent = '00f067aa0ba902b7'
    const r = await get('inbound', '/w3c', {
      traceparent: `00-${traceId}-${parent}-01`,
      tracestate: 'vendor=x',
      'x-request-id': 'rid-w3c',
    })
    const span = await spanFor('rid-w3c')
    assert.equal(span.traceId, traceId)
    assert.equal(span.parentSpanId, parent)
    assert.equal(span.traceState, 'vendor=x')
    assert.equal(r.upstream.traceparent, `00-${traceId}-${span.spanId}-01`)
    assert.equal(r.upstream.tracestate, 'vendor=x')
    assert.equal(span.attributes.tenant, 'anon', 'a header tag takes its default when the header is absent')
  })

  test('a B3 single header is continued, and the upstream gets both b3 and traceparent', async () => {
    const traceId = '80f198ee56343ba864fe8b2a57d3eff7'
    const parent = 'e457b5a2e4d86bd1'
    const r = await get('inbound', '/b3', { b3: `${traceId}-${parent}-1`, 'x-request-id': 'rid-b3' })
    const span = await spanFor('rid-b3')
    assert.equal(span.traceId, traceId)
    assert.equal(span.parentSpanId, parent)
    assert.equal(r.upstream.b3, `${traceId}-${span.spanId}-1-${parent}`)
    assert.equal(r.upstream.traceparent, `00-${traceId}-${span.spanId}-01`)
  })

  test('B3 multi-header (64-bit trace id) is continued in x-b3-* and W3C', async () => {
    const r = await get('inbound', '/b3multi', {
      'x-b3-traceid': 'a3ce929d0e0e4736',
      'x-b3-spanid': '00f067aa0ba902b7',
      'x-b3-sampled': '1',
      'x-request-id': 'rid-b3multi',
    })
    const span = await spanFor('rid-b3multi')
    assert.equal(span.traceId, '0000000000000000a3ce929d0e0e4736')
    assert.equal(span.parentSpanId, '00f067aa0ba902b7')
    assert.equal(r.upstream['x-b3-traceid'], '0000000000000000a3ce929d0e0e4736')
    assert.equal(r.upstream['x-b3-spanid'], span.spanId)
    assert.equal(r.upstream['x-b3-parentspanid'], '00f067aa0ba902b7')
    assert.equal(r.upstream['x-b3-sampled'], '1')
  })

  test("an incoming 'not sampled' decision is honoured: no span, the context still goes on (flag 00)", async () => {
    const traceId = '11111111111111111111111111111111'
    const r = await get('inbound', '/unsampled', {
      traceparent: `00-${traceId}-2222222222222222-00`,
      'x-request-id': 'rid-unsampled',
    })
    assert.match(String(r.upstream.traceparent), new RegExp(`^00-${traceId}-[0-9a-f]{16}-00$`))
    // a later sampled request's span arriving shows the exporter has flushed past this one
    await get('inbound', '/after', { 'x-request-id': 'rid-after-unsampled' })
    await spanFor('rid-after-unsampled')
    assert.ok(!receiver.spans.some((s) => s.attributes['guid:x-request-id'] === 'rid-unsampled'))
  })

  test('0% random sampling sends no span, yet propagates a context', async () => {
    const ids: string[] = []
    for (let i = 0; i < 20; i++) {
      const r = await get('never', `/never/${i}`, { 'x-request-id': `rid-never-${i}` })
      assert.match(String(r.upstream.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/)
      ids.push(`rid-never-${i}`)
    }
    await get('inbound', '/after-never', { 'x-request-id': 'rid-after-never' })
    await spanFor('rid-after-never')
    assert.ok(!receiver.spans.some((s) => ids.includes(s.attributes['guid:x-request-id']!)))
  })

  test('x-envoy-force-trace samples a request that random sampling would not', async () => {
    await get('never', '/forced', { 'x-envoy-force-trace': 'true', 'x-request-id': 'rid-forced' })
    const span = await spanFor('rid-forced')
    assert.equal(span.name, 'backend.default.svc.cluster.local:80/*')
  })

  test("an OUTBOUND listener's span is CLIENT, named 'egress <host>' without a decorator", async () => {
    const r = await get('outbound', '/out', { 'x-request-id': 'rid-outbound' })
    assert.equal(r.status, 200)
    const span = await spanFor('rid-outbound')
    assert.equal(span.kind, 3)
    assert.match(span.name, /^egress 127\.0\.0\.1:\d+$/)
  })

  test('a collector that is down costs requests nothing: they succeed, the spans are dropped and counted', async () => {
    const t0 = performance.now()
    for (let i = 0; i < 50; i++) assert.equal((await get('dead', `/dead/${i}`)).status, 200)
    const ms = performance.now() - t0
    assert.ok(ms < 10_000, `50 requests took ${ms} ms`)
    await eventually(async () => (await stat(proxy.admin, 'tracing.opentelemetry.spans_dropped')) >= 50, 15_000)
    assert.ok((await stat(proxy.admin, 'tracing.opentelemetry.http_reports_failed')) >= 1)
  })
})
