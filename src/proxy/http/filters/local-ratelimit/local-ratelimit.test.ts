import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { TokenBucket } from './local-ratelimit.js'

describe('TokenBucket', () => {
  test('starts full; each consume takes a token; empty refuses', () => {
    const b = new TokenBucket(3, 3, 1000, 0)
    assert.deepEqual([b.consume(1), b.consume(2), b.consume(3), b.consume(4)], [true, true, true, false])
    assert.equal(b.tokens, 0)
  })

  test('fills tokens_per_fill per whole fill_interval, computed from the clock, capped at max_tokens', () => {
    const b = new TokenBucket(10, 2, 100, 0)
    for (let i = 0; i < 10; i++) assert.ok(b.consume(0))
    assert.equal(b.consume(99), false, 'no fill before the interval')
    assert.ok(b.consume(100), 'one fill: 2 tokens')
    assert.ok(b.consume(150))
    assert.equal(b.consume(199), false)
    // three intervals later: 3 fills of 2
    for (let i = 0; i < 6; i++) assert.ok(b.consume(450))
    assert.equal(b.consume(450), false)
    // a long idle time fills to max_tokens, no more
    for (let i = 0; i < 10; i++) assert.ok(b.consume(100_000))
    assert.equal(b.consume(100_000), false)
  })

  test("a full bucket's window starts at its first token; reset counts whole seconds to the next fill", () => {
    const b = new TokenBucket(2, 2, 1000, 0)
    assert.ok(b.consume(5000))
    assert.equal(b.resetSeconds(5000), 1)
    assert.ok(b.consume(5400))
    assert.equal(b.consume(5999), false)
    assert.equal(b.resetSeconds(5999), 1)
    assert.ok(b.consume(6000), 'filled one interval after the first token was taken')
    const slow = new TokenBucket(1, 1, 60_000, 0)
    assert.ok(slow.consume(0))
    assert.equal(slow.resetSeconds(500), 60)
  })
})
