/**
 * The time series of /api/v1/series over known samples: a caller's sidecar (productpage) reporting its requests to
 * reviews v1 and v2, read every 5 s; each step's numbers worked out by hand from the counters and buckets.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Gatherer, type ScrapeTarget } from './gatherer.js'
import { seriesPoints } from './series.js'
import { statRows } from './views.js'

const BUCKETS = [0.5, 1, 5, 10, 25, 50, 100]

/** `n` requests of one series so far, each taking `ms`, as Istio's text format has them. */
function series(version: string, code: string, n: number, ms: number): string {
  const l =
    `reporter="source",source_workload="productpage-v1",destination_workload="reviews-${version}",` +
    'destination_workload_namespace="default",destination_service_name="reviews",' +
    `destination_service_namespace="default",destination_version="${version}",response_code="${code}"`
  const lines = [`istio_requests_total{${l}} ${n}`]
  for (const le of BUCKETS)
    lines.push(`istio_request_duration_milliseconds_bucket{${l},le="${le}"} ${ms <= le ? n : 0}`)
  lines.push(`istio_request_duration_milliseconds_bucket{${l},le="+Inf"} ${n}`)
  lines.push(
    `istio_request_duration_milliseconds_sum{${l}} ${n * ms}`,
    `istio_request_duration_milliseconds_count{${l}} ${n}`,
  )
  return lines.join('\n')
}

const PRODUCTPAGE: ScrapeTarget = {
  nodeId: 'sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local',
  adminAddress: '127.0.0.1:1',
  workload: 'productpage-v1',
  namespace: 'default',
  kind: 'sidecar',
}

/**
 * Readings at 0, 5, …, 30 s. Requests so far to v1 (3 ms each), to v2 answered 200 and 503 (30 ms each):
 *   t (s)   0  5  10  15  20  25  30
 *   v1      0  5  10  20  30  30  30
 *   v2 200  0  0   0  10  20  20  20
 *   v2 503  0  0   0   0   5   5   5
 */
function gathered(): Gatherer {
  const g = new Gatherer({ intervalMs: 5000, retentionMs: 60_000, targets: () => [] })
  const v1 = [0, 5, 10, 20, 30, 30, 30]
  const v2 = [0, 0, 0, 10, 20, 20, 20]
  const v2Failed = [0, 0, 0, 0, 5, 5, 5]
  const r = g.recordOf(PRODUCTPAGE)
  for (let i = 0; i < v1.length; i++) {
    const text = [
      '# TYPE istio_requests_total counter',
      '# TYPE istio_request_duration_milliseconds histogram',
      series('v1', '200', v1[i]!, 3),
      series('v2', '200', v2[i]!, 30),
      series('v2', '503', v2Failed[i]!, 30),
    ].join('\n')
    g.ingest(r, i * 5000, `${text}\n`, null)
  }
  return g
}

describe('series: golden signals per step', () => {
  test('a service: rps, success rate and latency percentiles of each step', () => {
    const g = gathered()
    const points = seriesPoints(g, {
      resource: 'service',
      name: 'reviews',
      namespace: 'default',
      windowMs: 40_000,
      stepMs: 10_000,
      nowMs: 30_000,
    })
    assert.deepEqual(
      points.map((p) => p.t),
      [0, 10, 20, 30],
    )
    // before the first two readings: a gap, not a zero
    assert.deepEqual(points[0], { t: 0, rps: null, successRate: null, p50: null, p95: null, p99: null })
    // 0–10 s: 10 requests to v1, all in the (1, 5] ms bucket: p50 = 1 + 4 × 5/10
    assert.deepEqual(points[1], { t: 10, rps: 1, successRate: 1, p50: 3, p95: 4.8, p99: 4.96 })
    // 10–20 s: 20 to v1 (≤ 5 ms), 25 to v2 (in (25, 50] ms), 5 of them 503: 45 requests, 40 answered
    // p50: rank 22.5, 2.5 into the 25 of (25, 50] → 27.5; p95 rank 42.75 → 47.75; p99 rank 44.55 → 49.55
    assert.deepEqual(points[2], { t: 20, rps: 4.5, successRate: 0.8889, p50: 27.5, p95: 47.75, p99: 49.55 })
    // 20–30 s: readings, no request
    assert.deepEqual(points[3], { t: 30, rps: 0, successRate: null, p50: null, p95: null, p99: null })
  })

  test('a step is what /api/v1/stats gives for a window of one step ending then', () => {
    const g = gathered()
    const [p] = seriesPoints(g, {
      resource: 'service',
      name: 'reviews',
      namespace: 'default',
      windowMs: 10_000,
      stepMs: 10_000,
      nowMs: 20_000,
    })
    const [row] = statRows(
      g,
      { resource: 'service', name: 'reviews', namespace: 'default', windowMs: 10_000, nowMs: 20_000 },
      [],
    )
    assert.deepEqual(
      [p!.rps, p!.successRate, p!.p50, p!.p95, p!.p99],
      [row!.rps, row!.successRate, row!.latencyMs!.p50, row!.latencyMs!.p95, row!.latencyMs!.p99],
    )
  })

  test('a version of a service, and a workload; steps aligned to their length', () => {
    const g = gathered()
    const q = { namespace: 'default', windowMs: 20_000, stepMs: 10_000 }
    // now = 27 s: the last step ends at 20 s
    const v2 = seriesPoints(g, { ...q, resource: 'service', name: 'reviews', version: 'v2', nowMs: 27_000 })
    assert.deepEqual(
      v2.map((p) => [p.t, p.rps, p.successRate]),
      [
        [10, 0, null],
        [20, 2.5, 0.8],
      ],
    )
    const wl = seriesPoints(g, { ...q, resource: 'deployment', name: 'reviews-v1', nowMs: 20_000 })
    assert.deepEqual(
      wl.map((p) => [p.t, p.rps, p.successRate]),
      [
        [10, 1, 1],
        [20, 2, 1],
      ],
    )
    // another namespace: readings, no traffic
    const other = seriesPoints(g, { ...q, resource: 'service', name: 'reviews', namespace: 'shop', nowMs: 20_000 })
    assert.deepEqual(
      other.map((p) => p.rps),
      [0, 0],
    )
  })
})
