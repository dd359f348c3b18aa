import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { type HistogramSample, histogramQuantile, TargetHistory } from './history.js'

const info = (key: string) => ({ family: key.split('{')[0]!, labels: {} })
const counters = (o: Record<string, number>) => new Map(Object.entries(o))
const NONE = new Map<string, HistogramSample>()

/** A history with the given counter values scraped every 5 s from t = 0. */
function scraped(values: (Record<string, number> | 'restart')[], capacity = 10): TargetHistory {
  const h = new TargetHistory(capacity, 100)
  let t = 0
  let restart = false
  for (const v of values) {
    if (v === 'restart') {
      restart = true
      continue
    }
    h.record(t, restart, counters(v), NONE, info)
    restart = false
    t += 5000
  }
  return h
}

describe('history: increase over a window', () => {
  test('the increase and the span of a steady counter', () => {
    const h = scraped([{ a: 0 }, { a: 10 }, { a: 25 }, { a: 40 }])
    const s = h.series.get('a')!
    const all = h.span(0, 15_000)!
    assert.deepEqual([all.baseMs, all.lastMs], [0, 15_000])
    assert.equal(h.increase(s, all), 40)
    // a 10 s window ending at 15 s: from the slot at 5 s
    const last10 = h.span(5000, 15_000)!
    assert.equal(h.increase(s, last10), 30)
    // a window starting between two slots takes the one before it
    assert.equal(h.increase(s, h.span(7000, 15_000)!), 30)
    // fewer than two slots: no span
    assert.equal(h.span(15_000, 15_000), null)
  })

  test('a counter that goes down was reset: it counts from 0 (as Prometheus increase())', () => {
    const h = scraped([{ a: 100 }, { a: 120 }, { a: 5 }, { a: 9 }])
    assert.equal(h.increase(h.series.get('a')!, h.span(0, 15_000)!), 20 + 5 + 4)
  })

  test('a restart told by the scrape counts the new values from 0 even when they are higher', () => {
    // the restarted proxy counted 150 before the first scrape after it: more than the 120 before
    const h = scraped([{ a: 100 }, { a: 120 }, 'restart', { a: 150 }, { a: 160 }])
    assert.equal(h.increase(h.series.get('a')!, h.span(0, 15_000)!), 20 + 150 + 10)
  })

  test('a series first seen after the first scrape counted all of its value in between', () => {
    const h = scraped([{ a: 1 }, { a: 2 }, { a: 3, b: 7 }, { a: 4, b: 9 }])
    const b = h.series.get('b')!
    assert.equal(h.increase(b, h.span(0, 15_000)!), 9)
    assert.equal(h.increase(b, h.span(5000, 10_000)!), 7)
  })

  test('the first scrape of a proxy is a baseline: what it counted before is not in any window', () => {
    const h = scraped([{ a: 500 }, { a: 510 }])
    assert.equal(h.increase(h.series.get('a')!, h.span(0, 5000)!), 10)
  })

  test('a series a scrape does not show keeps its value (no increase), and 0 after a restart', () => {
    const h = scraped([{ a: 5, b: 3 }, { a: 6 }, { a: 7, b: 4 }, 'restart', { a: 1 }, { a: 2, b: 1 }])
    const b = h.series.get('b')!
    assert.equal(h.increase(b, h.span(0, 10_000)!), 1)
    // the restart: b was 4, then absent (0), then 1
    assert.equal(h.increase(b, h.span(10_000, 20_000)!), 1)
  })

  test('the ring keeps the last capacity scrapes; a series unchanged for the whole ring is dropped', () => {
    const values: Record<string, number>[] = [{ a: 0, gone: 3 }]
    for (let i = 1; i <= 12; i++) values.push({ a: i * 10 })
    const h = scraped(values, 4)
    assert.equal(h.size, 4)
    const span = h.span(0, 1e9)!
    assert.deepEqual([span.baseMs, span.lastMs], [45_000, 60_000])
    assert.equal(h.increase(h.series.get('a')!, span), 30)
    assert.equal(h.series.has('gone'), false)
  })

  test('series over the limit are refused and counted', () => {
    const h = new TargetHistory(4, 2)
    h.record(0, false, counters({ a: 1, b: 1, c: 1 }), NONE, info)
    assert.equal(h.series.size, 2)
    assert.equal(h.refused, 1)
  })

  test('histograms: each bucket, the sum and the count have their own increase', () => {
    const h = new TargetHistory(4, 10)
    const les = [1, 10, Number.POSITIVE_INFINITY]
    const hist = (counts: number[], sum: number) =>
      new Map([['d', { les, counts, sum, count: counts[counts.length - 1]! }]])
    h.record(0, false, new Map(), hist([1, 2, 2], 5), info)
    h.record(5000, false, new Map(), hist([3, 6, 7], 40), info)
    const s = h.series.get('d')!
    const span = h.span(0, 5000)!
    assert.deepEqual(
      [0, 1, 2, 3, 4].map((i) => h.increase(s, span, i)),
      [2, 4, 5, 35, 5],
    )
  })
})

describe('histogramQuantile (PromQL histogram_quantile)', () => {
  const les = [0.5, 1, 5, 10, 25, 50, 100, Number.POSITIVE_INFINITY]
  test('interpolates inside the bucket the rank falls in', () => {
    // 100 observations: 50 in (1, 5], 40 in (5, 10], 10 in (10, 25]
    const counts = [0, 0, 50, 90, 100, 100, 100, 100]
    assert.equal(histogramQuantile(0.5, les, counts), 5)
    assert.equal(histogramQuantile(0.25, les, counts), 3)
    assert.equal(histogramQuantile(0.7, les, counts), 7.5)
    assert.equal(histogramQuantile(0.95, les, counts), 17.5)
    assert.equal(histogramQuantile(0.99, les, counts), 23.5)
  })
  test('the first bucket interpolates from 0', () => {
    assert.equal(histogramQuantile(0.5, les, [10, 10, 10, 10, 10, 10, 10, 10]), 0.25)
  })
  test('a rank in the +Inf bucket gives the highest finite bound', () => {
    assert.equal(histogramQuantile(0.99, les, [0, 0, 0, 0, 0, 0, 10, 100]), 100)
  })
  test('no observation: NaN; no +Inf bucket: NaN', () => {
    assert.ok(Number.isNaN(histogramQuantile(0.5, les, [0, 0, 0, 0, 0, 0, 0, 0])))
    assert.ok(Number.isNaN(histogramQuantile(0.5, [1, 2], [1, 2])))
  })
})
