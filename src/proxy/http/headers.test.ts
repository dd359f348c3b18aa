import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Headers } from './headers.js'

test('remove drops every field of a name and keeps the order of the rest', () => {
  const h = new Headers(['a', '1', 'b', '2', 'a', '3', 'c', '4', 'a', '5'])
  assert.equal(h.remove('a'), true)
  assert.deepEqual(h.list, ['b', '2', 'c', '4'])
  assert.equal(h.remove('a'), false)
  assert.deepEqual(h.list, ['b', '2', 'c', '4'])
})

test('set replaces the first field in place and drops later ones', () => {
  const h = new Headers(['x', '1', 'a', '1', 'y', '2', 'a', '2'])
  h.set('a', 'v')
  assert.deepEqual(h.list, ['x', '1', 'a', 'v', 'y', '2'])
  h.set('z', 'new')
  assert.deepEqual(h.list, ['x', '1', 'a', 'v', 'y', '2', 'z', 'new'])
})
