import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ShortMemo } from './short-memo.js'

test('ShortMemo: the same objects give the stored result; any other object computes again', () => {
  const memo = new ShortMemo<object, number>(2)
  const a = {}
  const b = {}
  const c = {}
  let calls = 0
  const make = () => ++calls
  assert.equal(memo.get(a, b, c, 'x', make), 1)
  assert.equal(memo.get(a, b, c, 'x', make), 1, 'a hit')
  assert.equal(memo.get(a, b, c, 'y', make), 2, 'another fourth key')
  assert.equal(memo.get(a, {}, c, 'x', make), 3, 'another second object')
  assert.equal(memo.get({}, b, c, 'x', make), 4, 'another first object')
  // per 2: under `a`, (b, c, 'x') was pushed out by the two after it
  assert.equal(memo.get(a, b, c, 'x', make), 5)
  assert.equal(memo.get(a, b, c, 'x', make), 5)
})
