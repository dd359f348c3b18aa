/**
 * The golden signals of a service or workload over the last 10 minutes: request rate, success rate and latency
 * percentiles, three charts fed from `/api/v1/series` (each point what `/api/v1/stats` gives for one 15 s step).
 */
import { ApiError, getJson } from '../api.js'
import { h } from '../dom.js'
import { ms, percent, rps } from '../format.js'
import { COLORS, lineChart } from './chart.js'

export interface SeriesPoint {
  t: number
  rps: number | null
  successRate: number | null
  p50: number | null
  p95: number | null
  p99: number | null
}

export interface GoldenCharts {
  el: HTMLElement
  refresh(signal: AbortSignal): Promise<void>
}

export function goldenCharts(resource: 'service' | 'deployment', namespace: string, name: string): GoldenCharts {
  const rate = lineChart('Request rate', [{ label: 'rps', color: COLORS[0]! }], (v) => `${rps(v)}/s`, 'chart-rps')
  const success = lineChart(
    'Success rate',
    [{ label: 'success', color: COLORS[1]! }],
    (v) => percent(v / 100),
    'chart-success',
    [0, 100],
  )
  const latency = lineChart(
    'Latency',
    [
      { label: 'p50', color: COLORS[0]! },
      { label: 'p95', color: COLORS[2]! },
      { label: 'p99', color: COLORS[3]! },
    ],
    (v) => ms(v),
    'chart-latency',
  )
  const note = h(
    'p',
    { class: 'warn', hidden: true },
    'The control plane gathers no metrics (started with --telemetry-interval off).',
  )
  const el = h(
    'section',
    { class: 'charts' },
    h('h2', null, 'Golden signals ', h('span', { class: 'muted' }, '(last 10 minutes, 15 s steps)')),
    note,
    h('div', { class: 'chart-row' }, rate.el, success.el, latency.el),
  )
  const q = new URLSearchParams({ resource, namespace, name, window: '10m', step: '15s' })
  return {
    el,
    async refresh(signal) {
      let s: { points: SeriesPoint[] }
      try {
        s = await getJson<{ points: SeriesPoint[] }>(`/api/v1/series?${q}`, signal)
      } catch (err) {
        // a control plane started with --telemetry-interval off has no metrics: the rest of the page still shows
        if (!(err instanceof ApiError && err.status === 409)) throw err
        note.hidden = false
        return
      }
      const xs = s.points.map((p) => p.t)
      const traffic = s.points.some((p) => (p.rps ?? 0) > 0)
      rate.update(xs, [s.points.map((p) => p.rps)], traffic)
      success.update(xs, [s.points.map((p) => (p.successRate === null ? null : p.successRate * 100))], traffic)
      latency.update(xs, [s.points.map((p) => p.p50), s.points.map((p) => p.p95), s.points.map((p) => p.p99)], traffic)
    },
  }
}
