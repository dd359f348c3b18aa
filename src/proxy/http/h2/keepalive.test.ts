import assert from 'node:assert/strict'
import { test } from 'node:test'
import { DEFAULT_KEEPALIVE, keepaliveOptions } from './keepalive.js'

test('connection_keepalive: the configured interval and timeout, or 60 s / 10 s when unset', () => {
  assert.deepEqual(keepaliveOptions({ interval: '0.5s', timeout: '2s' }), { intervalMs: 500, timeoutMs: 2000 })
  assert.deepEqual(keepaliveOptions(undefined), DEFAULT_KEEPALIVE)
  assert.deepEqual(DEFAULT_KEEPALIVE, { intervalMs: 60_000, timeoutMs: 10_000 })
})
