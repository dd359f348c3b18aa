/** Flag durations, Go style. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseFlagDurationMs } from './duration.js'

test('flag durations: units, combinations, and what is not one', () => {
  assert.equal(parseFlagDurationMs('24h'), 24 * 3600_000)
  assert.equal(parseFlagDurationMs('90m'), 90 * 60_000)
  assert.equal(parseFlagDurationMs('1h30m'), 90 * 60_000)
  assert.equal(parseFlagDurationMs('2d'), 48 * 3600_000)
  assert.equal(parseFlagDurationMs('1.5h'), 90 * 60_000)
  assert.equal(parseFlagDurationMs('250ms'), 250)
  for (const bad of ['', '24', 'h', '1 h', '-1h', '1y', 'a day']) assert.equal(parseFlagDurationMs(bad), null, bad)
})
