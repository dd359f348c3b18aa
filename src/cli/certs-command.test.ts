import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fromNow } from './certs-command.js'

test('fromNow: the largest two units ahead, one below an hour, seconds below a minute, "ago" for the past', () => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  const at = (ms: number) => new Date(now + ms).toISOString()
  assert.equal(fromNow(at(((2 * 24 + 3) * 60 + 5) * 60_000), now), 'in 2d 3h')
  assert.equal(fromNow(at((23 * 60 + 59) * 60_000 + 59_000), now), 'in 23h 59m')
  assert.equal(fromNow(at(4 * 60_000 + 30_000), now), 'in 4m')
  assert.equal(fromNow(at(42_000), now), 'in 42s')
  assert.equal(fromNow(at(-12 * 60_000), now), '12m ago')
})
