import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  hostMatches,
  hostSubsetOf,
  intersectHosts,
  isExportedTo,
  labelsMatch,
  mostSpecificMatch,
  resolveHost,
  shortNames,
} from './hostname.js'

const KNOWN = new Set(['reviews.default.svc.cluster.local', 'ratings.prod.svc.cluster.local'])
const known = (h: string) => KNOWN.has(h)

describe('resolveHost', () => {
  const cases: [string, string, string][] = [
    ['reviews', 'default', 'reviews.default.svc.cluster.local'],
    ['reviews', 'prod', 'reviews.prod.svc.cluster.local'],
    ['Reviews', 'default', 'reviews.default.svc.cluster.local'],
    ['reviews.default', 'prod', 'reviews.default.svc.cluster.local'],
    ['reviews.default.svc', 'prod', 'reviews.default.svc.cluster.local'],
    ['ratings.prod', 'default', 'ratings.prod.svc.cluster.local'],
    ['reviews.default.svc.cluster.local', 'prod', 'reviews.default.svc.cluster.local'],
    // not a known service: taken as written, never turned into example.com.svc.cluster.local
    ['example.com', 'default', 'example.com'],
    ['details.default', 'default', 'details.default'],
    ['*', 'default', '*'],
    ['*.example.com', 'default', '*.example.com'],
    ['10.0.0.1', 'default', '10.0.0.1'],
  ]
  for (const [host, ns, want] of cases) {
    it(`${host} in ${ns} → ${want}`, () => assert.equal(resolveHost(host, ns, known), want))
  }
})

describe('host matching', () => {
  const cases: [string, string, boolean, boolean][] = [
    // a, b, a ⊆ b, a ∩ b ≠ ∅
    ['a.example.com', 'a.example.com', true, true],
    ['a.example.com', 'b.example.com', false, false],
    ['a.example.com', '*.example.com', true, true],
    ['a.b.example.com', '*.example.com', true, true],
    ['example.com', '*.example.com', false, false],
    ['*.example.com', 'a.example.com', false, true],
    ['*.b.example.com', '*.example.com', true, true],
    ['*.example.com', '*.b.example.com', false, true],
    ['*.com', '*.example.com', false, true],
    ['anything', '*', true, true],
    ['*', 'a.example.com', false, true],
    ['*', '*', true, true],
  ]
  for (const [a, b, subset, overlap] of cases) {
    it(`${a} vs ${b}`, () => {
      assert.equal(hostSubsetOf(a, b), subset)
      assert.equal(hostMatches(a, b), overlap)
    })
  }
})

describe('intersectHosts', () => {
  const cases: [string[], string[], string[]][] = [
    [['*'], ['*'], ['*']],
    [['*'], ['bookinfo.com'], ['bookinfo.com']],
    [['*.foo.com'], ['1.foo.com', '2.foo.com', 'bar.com'], ['1.foo.com', '2.foo.com']],
    [['1.foo.com', '2.foo.com'], ['*.foo.com'], ['1.foo.com', '2.foo.com']],
    [['a.com'], ['b.com'], []],
  ]
  for (const [a, b, want] of cases) it(`${a} ∩ ${b}`, () => assert.deepEqual(intersectHosts(a, b), want))
})

describe('mostSpecificMatch', () => {
  const cases: [string, string[], number][] = [
    ['a.b.com', ['*', '*.com', '*.b.com'], 2],
    ['a.b.com', ['*.b.com', 'a.b.com'], 1],
    ['a.b.com', ['*.c.com'], -1],
    ['a.b.com', ['*.b.com', '*.b.com'], 0],
  ]
  for (const [host, patterns, want] of cases) {
    it(`${host} in ${patterns}`, () => assert.equal(mostSpecificMatch(host, patterns), want))
  }
})

describe('shortNames', () => {
  const cases: [string, string, string[]][] = [
    ['reviews.default.svc.cluster.local', 'default', ['reviews', 'reviews.default.svc', 'reviews.default']],
    ['reviews.default.svc.cluster.local', 'prod', ['reviews.default', 'reviews.default.svc']],
    ['www.googleapis.com', 'default', []],
    ['a.b.c.svc.cluster.local', 'default', []],
  ]
  for (const [fqdn, ns, want] of cases) it(`${fqdn} from ${ns}`, () => assert.deepEqual(shortNames(fqdn, ns), want))
})

describe('isExportedTo and labelsMatch', () => {
  const cases: [string[] | undefined, string, boolean][] = [
    [undefined, 'other', true],
    [['*'], 'other', true],
    [['.'], 'own', true],
    [['.'], 'other', false],
    [['~'], 'own', false],
    [['other'], 'other', true],
  ]
  for (const [exportTo, from, want] of cases) {
    it(`exportTo ${exportTo} from ${from}`, () => assert.equal(isExportedTo('own', exportTo, from), want))
  }
  it('selectors are subsets', () => {
    assert.equal(labelsMatch({ app: 'a' }, { app: 'a', version: 'v1' }), true)
    assert.equal(labelsMatch({ app: 'a', version: 'v2' }, { app: 'a', version: 'v1' }), false)
    assert.equal(labelsMatch({}, {}), true)
  })
})
