import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { Resource } from '../../api/resource.js'
import type { TelemetrySpec } from '../../api/telemetry.js'
import type { Json } from './util.js'
import { effectiveTelemetry, telemetryAccessLogs } from './telemetry.js'
import { resolveMeshConfig } from './scope.js'
import { decodeResource, encodeResource } from '../../xds/proto.js'
import { TYPE_URL } from '../../xds/snapshot.js'
import { Listener } from '../../config/envoy.js'
import { v } from '../../config/schema.js'
import { bookinfoRegistry, REVIEWS_V2 } from './testdata/bookinfo.js'
import { BatchTranslator, translateResources } from './translate.js'

let age = 0
function tel(namespace: string, name: string, spec: TelemetrySpec): Resource<TelemetrySpec> {
  age++
  return {
    apiVersion: 'telemetry.istio.io/v1',
    kind: 'Telemetry',
    metadata: { name, namespace, creationTimestamp: `2026-01-01T00:00:${String(age).padStart(2, '0')}Z` },
    spec,
  }
}

const OTEL = [{ name: 'otel', opentelemetry: { service: 'otel.observability.svc.cluster.local', port: 4318 } }]
const mesh = resolveMeshConfig({ extensionProviders: OTEL })
const reviews = { namespace: 'default', labels: { app: 'reviews', version: 'v2' } }

describe('effectiveTelemetry', () => {
  test('root, then namespace, then workload: fields replace field by field, custom tags merge by name', () => {
    const list = [
      tel('istio-system', 'mesh', {
        tracing: [
          {
            providers: [{ name: 'otel' }],
            randomSamplingPercentage: 10,
            customTags: { a: { literal: { value: '1' } } },
          },
        ],
      }),
      tel('default', 'ns', { tracing: [{ customTags: { b: { literal: { value: '2' } } } }] }),
      tel('default', 'reviews', {
        selector: { matchLabels: { app: 'reviews' } },
        tracing: [{ randomSamplingPercentage: 50, customTags: { a: { literal: { value: 'workload' } } } }],
      }),
      tel('default', 'ratings', {
        selector: { matchLabels: { app: 'ratings' } },
        tracing: [{ disableSpanReporting: true }],
      }),
    ]
    const eff = effectiveTelemetry(list, reviews, mesh)
    assert.deepEqual(eff.sources, ['istio-system/mesh', 'default/ns', 'default/reviews'])
    assert.deepEqual(eff.tracing.client, {
      providers: ['otel'],
      randomSamplingPercentage: 50,
      disableSpanReporting: false,
      customTags: { a: { literal: { value: 'workload' } }, b: { literal: { value: '2' } } },
      useRequestIdForTraceSampling: true,
    })
    const ratings = effectiveTelemetry(list, { namespace: 'default', labels: { app: 'ratings' } }, mesh)
    assert.equal(ratings.tracing.server?.disableSpanReporting, true)
    assert.equal(ratings.tracing.server?.randomSamplingPercentage, 10, 'inherited from the root')
    const other = effectiveTelemetry(list, { namespace: 'other', labels: { app: 'reviews' } }, mesh)
    assert.deepEqual(other.sources, ['istio-system/mesh'], 'a selector applies in its own namespace only')
  })

  test('the oldest of several at one level wins; targetRefs and root-namespace selectors do not apply to sidecars', () => {
    const list = [
      tel('default', 'old', { tracing: [{ providers: [{ name: 'otel' }], randomSamplingPercentage: 1 }] }),
      tel('default', 'new', { tracing: [{ providers: [{ name: 'otel' }], randomSamplingPercentage: 99 }] }),
      tel('default', 'gw', {
        targetRefs: [{ kind: 'Gateway', name: 'g' }],
        tracing: [{ randomSamplingPercentage: 5 }],
      }),
    ]
    assert.equal(effectiveTelemetry(list, reviews, mesh).tracing.client?.randomSamplingPercentage, 1)
  })

  test('match.mode splits client and server; defaults come from MeshConfig', () => {
    const list = [
      tel('istio-system', 'mesh', {
        tracing: [{ providers: [{ name: 'otel' }] }, { match: { mode: 'SERVER' }, randomSamplingPercentage: 100 }],
      }),
    ]
    const eff = effectiveTelemetry(
      list,
      reviews,
      resolveMeshConfig({ extensionProviders: OTEL, defaultConfig: { tracing: { sampling: 3 } } }),
    )
    assert.equal(eff.tracing.client?.randomSamplingPercentage, 3)
    assert.equal(eff.tracing.server?.randomSamplingPercentage, 100)
    // no Telemetry: defaultProviders.tracing traces at Istio's default 1%, unless enableTracing is off
    const byDefault = resolveMeshConfig({ extensionProviders: OTEL, defaultProviders: { tracing: ['otel'] } })
    assert.equal(effectiveTelemetry([], reviews, byDefault).tracing.client?.randomSamplingPercentage, 1)
    const off = resolveMeshConfig({
      extensionProviders: OTEL,
      defaultProviders: { tracing: ['otel'] },
      enableTracing: false,
    })
    assert.equal(effectiveTelemetry([], reviews, off).tracing.client, null)
    assert.equal(effectiveTelemetry([], reviews, mesh).tracing.client, null, 'no provider anywhere: no tracing')
  })

  test('access logging and metrics: providers replace, disabled and filter from the most specific, overrides add up', () => {
    const list = [
      tel('istio-system', 'mesh', {
        accessLogging: [{ providers: [{ name: 'envoy' }] }],
        metrics: [
          { providers: [{ name: 'prometheus' }], overrides: [{ match: { metric: 'REQUEST_COUNT' }, disabled: true }] },
        ],
      }),
      tel('default', 'ns', {
        accessLogging: [
          { filter: { expression: 'response.code >= 400' } },
          { match: { mode: 'CLIENT' }, disabled: true },
        ],
        metrics: [{ reportingInterval: '30s', overrides: [{ match: { metric: 'REQUEST_SIZE' }, disabled: true }] }],
      }),
    ]
    const eff = effectiveTelemetry(list, reviews, mesh)
    assert.deepEqual(eff.accessLogging.server, {
      providers: ['envoy'],
      disabled: false,
      filter: 'response.code >= 400',
    })
    assert.deepEqual(eff.accessLogging.client, { providers: ['envoy'], disabled: true, filter: 'response.code >= 400' })
    assert.deepEqual(eff.metrics?.providers, ['prometheus'])
    assert.equal(eff.metrics?.reportingInterval, '30s')
    assert.deepEqual(
      eff.metrics?.overrides.map((o) => o.match?.metric),
      ['REQUEST_COUNT', 'REQUEST_SIZE'],
    )
  })
})

function hcmOf(listener: Json): Json {
  const chains = listener.filter_chains as Json[]
  return (chains[0]!.filters as Json[]).at(-1)!.typed_config as Json
}

describe('tracing translation', () => {
  const services = bookinfoRegistry().services()
  const node = REVIEWS_V2
  const meshConfig = {
    extensionProviders: [
      {
        name: 'otel',
        opentelemetry: {
          service: 'localhost',
          port: 4318,
          http: { path: '/otlp/v1/traces', timeout: '2s', headers: [{ name: 'x-k', value: 'v' }] },
        },
      },
    ],
  }
  const resources = [
    tel('istio-system', 'mesh', {
      tracing: [
        {
          providers: [{ name: 'otel' }],
          randomSamplingPercentage: 25,
          customTags: { team: { header: { name: 'x-team' } } },
        },
      ],
    }),
  ]

  test("every connection manager gets Istio's tracing block; routes get span names; the collector gets a cluster", () => {
    const out = translateResources({ resources, services, meshConfig }, node)
    const outbound = out.listeners.find((l) => l.name === 'outbound_http')!
    assert.equal(outbound.traffic_direction, 'OUTBOUND')
    const t = hcmOf(outbound).tracing as Json
    assert.deepEqual(t.random_sampling, { value: 25 })
    assert.deepEqual(t.custom_tags, [
      { tag: 'istio.canonical_revision', literal: { value: 'v2' } },
      { tag: 'istio.canonical_service', literal: { value: 'reviews' } },
      { tag: 'istio.cluster_id', literal: { value: 'Kubernetes' } },
      { tag: 'istio.mesh_id', literal: { value: 'cluster.local' } },
      { tag: 'istio.namespace', literal: { value: 'default' } },
      { tag: 'team', request_header: { name: 'x-team' } },
    ])
    assert.deepEqual(t.provider, {
      name: 'envoy.tracers.opentelemetry',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig',
        http_service: {
          http_uri: { uri: 'http://localhost:4318/otlp/v1/traces', cluster: 'outbound|4318||localhost', timeout: '2s' },
          request_headers_to_add: [{ header: { key: 'x-k', value: 'v' } }],
        },
        service_name: 'reviews.default',
      },
    })
    const inbound = out.listeners.find((l) => l.name === 'inbound|9080')!
    assert.equal(inbound.traffic_direction, 'INBOUND')
    assert.ok(hcmOf(inbound).tracing)
    const inRoute = ((hcmOf(inbound).route_config as Json).virtual_hosts as Json[])[0]!.routes as Json[]
    assert.deepEqual(inRoute[0]!.decorator, { operation: 'reviews.default.svc.cluster.local:9080/*' })
    const outRoutes = out.routes.find((r) => r.name === 'outbound')!.virtual_hosts as Json[]
    const ratings = outRoutes.find((v) => v.name === 'ratings.default.svc.cluster.local:9080')!
    assert.deepEqual((ratings.routes as Json[])[0]!.decorator, {
      operation: 'ratings.default.svc.cluster.local:9080/*',
    })
    const collector = out.clusters.find((c) => c.name === 'outbound|4318||localhost')!
    assert.equal(collector.type, 'STRICT_DNS')
    // the batch translator gives the same
    const batch = new BatchTranslator({ resources, services, meshConfig }).translate(node)
    const items = batch.resources.get('type.googleapis.com/envoy.config.listener.v3.Listener')!.items
    assert.deepEqual(items.get('outbound_http'), outbound)
  })

  test('disableSpanReporting and no Telemetry leave the config as it was', () => {
    const plain = translateResources({ resources: [], services, meshConfig }, node)
    const disabled = translateResources(
      {
        resources: [...resources, tel('default', 'off', { tracing: [{ disableSpanReporting: true }] })],
        services,
        meshConfig,
      },
      node,
    )
    assert.deepEqual(disabled.listeners, plain.listeners)
    assert.deepEqual(disabled.routes, plain.routes)
    assert.ok(!JSON.stringify(plain).includes('tracing'))
  })

  test('the traced listener survives the wire (xDS protobuf) and is valid proxy config', () => {
    const off = tel('istio-system', 'mesh', {
      tracing: [{ providers: [{ name: 'otel' }], randomSamplingPercentage: 0, useRequestIdForTraceSampling: false }],
    })
    const out = translateResources({ resources: [off], services, meshConfig }, node)
    const outbound = out.listeners.find((l) => l.name === 'outbound_http')!
    const back = decodeResource(encodeResource(outbound, TYPE_URL.listener)) as Json
    const hcm = hcmOf(back)
    assert.deepEqual((hcm.tracing as Json).random_sampling, {}, 'proto3 leaves 0 off: the proxy reads {} as 0')
    assert.deepEqual(hcm.request_id_extension, {
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig',
        use_request_id_for_trace_sampling: false,
      },
    })
    const parsed = v.safeParse(Listener, back)
    assert.ok(parsed.success, JSON.stringify(!parsed.success && parsed.issues.map((x) => x.message)))
  })

  test('access logging: Telemetry file providers replace the mesh-wide log per side; disabled logs nothing', () => {
    const providers = [
      { name: 'envoy', envoyFileAccessLog: { path: '/dev/stdout' } },
      { name: 'file', envoyFileAccessLog: { path: '/var/log/loom.log', logFormat: { text: '%RESPONSE_CODE%' } } },
      { name: 'otel', opentelemetry: { service: 'c', port: 1 } },
    ]
    assert.equal(telemetryAccessLogs(null, providers), null)
    assert.deepEqual(telemetryAccessLogs({ providers: ['envoy'], disabled: true }, providers), [])
    assert.deepEqual(telemetryAccessLogs({ providers: ['envoy', 'file', 'otel'], disabled: false }, providers), [
      { path: '/dev/stdout' },
      { path: '/var/log/loom.log', text: '%RESPONSE_CODE%' },
    ])
    const meshConfig = { extensionProviders: providers, accessLog: { path: '/dev/stderr' } }
    const resources = [
      tel('istio-system', 'logs', { accessLogging: [{ providers: [{ name: 'file' }] }] }),
      tel('default', 'quiet', { accessLogging: [{ match: { mode: 'SERVER' }, disabled: true }] }),
    ]
    const out = translateResources({ resources, services: bookinfoRegistry().services(), meshConfig }, REVIEWS_V2)
    const log = (name: string) => hcmOf(out.listeners.find((l) => l.name === name)!).access_log
    assert.deepEqual(log('outbound_http'), [
      {
        name: 'envoy.access_loggers.file',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
          path: '/var/log/loom.log',
          log_format: { text_format_source: { inline_string: '%RESPONSE_CODE%\n' } },
        },
      },
    ])
    assert.equal(log('inbound|9080'), undefined, 'the server side is disabled')
    const plain = translateResources({ resources: [], services: bookinfoRegistry().services(), meshConfig }, REVIEWS_V2)
    assert.equal(
      ((hcmOf(plain.listeners.find((l) => l.name === 'inbound|9080')!).access_log as Json[])[0]!.typed_config as Json)
        .path,
      '/dev/stderr',
      'without Telemetry the mesh-wide log applies',
    )
  })
})
