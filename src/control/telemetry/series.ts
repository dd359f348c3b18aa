/**
 * Golden signals over time (`GET /api/v1/series`, the dashboard's charts): the window cut into steps, each step's
 * numbers computed by `statRows` over that step alone, so a point is exactly what `/api/v1/stats` gives for a window
 * of one step ending at the point's time. A step shorter than the gatherer's interval would fall between two
 * readings, so the API refuses one.
 */
import type { Gatherer } from './gatherer.js'
import { type ResourceKind, statRows } from './views.js'

export interface SeriesQuery {
  resource: Exclude<ResourceKind, 'namespace'>
  name: string
  namespace: string
  /** a service's version ('' or absent: the service as a whole) */
  version?: string
  windowMs: number
  stepMs: number
  nowMs: number
}

export interface SeriesPoint {
  /** the end of the step, Unix seconds */
  t: number
  /** requests per second over the step; null when no proxy was read twice within it (no value, not a zero) */
  rps: number | null
  /** null when the step saw no request */
  successRate: number | null
  /** latency percentiles over the step's requests, ms; null without requests */
  p50: number | null
  p95: number | null
  p99: number | null
}

/**
 * The points of the window, oldest first: one per step, the last ending at `nowMs` (steps are aligned to the step
 * length, so consecutive calls give the same points for the same times).
 */
export function seriesPoints(g: Gatherer, q: SeriesQuery): SeriesPoint[] {
  const steps = Math.max(1, Math.floor(q.windowMs / q.stepMs))
  const last = Math.floor(q.nowMs / q.stepMs) * q.stepMs
  const out: SeriesPoint[] = []
  const version = q.version ?? ''
  for (let i = steps - 1; i >= 0; i--) {
    const t = last - i * q.stepMs
    const point: SeriesPoint = { t: t / 1000, rps: null, successRate: null, p50: null, p95: null, p99: null }
    out.push(point)
    // no proxy has two readings within the step (before gathering started, or every proxy gone): a gap
    if (!g.proxies().some((r) => r.history.span(t - q.stepMs, t) !== null)) continue
    point.rps = 0
    const rows = statRows(
      g,
      { resource: q.resource, name: q.name, namespace: q.namespace, windowMs: q.stepMs, nowMs: t },
      [],
    )
    const row = rows.find((r) => r.version === version)
    if (row === undefined) continue
    point.rps = row.rps
    point.successRate = row.successRate
    if (row.latencyMs !== null) {
      point.p50 = row.latencyMs.p50
      point.p95 = row.latencyMs.p95
      point.p99 = row.latencyMs.p99
    }
  }
  return out
}
