/**
 * The request hash against published reference vectors, so a change to it cannot go unnoticed by tests that would
 * otherwise compute their expectations with the same code.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { combineHash, FNV_OFFSET, fnv, hashString, hashValues, mix } from './hash.js'

describe('request hash', () => {
  test('FNV-1a 32-bit: the published vectors', () => {
    // from the FNV reference (Fowler, Noll, Vo): "" → offset basis, "a" → 0xe40c292c, "foobar" → 0xbf9cf968
    assert.equal(fnv(FNV_OFFSET, '') >>> 0, 0x811c9dc5)
    assert.equal(fnv(FNV_OFFSET, 'a') >>> 0, 0xe40c292c)
    assert.equal(fnv(FNV_OFFSET, 'foobar') >>> 0, 0xbf9cf968)
  })

  test("murmur3's fmix32: the published vectors", () => {
    // MurmurHash3_x86_32 of the empty input with seed s is fmix32(s): seed 0 → 0, 1 → 0x514e28b7, 0xffffffff → 0x81f16f39
    assert.equal(mix(0), 0)
    assert.equal(mix(1), 0x514e28b7)
    assert.equal(mix(0xffffffff), 0x81f16f39)
  })

  test('hashString is fmix32(FNV-1a(key)), as an unsigned 32-bit value', () => {
    assert.equal(hashString('a'), mix(0xe40c292c))
    assert.equal(hashString('10.0.0.1'), 0xaebc85ae)
    assert.equal(hashString('abc'), 0x1cc93dbc)
  })

  test('several values: one key whatever their order', () => {
    assert.equal(hashValues(['a', 'b']), 0xb03938f4)
    assert.equal(hashValues(['b', 'a']), 0xb03938f4)
    assert.equal(hashValues(['x']), hashString('x'))
  })

  test('policies combine by rotate-left-1-xor in 32 bits', () => {
    assert.equal(combineHash(0x80000001, 0), 0x00000003)
    assert.equal(combineHash(0x551f758f, 0x3cce455f), 0x96f0ae41)
  })
})
