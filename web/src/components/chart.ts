/**
 * A time-series chart (uPlot) of a golden signal: made once, fed new points on every refresh. The element carries
 * `data-points`, how many points of its data have a value, so a test (or a curious user) can tell a chart that drew
 * something from an empty one without reading the canvas.
 */
import uPlot from 'uplot'
import { h } from '../dom.js'

/** The theme's colors as canvas strokes (a canvas cannot read CSS variables). */
const AXIS = '#8a98a6'
const GRID = '#2a3540'
export const COLORS = ['#5aa9e6', '#3fb950', '#d29922', '#f85149', '#b083f0']

export interface ChartSeries {
  label: string
  color: string
}

export interface Chart {
  el: HTMLElement
  /**
   * `xs` Unix seconds; one array per series, null where there is no value; `traffic`: whether the window saw any
   * request (without, the chart says so instead of drawing a flat line)
   */
  update(xs: number[], ys: (number | null)[][], traffic: boolean): void
}

export function lineChart(
  title: string,
  series: ChartSeries[],
  format: (v: number) => string,
  testId: string,
  range?: [number, number],
): Chart {
  const plotEl = h('div', { class: 'chart-plot' })
  const empty = h('div', { class: 'chart-empty muted' }, 'no traffic yet')
  const el = h(
    'div',
    { class: 'panel chart', 'data-testid': testId, 'data-points': 0 },
    h('h3', null, title),
    plotEl,
    empty,
  )
  let plot: uPlot | null = null
  const width = () => Math.max(240, plotEl.clientWidth || el.clientWidth - 24 || 400)
  const make = (data: uPlot.AlignedData) => {
    const axis = {
      stroke: AXIS,
      grid: { stroke: GRID, width: 1 },
      ticks: { stroke: GRID, width: 1 },
    }
    plot = new uPlot(
      {
        width: width(),
        height: 160,
        cursor: { drag: { x: false, y: false } },
        legend: { show: true },
        // rates and latencies from 0 up (a flat line of small values is not a cliff), shares on their own range
        scales: {
          x: { time: true },
          y: { range: range ?? ((_u: uPlot, _min: number, max: number) => [0, max > 0 ? max * 1.1 : 1]) },
        },
        axes: [axis, { ...axis, size: 60, values: (_u, vals) => vals.map((v) => (v === null ? '' : format(v))) }],
        series: [
          {},
          ...series.map((s) => ({
            label: s.label,
            stroke: s.color,
            width: 2,
            spanGaps: false,
            // points too: a step with traffic between two without (or alone at the end) is a dot, not nothing
            points: { show: true, size: 4, fill: s.color },
            value: (_u: uPlot, v: number | null) => (v === null ? '-' : format(v)),
          })),
        ],
      },
      data,
      plotEl,
    )
    window.addEventListener('resize', () => plot?.setSize({ width: width(), height: 160 }))
  }
  return {
    el,
    update(xs, ys, traffic) {
      const drawn = xs.filter((_, i) => ys.some((y) => y[i] !== null && y[i] !== undefined)).length
      el.setAttribute('data-points', String(drawn))
      empty.hidden = traffic
      const data: uPlot.AlignedData = [xs, ...ys]
      if (plot === null) make(data)
      else plot.setData(data)
    },
  }
}
