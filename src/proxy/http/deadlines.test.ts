import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Deadlines, type HasDeadline } from './deadlines.js'

class S implements HasDeadline {
  deadline = 0
  deadlineSlot = -1
  timedOut = 0
  constructor(readonly onTimeout: () => void = () => {}) {}
  timeout(): void {
    this.timedOut++
    this.onTimeout()
  }
}

describe('deadlines', () => {
  test('only streams past their deadline time out, once each, and leave the set', () => {
    const d = new Deadlines()
    const now = performance.now()
    const streams = Array.from({ length: 50 }, () => new S())
    for (const [i, s] of streams.entries()) d.add(s, i % 2 === 0 ? -1 : 60_000, now)
    // removals in the middle, at the ends, and twice
    d.delete(streams[0]!)
    d.delete(streams[49]!)
    d.delete(streams[25]!)
    d.delete(streams[25]!)
    assert.equal(d.size, 47)
    d.sweep()
    for (const [i, s] of streams.entries()) {
      const expected = i % 2 === 0 && i !== 0 ? 1 : 0
      assert.equal(s.timedOut, expected, `stream ${i}`)
      assert.equal(s.deadlineSlot === -1, expected === 1 || i === 0 || i === 49 || i === 25, `slot of stream ${i}`)
    }
    assert.equal(d.size, 47 - 24)
    d.sweep()
    assert.equal(
      streams.reduce((n, s) => n + s.timedOut, 0),
      24,
    )
    for (const s of streams) d.delete(s)
    assert.equal(d.size, 0)
    d.sweep()
  })

  test('a timeout that adds and removes other streams does not disturb the sweep', () => {
    const d = new Deadlines()
    const late = new S()
    const other = new S()
    const fresh = new S()
    const first = new S(() => {
      d.delete(other)
      d.add(fresh, -1, 0)
    })
    d.add(first, -1, 0)
    d.add(other, -1, 0)
    d.add(late, 60_000, performance.now())
    d.sweep()
    assert.equal(first.timedOut, 1)
    assert.equal(late.timedOut, 0)
    // `other` expired in the same sweep: it was taken out before any timeout ran, so it is told once
    assert.equal(other.timedOut, 1)
    // `fresh` was added during the sweep: the next sweep sees it
    assert.equal(fresh.timedOut, 0)
    d.sweep()
    assert.equal(fresh.timedOut, 1)
    d.delete(late)
    d.sweep()
  })
})
