/**
 * Distributed tracing on the Bookinfo demo (`loom up` of examples/bookinfo/mesh, as `loom demo` runs it), with
 * Istio's Telemetry API: an OpenTelemetry provider in the mesh config points at an OTLP/HTTP receiver in this test,
 * `loom apply` of a Telemetry resource turns tracing on, and product page loads through the ingress gateway
 * produce one trace each, whose spans link as Bookinfo's calls do:
 *
 *   gateway ─► productpage (inbound) ─┬► details (outbound) ─► details (inbound)
 *                                     └► reviews (outbound) ─► reviews (inbound) [─► ratings (outbound) ─► ratings (inbound)]
 *
 * A client's W3C or B3 context is continued; Telemetry in the namespace and for one workload (selector) adds to the
 * mesh-wide one; 0% sampling sends no span.
 *
 * Each change of config is known to have reached every proxy when a "marker" load (a client-sampled trace with a
 * known id) comes back whole with the new config's tag on every span.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { readState, type UpState } from '../src/runtime/up.js'
import { eventually } from './helpers/control.js'
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from './helpers/otlp.js'
import { ROOT, runLoom, writeTemp } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'

const BOOKINFO = join(ROOT, 'examples', 'bookinfo', 'mesh')
const SERVER = 2
const CLIENT = 3

function telemetry(name: string, namespace: string, body: string): string {
  return `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: ${name}
  namespace: ${namespace}
spec:
${body}`
}

const meshDefault = (percent: number, phase: string) =>
  telemetry(
    'mesh-default',
    'istio-system',
    `  tracing:
  - providers:
    - name: otel
    randomSamplingPercentage: ${percent}
    customTags:
      phase:
        literal:
          value: ${phase}
`,
  )

const hex = (bytes: number) => randomBytes(bytes).toString('hex')

/** A trace's spans, checked against Bookinfo's call graph; returns the reviews version it went through. */
function checkTrace(spans: ReceivedSpan[]): string {
  const byId = new Map(spans.map((s) => [s.spanId, s]))
  const children = (s: ReceivedSpan) => spans.filter((c) => c.parentSpanId === s.spanId)
  const only = (list: ReceivedSpan[], what: string) => {
    assert.equal(list.length, 1, `${what}: ${list.map((s) => s.name).join(', ')}`)
    return list[0]!
  }
  const roots = spans.filter((s) => !byId.has(s.parentSpanId))
  const gw = only(roots, 'one root')
  assert.equal(gw.kind, CLIENT, 'the gateway span is CLIENT (an OUTBOUND listener)')
  assert.equal(gw.service, 'ingressgateway.istio-system')
  assert.equal(gw.name, 'productpage.default.svc.cluster.local:9080/productpage')
  assert.equal(gw.attributes['istio.namespace'], 'istio-system')
  assert.match(gw.attributes.node_id!, /^router~/)
  assert.equal(gw.attributes['http.method'], 'GET')
  assert.equal(gw.attributes['http.status_code'], '200')
  assert.equal(gw.attributes.upstream_cluster, 'outbound|9080||productpage.default.svc.cluster.local')
  const pp = only(children(gw), 'the gateway calls productpage')
  assert.equal(pp.kind, SERVER)
  assert.equal(pp.name, 'productpage.default.svc.cluster.local:9080/*')
  assert.equal(pp.service, 'productpage.default')
  assert.equal(pp.attributes['istio.canonical_service'], 'productpage')
  assert.equal(pp.attributes['istio.canonical_revision'], 'v1')
  assert.equal(pp.attributes['istio.mesh_id'], 'cluster.local')
  assert.equal(pp.attributes.upstream_cluster, 'inbound|9080||')
  assert.equal(pp.attributes['guid:x-request-id'], gw.attributes['guid:x-request-id'])
  const calls = children(pp).sort((a, b) => a.name.localeCompare(b.name))
  assert.deepEqual(
    calls.map((c) => [c.name, c.kind, c.service]),
    [
      ['details.default.svc.cluster.local:9080/*', CLIENT, 'productpage.default'],
      ['reviews.default.svc.cluster.local:9080/*', CLIENT, 'productpage.default'],
    ],
  )
  const details = only(children(calls[0]!), 'details inbound')
  assert.deepEqual(
    [details.name, details.kind, details.service],
    ['details.default.svc.cluster.local:9080/*', SERVER, 'details.default'],
  )
  assert.equal(children(details).length, 0)
  const reviews = only(children(calls[1]!), 'reviews inbound')
  assert.deepEqual([reviews.kind, reviews.service], [SERVER, 'reviews.default'])
  const version = reviews.attributes['istio.canonical_revision']!
  const out = children(reviews)
  if (version === 'v1') assert.equal(out.length, 0, 'reviews v1 does not call ratings')
  else {
    const call = only(out, `reviews ${version} calls ratings`)
    assert.deepEqual(
      [call.name, call.kind, call.service],
      ['ratings.default.svc.cluster.local:9080/*', CLIENT, 'reviews.default'],
    )
    const ratings = only(children(call), 'ratings inbound')
    assert.deepEqual([ratings.kind, ratings.service], [SERVER, 'ratings.default'])
  }
  assert.equal(spans.length, version === 'v1' ? 6 : 8)
  assert.ok(spans.every((s) => s.traceId === gw.traceId))
  return version
}

/** Whether a trace's spans are all there (6 through reviews v1, 8 through v2/v3, which call ratings). */
function complete(spans: ReceivedSpan[]): boolean {
  const reviews = spans.find((s) => s.kind === SERVER && s.service === 'reviews.default')
  if (reviews === undefined) return false
  return spans.length === (reviews.attributes['istio.canonical_revision'] === 'v1' ? 6 : 8)
}

describe('distributed tracing on the Bookinfo demo', { timeout: 300_000 }, () => {
  let receiver: OtlpReceiver
  let up: RunningUp
  let state: UpState
  let page: string
  const loom = (args: string[]) => runLoom([...args, '--server', state.api])
  const apply = async (name: string, yaml: string) => {
    const r = await loom(['apply', '-f', writeTemp(`${name}.yaml`, yaml)])
    assert.equal(r.code, 0, r.stderr)
  }
  const load = async (headers: Record<string, string> = {}) => {
    const r = await fetch(page, { headers })
    const body = await r.text()
    assert.equal(r.status, 200, body.slice(0, 200))
  }
  const trace = (traceId: string) => receiver.spans.filter((s) => s.traceId === traceId)
  const markers = new Set<string>()
  /**
   * Loads the page with a client-sampled context until its trace comes back whole and `ok` holds for it (the config
   * just applied has reached every proxy on the path); returns its spans.
   */
  const marker = async (ok: (spans: ReceivedSpan[]) => boolean, what: string) => {
    let last: ReceivedSpan[] = []
    for (let attempt = 0; attempt < 30; attempt++) {
      const traceId = hex(16)
      markers.add(traceId)
      await load({ traceparent: `00-${traceId}-${hex(8)}-01` })
      try {
        await eventually(async () => complete(trace(traceId)), 5_000)
      } catch {
        continue
      }
      last = trace(traceId)
      if (ok(last)) return last
    }
    throw new Error(
      `${what}: no marker trace showed it; last: ${JSON.stringify(last.map((s) => [s.service, s.attributes]))}`,
    )
  }
  const tagged = (key: string, value: string) => (spans: ReceivedSpan[]) =>
    spans.every((s) => s.attributes[key] === value)
  const unmarked = () => new Set(receiver.spans.map((s) => s.traceId).filter((t) => !markers.has(t)))

  before(async () => {
    receiver = await startOtlpReceiver()
    const mesh = writeTemp(
      'mesh-config.yaml',
      `extensionProviders:
- name: otel
  opentelemetry:
    service: 127.0.0.1
    port: ${receiver.port}
    http:
      path: /v1/traces
      timeout: 5s
`,
    )
    up = await startUp(BOOKINFO, 150_000, ['--mesh-config', mesh, '--gateway-port', '0'])
    state = readState(up.dataDir)!
    page = `http://127.0.0.1:${Object.values(state.gateways[0]!.ports)[0]}/productpage`
    await eventually(
      async () => {
        const r = await fetch(page)
        const body = await r.text()
        return r.status === 200 && body.includes('Book Details') && body.includes('Book Reviews')
      },
      60_000,
      'the product page',
    )
  })
  after(async () => {
    await up?.stop()
    await receiver?.stop()
  })

  test('no Telemetry, no default provider: the page loads send no span', async () => {
    for (let i = 0; i < 3; i++) await load()
    assert.equal(receiver.spans.length, 0)
  })

  test('with a mesh-wide Telemetry at 100%, each page load is one trace along the call graph', async () => {
    await apply('mesh-default', meshDefault(100, 'one'))
    await marker(tagged('phase', 'one'), 'the mesh-wide Telemetry')
    const before = unmarked()
    const N = 6
    for (let i = 0; i < N; i++) await load()
    let fresh: string[] = []
    await eventually(
      async () => {
        fresh = [...unmarked()].filter((t) => !before.has(t))
        return fresh.length === N && fresh.every((t) => complete(trace(t)))
      },
      20_000,
      `${N} whole traces`,
    )
    const versions = new Set(fresh.map((t) => checkTrace(trace(t))))
    assert.ok(versions.size >= 1)
    for (const t of fresh) assert.ok(trace(t).every((s) => s.attributes.phase === 'one'))
    // every span's export came as OTLP/HTTP protobuf
    assert.ok(receiver.requests.every((r) => r.path === '/v1/traces' && r.contentType === 'application/x-protobuf'))
  })

  test("a client's W3C context is continued through the mesh", async () => {
    const traceId = hex(16)
    const parent = hex(8)
    await load({ traceparent: `00-${traceId}-${parent}-01`, tracestate: 'client=1' })
    await eventually(async () => complete(trace(traceId)), 20_000, 'the W3C trace')
    const spans = trace(traceId)
    checkTrace(spans)
    const gw = spans.find((s) => s.service === 'ingressgateway.istio-system')!
    assert.equal(gw.parentSpanId, parent)
    assert.ok(spans.every((s) => s.traceState === 'client=1'))
  })

  test("a client's B3 (x-b3-*) context is continued through the mesh", async () => {
    const traceId = hex(16)
    const parent = hex(8)
    await load({ 'x-b3-traceid': traceId, 'x-b3-spanid': parent, 'x-b3-sampled': '1' })
    await eventually(async () => complete(trace(traceId)), 20_000, 'the B3 trace')
    const spans = trace(traceId)
    checkTrace(spans)
    assert.equal(spans.find((s) => s.service === 'ingressgateway.istio-system')!.parentSpanId, parent)
  })

  test('Telemetry in a namespace and for one workload add to the mesh-wide one (tags merge by name)', async () => {
    await apply(
      'default-ns',
      telemetry(
        'namespace-tags',
        'default',
        '  tracing:\n  - customTags:\n      scope:\n        literal:\n          value: namespace\n',
      ),
    )
    await apply(
      'ratings-only',
      telemetry(
        'ratings-tags',
        'default',
        '  selector:\n    matchLabels:\n      app: ratings\n  tracing:\n  - customTags:\n      scope:\n        literal:\n          value: ratings-workload\n',
      ),
    )
    const spans = await marker((list) => {
      const ratings = list.find((s) => s.kind === SERVER && s.service === 'ratings.default')
      return ratings?.attributes.scope === 'ratings-workload' && list.some((s) => s.attributes.scope === 'namespace')
    }, 'the namespace and workload Telemetry')
    for (const s of spans) {
      assert.equal(s.attributes.phase, 'one', `${s.service}: the mesh-wide tag stays`)
      const want =
        s.service === 'ingressgateway.istio-system'
          ? undefined
          : s.service === 'ratings.default'
            ? 'ratings-workload'
            : 'namespace'
      assert.equal(s.attributes.scope, want, `${s.service} ${s.name}`)
    }
  })

  test('0% sampling sends no span for page loads without a sampled context', async () => {
    await apply('mesh-default', meshDefault(0, 'zero'))
    await marker(tagged('phase', 'zero'), 'the 0% Telemetry')
    const before = unmarked()
    for (let i = 0; i < 5; i++) await load()
    // a last marker's trace, whole, shows every proxy has exported what it had before it
    await marker(tagged('phase', 'zero'), 'a marker after the unsampled loads')
    assert.deepEqual(
      [...unmarked()].filter((t) => !before.has(t)),
      [],
    )
  })
})
