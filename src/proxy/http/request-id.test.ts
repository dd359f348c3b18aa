import assert from 'node:assert/strict'
import { test } from 'node:test'
import { requestId } from './request-id.js'

test('request ids are version 4 UUIDs and do not repeat', () => {
  const seen = new Set<string>()
  for (let i = 0; i < 5000; i++) {
    const id = requestId()
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    seen.add(id)
  }
  assert.equal(seen.size, 5000)
})

test('request ids use every hex digit in every random position', () => {
  const digits = new Map<number, Set<string>>()
  for (let i = 0; i < 2000; i++) {
    const id = requestId()
    for (let p = 0; p < 36; p++) {
      if (p === 8 || p === 13 || p === 18 || p === 23 || p === 14 || p === 19) continue
      let s = digits.get(p)
      if (s === undefined) digits.set(p, (s = new Set()))
      s.add(id[p]!)
    }
  }
  for (const [p, s] of digits) assert.equal(s.size, 16, `position ${p}`)
})
