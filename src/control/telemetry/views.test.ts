/**
 * The views over proxies' metrics in Istio's text format (names, label order and buckets of Istio's standard
 * metrics), ingested as the gatherer ingests a scrape.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Gatherer, type ScrapeTarget } from './gatherer.js'
import { graphOf } from './graph.js'
import { clusterTarget, edgeRows, type InventoryWorkload, statRows, topRows } from './views.js'

/** Istio's standard labels, in Istio's order. */
const LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_cluster',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
] as const
type Labels = Partial<Record<(typeof LABELS)[number], string>>

/** Istio's default buckets for istio_request_duration_milliseconds. */
const BUCKETS = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
]

const sa = (ns: string, name: string) => `spiffe://cluster.local/ns/${ns}/sa/bookinfo-${name}`

/** A call from one workload to another as both sidecars label it. */
function call(src: string, dst: string, version: string, extra: Labels = {}): Labels {
  const svc = dst.replace(/-v\d+$/, '')
  return {
    source_workload: src,
    source_canonical_service: src.replace(/-v\d+$/, ''),
    source_canonical_revision: 'v1',
    source_workload_namespace: src === 'istio-ingressgateway' ? 'istio-system' : 'default',
    source_principal: src === 'istio-ingressgateway' ? sa('istio-system', 'gateway') : sa('default', src),
    source_app: src.replace(/-v\d+$/, ''),
    source_version: 'v1',
    source_cluster: 'Kubernetes',
    destination_workload: dst,
    destination_workload_namespace: 'default',
    destination_principal: sa('default', svc),
    destination_app: svc,
    destination_version: version,
    destination_service: `${svc}.default.svc.cluster.local`,
    destination_service_name: svc,
    destination_service_namespace: 'default',
    destination_canonical_service: svc,
    destination_canonical_revision: version,
    destination_cluster: 'Kubernetes',
    request_protocol: 'http',
    response_code: '200',
    grpc_response_status: '',
    response_flags: '-',
    connection_security_policy: 'mutual_tls',
    ...extra,
  }
}

function labelText(l: Labels): string {
  return LABELS.map((k) => `${k}="${l[k] ?? 'unknown'}"`).join(',')
}

/** `n` requests of a series, and their durations (each `ms`) in the histogram. */
function series(l: Labels, n: number, ms = 3): string {
  const lt = labelText(l)
  const lines = [`istio_requests_total{${lt}} ${n}`]
  for (const le of BUCKETS)
    lines.push(`istio_request_duration_milliseconds_bucket{${lt},le="${le}"} ${ms <= le ? n : 0}`)
  lines.push(`istio_request_duration_milliseconds_bucket{${lt},le="+Inf"} ${n}`)
  lines.push(`istio_request_duration_milliseconds_sum{${lt}} ${n * ms}`)
  lines.push(`istio_request_duration_milliseconds_count{${lt}} ${n}`)
  return lines.join('\n')
}

function text(...parts: string[]): string {
  return `# TYPE istio_requests_total counter\n# TYPE istio_request_duration_milliseconds histogram\n${parts.join('\n')}\n`
}

const dst = (l: Labels): Labels => ({ reporter: 'destination', ...l })
/** A client's report: only the server's sidecar knows how the connection was secured (Istio's "unknown"). */
const src = (l: Labels): Labels => ({ reporter: 'source', ...l, connection_security_policy: 'unknown' })

function target(workload: string, namespace = 'default', kind: 'sidecar' | 'gateway' = 'sidecar'): ScrapeTarget {
  return {
    nodeId: `${kind === 'gateway' ? 'router' : 'sidecar'}~127.0.0.1~${workload}.${namespace}~${namespace}.svc.cluster.local`,
    adminAddress: '127.0.0.1:1',
    workload,
    namespace,
    kind,
  }
}

/**
 * Bookinfo after `n` product pages, alternating reviews v1 / v2, as each proxy's metrics show it (every request
 * reported by its client's sidecar and by its server's). v2 calls ratings.
 */
function bookinfo(n: number, failures = 0): Map<string, string> {
  const v1 = Math.ceil(n / 2)
  const v2 = n - v1
  const gwToPp = call('istio-ingressgateway', 'productpage-v1', 'v1')
  const ppToDetails = call('productpage-v1', 'details-v1', 'v1')
  const ppToV1 = call('productpage-v1', 'reviews-v1', 'v1')
  const ppToV2 = call('productpage-v1', 'reviews-v2', 'v2')
  const v2ToRatings = call('reviews-v2', 'ratings-v1', 'v1')
  const failed = (l: Labels) => ({ ...l, response_code: '503', response_flags: 'UF' })
  return new Map([
    ['istio-ingressgateway', text(series(src(gwToPp), n, 40))],
    [
      'productpage-v1',
      text(
        series(dst(gwToPp), n, 30),
        series(src(ppToDetails), n - failures, 4),
        ...(failures > 0 ? [series(src(failed(ppToDetails)), failures, 4)] : []),
        series(src(ppToV1), v1, 8),
        series(src(ppToV2), v2, 12),
      ),
    ],
    [
      'details-v1',
      text(
        series(dst(ppToDetails), n - failures, 2),
        ...(failures > 0 ? [series(dst(failed(ppToDetails)), failures, 2)] : []),
      ),
    ],
    ['reviews-v1', text(series(dst(ppToV1), v1, 6))],
    ['reviews-v2', text(series(dst(ppToV2), v2, 10), series(src(v2ToRatings), v2, 3))],
    ['ratings-v1', text(series(dst(v2ToRatings), v2, 1))],
  ])
}

const TARGETS = ['istio-ingressgateway', 'productpage-v1', 'details-v1', 'reviews-v1', 'reviews-v2', 'ratings-v1'].map(
  (w) => (w === 'istio-ingressgateway' ? target(w, 'istio-system', 'gateway') : target(w)),
)

function gatherer(): Gatherer {
  return new Gatherer({ intervalMs: 5000, retentionMs: 60_000, targets: () => [] })
}

/** Scrapes every proxy at `t` with the metrics of `pages` product pages so far. */
function scrapeAt(g: Gatherer, t: number, pages: number, failures = 0, paths?: (w: string) => string | null): void {
  const m = bookinfo(pages, failures)
  for (const tg of TARGETS) g.ingest(g.recordOf(tg), t, m.get(tg.workload)!, paths?.(tg.workload) ?? null)
}

const INVENTORY: InventoryWorkload[] = [
  { name: 'productpage-v1', namespace: 'default', services: ['productpage'], version: 'v1', instances: 1, meshed: 1 },
  { name: 'details-v1', namespace: 'default', services: ['details'], version: 'v1', instances: 1, meshed: 1 },
  { name: 'reviews-v1', namespace: 'default', services: ['reviews'], version: 'v1', instances: 1, meshed: 1 },
  { name: 'reviews-v2', namespace: 'default', services: ['reviews'], version: 'v2', instances: 1, meshed: 1 },
  { name: 'reviews-v3', namespace: 'default', services: ['reviews'], version: 'v3', instances: 1, meshed: 0 },
  { name: 'ratings-v1', namespace: 'default', services: ['ratings'], version: 'v1', instances: 1, meshed: 1 },
]

describe('views over Istio metrics', () => {
  test('loom stat deploy: requests, rps, success, latency, mTLS and MESHED per workload', () => {
    const g = gatherer()
    scrapeAt(g, 0, 0)
    scrapeAt(g, 10_000, 10)
    const rows = statRows(
      g,
      { resource: 'deployment', namespace: 'default', windowMs: 60_000, nowMs: 10_000 },
      INVENTORY,
    )
    const by = new Map(rows.map((r) => [r.name, r]))
    assert.deepEqual(
      rows.map((r) => [r.name, r.requests]),
      [
        ['details-v1', 10],
        ['productpage-v1', 10],
        ['ratings-v1', 5],
        ['reviews-v1', 5],
        ['reviews-v2', 5],
        ['reviews-v3', 0],
      ],
    )
    const pp = by.get('productpage-v1')!
    assert.equal(pp.rps, 1) // 10 requests over the 10 s the samples span
    assert.equal(pp.successRate, 1)
    assert.equal(pp.mtlsShare, 1)
    assert.deepEqual(pp.meshed, { meshed: 1, total: 1 })
    // every request took 30 ms: (25, 50] bucket, interpolated
    assert.equal(pp.latencyMs!.p50, 37.5)
    assert.equal(pp.latencyMs!.p99, 49.75)
    // reviews-v3: known, no traffic, no sidecar
    assert.deepEqual(by.get('reviews-v3')!.meshed, { meshed: 0, total: 1 })
    assert.equal(by.get('reviews-v3')!.successRate, null)
    assert.equal(by.get('reviews-v3')!.latencyMs, null)
  })

  test('loom stat svc reviews: the service, then a row per version; a namespace row', () => {
    const g = gatherer()
    scrapeAt(g, 0, 0)
    scrapeAt(g, 10_000, 10)
    const rows = statRows(g, { resource: 'service', name: 'reviews', windowMs: 60_000, nowMs: 10_000 }, INVENTORY)
    assert.deepEqual(
      rows.map((r) => [r.name, r.version, r.requests, r.meshed]),
      [
        ['reviews', '', 10, { meshed: 2, total: 3 }],
        ['reviews', 'v1', 5, { meshed: 1, total: 1 }],
        ['reviews', 'v2', 5, { meshed: 1, total: 1 }],
      ],
    )
    // the callers' reports count the requests, the servers' say how they were secured
    assert.deepEqual(
      rows.map((r) => r.mtlsShare),
      [1, 1, 1],
    )
    const ns = statRows(g, { resource: 'namespace', windowMs: 60_000, nowMs: 10_000 }, INVENTORY)
    assert.deepEqual(
      ns.map((r) => [r.name, r.requests]),
      [['default', 35]],
    )
  })

  test('failures lower the success rate; the window leaves out what came before it', () => {
    const g = gatherer()
    scrapeAt(g, 0, 0)
    scrapeAt(g, 5000, 4)
    scrapeAt(g, 10_000, 10, 3)
    const details = (windowMs: number) =>
      statRows(g, { resource: 'deployment', name: 'details-v1', windowMs, nowMs: 10_000 }, INVENTORY)[0]!
    assert.equal(details(60_000).requests, 10)
    assert.equal(details(60_000).successRate, 0.7)
    // the last 5 s: 6 requests, 3 of them 503
    assert.equal(details(5000).requests, 6)
    assert.equal(details(5000).successRate, 0.5)
  })

  test('a fault the client’s sidecar injects counts against the service, not the workload that never saw it', () => {
    const g = gatherer()
    const ok = call('reviews-v2', 'ratings-v1', 'v1')
    const aborted = { ...ok, response_code: '500', response_flags: 'FI', destination_workload: 'unknown' }
    const scrape = (t: number, n: number, faults: number) => {
      g.ingest(g.recordOf(target('reviews-v2')), t, text(series(src(ok), n), series(src(aborted), faults)), null)
      g.ingest(g.recordOf(target('ratings-v1')), t, text(series(dst(ok), n)), null)
    }
    scrape(0, 0, 0)
    scrape(5000, 6, 2)
    const q = { windowMs: 60_000, nowMs: 5000 }
    const [svc] = statRows(g, { ...q, resource: 'service', name: 'ratings' }, [])
    assert.deepEqual([svc!.requests, svc!.successRate], [8, 0.75])
    const [wl] = statRows(g, { ...q, resource: 'deployment', name: 'ratings-v1' }, [])
    assert.deepEqual([wl!.requests, wl!.successRate], [6, 1])
  })

  test('a proxy restart (counters from 0, told by /stats/paths) does not lose or double requests', () => {
    const g = gatherer()
    const started = new Map(TARGETS.map((t) => [t.workload, 1000]))
    const paths = (w: string) => JSON.stringify({ started_at_ms: started.get(w), capacity: 0, paths: [] })
    scrapeAt(g, 0, 0, 0, paths)
    scrapeAt(g, 5000, 6, 0, paths)
    // details restarts and counts 8 before the next scrape: more than the 6 it had
    started.set('details-v1', 2000)
    const m = bookinfo(14)
    for (const tg of TARGETS) {
      const body = tg.workload === 'details-v1' ? bookinfo(8).get('details-v1')! : m.get(tg.workload)!
      g.ingest(g.recordOf(tg), 10_000, body, paths(tg.workload))
    }
    const details = statRows(g, { resource: 'deployment', name: 'details-v1', windowMs: 60_000, nowMs: 10_000 }, [])
    assert.equal(details[0]!.requests, 14)
    const pp = statRows(g, { resource: 'deployment', name: 'productpage-v1', windowMs: 60_000, nowMs: 10_000 }, [])
    assert.equal(pp[0]!.requests, 14)
  })

  test('a proxy that is gone still counts in the windows its samples cover, and is forgotten after', async () => {
    let targets = TARGETS
    const g = new Gatherer({ intervalMs: 5000, retentionMs: 20_000, targets: () => targets, clock: () => now })
    let now = 0
    scrapeAt(g, 0, 0)
    scrapeAt(g, 5000, 4)
    targets = TARGETS.filter((t) => t.workload !== 'ratings-v1')
    now = 10_000
    // the scrapes of the others fail (nothing listens at their address): the ratings history stays
    await g.scrapeAll()
    assert.equal(
      statRows(g, { resource: 'deployment', name: 'ratings-v1', windowMs: 20_000, nowMs: now }, [])[0]!.requests,
      2,
    )
    now = 30_000
    await g.scrapeAll()
    assert.equal(
      g.proxies().some((r) => r.target.workload === 'ratings-v1'),
      false,
    )
    assert.ok(g.proxies().every((r) => r.lastError !== null))
  })

  test('loom edges: who called whom with both identities, the destination sidecar reporting', () => {
    const g = gatherer()
    scrapeAt(g, 0, 0)
    scrapeAt(g, 10_000, 10)
    const edges = edgeRows(g, { windowMs: 60_000, nowMs: 10_000 })
    assert.deepEqual(
      edges.map((e) => [e.source.workload, e.destination.workload, e.destination.service, e.requests, e.reporter]),
      [
        ['productpage-v1', 'details-v1', 'details', 10, 'destination'],
        ['productpage-v1', 'reviews-v1', 'reviews', 5, 'destination'],
        ['productpage-v1', 'reviews-v2', 'reviews', 5, 'destination'],
        ['reviews-v2', 'ratings-v1', 'ratings', 5, 'destination'],
        ['istio-ingressgateway', 'productpage-v1', 'productpage', 10, 'destination'],
      ],
    )
    const e = edges[1]!
    assert.equal(e.source.principal, 'spiffe://cluster.local/ns/default/sa/bookinfo-productpage-v1')
    assert.equal(e.destination.principal, 'spiffe://cluster.local/ns/default/sa/bookinfo-reviews')
    assert.equal(e.mtlsShare, 1)
    assert.equal(e.deniedShare, 0)
    // the server's sidecar's histogram: every request of productpage → reviews-v2 took 10 ms (bucket 5..10)
    assert.ok(edges[2]!.latencyMs!.p50 > 5 && edges[2]!.latencyMs!.p99 <= 10, JSON.stringify(edges[2]!.latencyMs))
  })

  test('an edge to a destination without a sidecar comes from its client’s reports', () => {
    const g = gatherer()
    const out = call('productpage-v1', 'details-v1', 'v1', {
      destination_workload: 'unknown',
      destination_workload_namespace: 'unknown',
      destination_principal: 'unknown',
      connection_security_policy: 'unknown',
    })
    g.ingest(g.recordOf(target('productpage-v1')), 0, text(series(src(out), 0)), null)
    g.ingest(g.recordOf(target('productpage-v1')), 5000, text(series(src(out), 7)), null)
    const [e] = edgeRows(g, { windowMs: 60_000, nowMs: 5000 })
    assert.deepEqual(
      [e!.destination.workload, e!.destination.namespace, e!.requests, e!.reporter, e!.mtlsShare],
      ['details', 'default', 7, 'source', 0],
    )
  })

  test('loom top: the busiest paths from the proxies’ tables, new entries and re-admitted ones', () => {
    const g = gatherer()
    const table = (paths: { id: number; path: string; requests: number; failures?: number; ms?: number }[]) =>
      JSON.stringify({
        started_at_ms: 1,
        capacity: 100,
        paths: paths.map((p) => ({
          cluster: 'outbound|9080|v2|reviews.default.svc.cluster.local',
          method: 'GET',
          error_bound: 0,
          failures: p.failures ?? 0,
          duration_ms_sum: (p.ms ?? 10) * p.requests,
          ...p,
        })),
      })
    const pp = g.recordOf(target('productpage-v1'))
    g.ingest(pp, 0, '', table([{ id: 1, path: '/reviews/0', requests: 3 }]))
    g.ingest(
      pp,
      5000,
      '',
      table([
        { id: 1, path: '/reviews/0', requests: 10, failures: 1 },
        { id: 2, path: '/reviews/1', requests: 4 },
      ]),
    )
    // /reviews/1 left the table and came back as id 3
    g.ingest(
      pp,
      10_000,
      '',
      table([
        { id: 1, path: '/reviews/0', requests: 12, failures: 1 },
        { id: 3, path: '/reviews/1', requests: 2 },
      ]),
    )
    const rows = topRows(g, { windowMs: 60_000, nowMs: 10_000, limit: 10 })
    assert.deepEqual(
      rows.map((r) => [
        r.path,
        r.requests,
        r.successRate,
        r.destination.service,
        r.destination.subset,
        r.source.workload,
      ]),
      [
        ['/reviews/0', 9, 0.8889, 'reviews', 'v2', 'productpage-v1'],
        ['/reviews/1', 6, 1, 'reviews', 'v2', 'productpage-v1'],
      ],
    )
    assert.equal(rows[0]!.latencyMsAvg, 10)
    assert.equal(topRows(g, { windowMs: 60_000, nowMs: 10_000, limit: 10, service: 'ratings' }).length, 0)
  })

  test('cluster names: Istio outbound clusters, and others as they are', () => {
    assert.deepEqual(clusterTarget('outbound|9080|v1|reviews.default.svc.cluster.local'), {
      service: 'reviews',
      namespace: 'default',
      subset: 'v1',
    })
    assert.deepEqual(clusterTarget('outbound|443||api.example.com'), {
      service: 'api.example.com',
      namespace: '',
      subset: '',
    })
    assert.deepEqual(clusterTarget(''), { service: '(none)', namespace: '', subset: '' })
  })
})

describe('the service graph (graph.ts)', () => {
  const GW = 'istio-system/istio-ingressgateway'

  test('every workload known is a node with its service; the edges per workload and per service', () => {
    const g = gatherer()
    scrapeAt(g, 0, 0)
    scrapeAt(g, 10_000, 10)
    const graph = graphOf(g, { windowMs: 60_000, nowMs: 10_000 }, INVENTORY)
    const nodes = new Map(graph.nodes.map((n) => [n.id, n]))
    // reviews-v3 has had no request: it is still drawn, under its service
    assert.deepEqual(nodes.get('default/reviews-v3'), {
      id: 'default/reviews-v3',
      workload: 'reviews-v3',
      namespace: 'default',
      kind: 'workload',
      service: 'default/reviews',
      version: 'v3',
    })
    assert.equal(nodes.get(GW)!.kind, 'gateway')
    assert.equal(nodes.get(GW)!.service, null)
    assert.deepEqual(
      graph.services.map((s) => [s.id, s.workloads]),
      [
        ['default/details', ['default/details-v1']],
        ['default/productpage', ['default/productpage-v1']],
        ['default/ratings', ['default/ratings-v1']],
        ['default/reviews', ['default/reviews-v1', 'default/reviews-v2', 'default/reviews-v3']],
      ],
    )
    const pp = graph.edges.find((e) => e.to === 'default/details-v1')!
    assert.deepEqual(
      [pp.from, pp.requests, pp.rps, pp.successRate, pp.deniedShare, pp.mtlsShare],
      ['default/productpage-v1', 10, 1, 1, 0, 1],
    )
    assert.deepEqual(pp.principals, {
      source: [sa('default', 'productpage-v1')],
      destination: [sa('default', 'details')],
    })
    // per service: productpage → reviews adds up both versions, its latency from the merged histograms
    assert.deepEqual(
      graph.serviceEdges.map((e) => [e.fromKind, e.from, e.toKind, e.to, e.requests]),
      [
        ['service', 'default/productpage', 'service', 'default/details', 10],
        ['service', 'default/productpage', 'service', 'default/reviews', 10],
        ['service', 'default/reviews', 'service', 'default/ratings', 5],
        ['workload', GW, 'service', 'default/productpage', 10],
      ],
    )
    const reviews = graph.serviceEdges[1]!
    // reviews-v1 answered in 6 ms (5..10 bucket), reviews-v2 in 10 ms (same bucket): half of them in each
    assert.ok(reviews.latencyMs!.p50 > 5 && reviews.latencyMs!.p99 <= 10, JSON.stringify(reviews.latencyMs))
    assert.deepEqual(reviews.principals, {
      source: [sa('default', 'productpage-v1')],
      destination: [sa('default', 'reviews')],
    })
    // a namespace leaves out the workloads and the traffic elsewhere
    const other = graphOf(g, { namespace: 'other', windowMs: 60_000, nowMs: 10_000 }, INVENTORY)
    assert.deepEqual([other.nodes, other.edges, other.services, other.serviceEdges], [[], [], [], []])
  })

  test('requests an authorization policy refused are a denied share; an edge without requests stays, idle', () => {
    const g = gatherer()
    const ok = call('reviews-v2', 'ratings-v1', 'v1')
    const denied = { ...ok, response_code: '403', response_flags: 'RBAC' }
    const scrape = (t: number, n: number, refused: number) => {
      g.ingest(g.recordOf(target('reviews-v2')), t, text(series(src(ok), n), series(src(denied), refused)), null)
      g.ingest(g.recordOf(target('ratings-v1')), t, text(series(dst(ok), n), series(dst(denied), refused)), null)
    }
    scrape(0, 0, 0)
    scrape(5000, 2, 6)
    const at = (nowMs: number) => graphOf(g, { windowMs: 10_000, nowMs }, INVENTORY)
    const [e] = at(5000).edges
    assert.deepEqual([e!.requests, e!.successRate, e!.deniedShare], [8, 1, 0.75])
    assert.deepEqual(at(5000).serviceEdges[0]!.deniedShare, 0.75)
    // no request for the whole window: the edge is kept, with nothing to rate
    scrape(20_000, 2, 6)
    const idle = at(20_000)
    assert.deepEqual(
      [idle.edges, idle.serviceEdges].map((es) =>
        es.map((x) => [x.from, x.to, x.requests, x.successRate, x.latencyMs]),
      ),
      [
        [['default/reviews-v2', 'default/ratings-v1', 0, null, null]],
        [['default/reviews', 'default/ratings', 0, null, null]],
      ],
    )
    // loom edges lists traffic only
    assert.deepEqual(edgeRows(g, { windowMs: 10_000, nowMs: 20_000 }), [])
  })
})
