import assert from 'node:assert/strict'
import { test } from 'node:test'
import { BUCKETS_MS, Histogram } from './stats.js'

test('a histogram counts a value in the first bucket whose bound is at least the value', () => {
  const h = new Histogram()
  h.record(0)
  h.record(0.5)
  h.record(0.6)
  h.record(1000)
  h.record(1000.5)
  h.record(BUCKETS_MS[BUCKETS_MS.length - 1]!)
  h.record(1e12)
  h.record(Number.NaN)
  const at = (bound: number) => h.counts[BUCKETS_MS.indexOf(bound)]
  assert.equal(at(0.5), 3, '0, 0.5 and NaN')
  assert.equal(at(1), 1)
  assert.equal(at(1000), 1)
  assert.equal(at(2500), 1)
  assert.equal(at(3600000), 1)
  assert.equal(h.counts[BUCKETS_MS.length], 1, 'past the last bound: +Inf')
  assert.equal(h.counts.length, BUCKETS_MS.length + 1)
  assert.equal(h.count, 8)
})
