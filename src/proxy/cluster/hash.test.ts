import assert from 'node:assert/strict'
import { test } from 'node:test'
import { murmur3 } from './hash.js'

test('murmur3 matches the reference x86_32 vectors', () => {
  assert.equal(murmur3(''), 0)
  assert.equal(murmur3('', 1), 0x514e28b7)
  assert.equal(murmur3('hello'), 0x248bfa47)
  assert.equal(murmur3('Hello, world!', 1234), 0xfaf6cdb3)
  assert.equal(murmur3('The quick brown fox jumps over the lazy dog'), 0x2e4ff723)
})

test('murmur3 hashes UTF-8 bytes and long strings', () => {
  assert.equal(murmur3('é'), murmur3('\u00e9'))
  assert.notEqual(murmur3('é'), murmur3('e'))
  const long = 'x'.repeat(1000)
  assert.equal(murmur3(long), murmur3(long))
  assert.ok(murmur3(long) >= 0 && murmur3(long) <= 0xffffffff)
})
